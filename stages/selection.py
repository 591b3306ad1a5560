"""DVC stage ``select``: calibrate and threshold each family's best model on val, report once on test.

(The file is not called select.py: run as ``python stages/select.py`` it would shadow the
stdlib ``select`` module for every script in stages/.)

Reads the final runs this pipeline's grid/ECAPA stages trained (their run ids from
metrics/models/<family>.json, so dvc.lock pins them; the runs themselves from MLflow at
``tracking.uri``), the feature tables in data/features and the prepared manifest.
Writes metrics/selection.json (test figures with intervals), reports/selection.json (also the
calibrations, val figures and per-rule FAR/FRR) and plots/select/{det,roc,scores,confusion}.csv,
and registers the champion as pyfunc model ``select.registered_model`` with alias ``champion``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--features-dir", default="data/features")
    parser.add_argument("--manifest", default="data/prepared/manifest.parquet")
    parser.add_argument("--runs-dir", default="metrics/models", help="<family>.json run ids of the grid/ECAPA stages")
    parser.add_argument("--metrics", default="metrics/selection.json")
    parser.add_argument("--report", default="reports/selection.json")
    parser.add_argument("--plots-dir", default="plots/select")
    args = parser.parse_args(argv)

    from voiceid import tracking
    from voiceid.config import ConfigError, load_section, read_params
    from voiceid.features.params import FeatureParams
    from voiceid.pipeline import check_params
    from voiceid.select.candidates import FeatureBank
    from voiceid.select.params import SelectParams
    from voiceid.select.protocol import make_champion, select
    from voiceid.select.register import register_champion
    from voiceid.select.report import few_strangers_warning, for_json, metrics_view, plot_tables, summary
    from voiceid.select.sources import find_sources, load_sources

    start = time.perf_counter()
    try:
        check_params(args.params, "select")  # rules tying "select" to the other sections
        params = load_section(SelectParams, "select", args.params)
        features = load_section(FeatureParams, "features", args.params)
        # the families this pipeline trains (the grid stage checks the grid section strictly)
        trained = (*(read_params(args.params).get("grid") or {}).get("families", ()), "ecapa")
        tracking_params = load_section(tracking.TrackingParams, "tracking", args.params)
        data_hash = tracking.data_hash(args.manifest)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"select: {exc}", file=sys.stderr)
        return 2
    uri = tracking.configure(tracking_params.uri)
    try:
        sources, skipped = find_sources(params, args.runs_dir, trained)
    except LookupError as exc:
        print(f"select: {exc}", file=sys.stderr)
        return 1
    for family, reason in skipped.items():
        print(f"select: skipping {family}: {reason}", file=sys.stderr)
    try:
        bank = FeatureBank.from_dir(args.features_dir, [s.feature_set for s in sources])
        result = select(load_sources(sources), bank, params, features)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"select: {exc}", file=sys.stderr)
        return 1

    for family, reason in result.skipped.items():
        print(f"select: skipping {family}: {reason}", file=sys.stderr)
    report = summary(result, params, skipped)
    warning = few_strangers_warning(params.threshold_rule, report["champion"])
    if warning:
        print(f"select: warning: {warning}", file=sys.stderr)
    champion = make_champion(result, params, features)
    registry = register_champion(champion, params, report, {"data_hash": data_hash, "git_commit": tracking.git_commit()})
    report["champion"].update(
        {"registered_model": params.registered_model, "version": registry["version"], "run_id": registry["run_id"]}
    )

    for path, content in ((args.metrics, metrics_view(report)), (args.report, for_json(report))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(content, indent=2) + "\n")
    plots = Path(args.plots_dir)
    plots.mkdir(parents=True, exist_ok=True)
    for name, table in plot_tables(result, params).items():
        table.to_csv(plots / name, index=False)

    test = report["champion"]["test"]
    metric = result.champion_metric
    print(f"select: champion metric {result.champion_metric_reason}")
    for c in result.candidates:
        t = result.test_reports[c.family]
        print(
            f"select: {c.family:10s} val {metric} {c.val_report[metric]:.3f} | test acc "
            f"{t['accuracy']['value']:.3f} DIR@FAR1% {t['dir_far_1']['value']:.3f} EER {t['eer']['value']:.3f}"
        )
    store = report["embedding_model"]
    if store:  # what `voiceid enroll` embeds with, and why that back-end (voiceid.select.later)
        print(f"select: enrollment store: {store['family']} through {store['backend']} ({store['chosen_by']})")
    print(
        f"select: champion {champion.family} ({params.threshold_rule} threshold {champion.threshold:.4f}): test FAR "
        f"{test['far']['value']:.3f} FRR {test['frr']['value']:.3f}; registered {registry['registered_uri']} "
        f"v{registry['version']} in {uri} ({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
