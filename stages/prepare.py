"""DVC stage ``prepare``: source audio -> validated, de-duplicated, speaker-disjoint manifest.

Outputs (exactly those in dvc.yaml): data/prepared/manifest.parquet,
data/prepared/rejects.csv, metrics/data.json, plots/prepare/utts_per_speaker.csv and
plots/prepare/utts_per_speaker.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out-dir", default="data/prepared")
    parser.add_argument("--metrics", default="metrics/data.json")
    parser.add_argument("--plots-dir", default="plots/prepare")
    args = parser.parse_args(argv)

    from voiceid.config import ConfigError, load_section
    from voiceid.data.adapters import DatasetError
    from voiceid.data.prepare import (
        PrepareParams,
        data_report,
        prepare,
        utts_per_speaker,
    )
    from voiceid.pipeline import check_params
    from voiceid.viz.bars import bar_plot

    try:
        check_params(args.params, "prepare")  # rules tying "prepare" to the other sections
        params = load_section(PrepareParams, "prepare", args.params)
        prep = prepare(params)
    except (ConfigError, DatasetError) as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 2

    out_dir, plots_dir = Path(args.out_dir), Path(args.plots_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots_dir.mkdir(parents=True, exist_ok=True)
    Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)

    prep.manifest.to_parquet(out_dir / "manifest.parquet", index=False)
    prep.rejects.to_csv(out_dir / "rejects.csv", index=False)
    report = data_report(prep)
    Path(args.metrics).write_text(json.dumps(report, indent=2) + "\n")
    table = utts_per_speaker(prep.manifest)
    table.to_csv(plots_dir / "utts_per_speaker.csv", index=False)
    bar_plot(
        table, x="speaker", y="utterances", hue="role", title="Utterances per speaker", path=plots_dir / "utts_per_speaker.png"
    )

    for row in prep.rejects.itertuples():
        print(f"rejected {row.path}: {row.reason}: {row.detail}", file=sys.stderr)
    print(f"prepare: kept {report['kept']} utterances, speakers {report['speakers']}, rejected {report['rejected']}")
    if report["speakers"]["enrolled"] == 0:
        print("prepare: no enrollable speaker; check prepare.min_utts against the data", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
