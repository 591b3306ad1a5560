"""DVC stage ``adapt``: the pretrained d-vector encoder fine-tuned on this dataset's training speakers.

Outputs (exactly those in dvc.yaml): data/features/dvector_ft.parquet (the accepted clips of
the features stage, embedded by the adapted encoder: metadata + 256 float32 columns),
data/features/dvector_ft.pt (its weights: selection puts them into the champion) and
metrics/adapt.json (clips, speakers, losses, val pair EER of the pretrained vs the adapted
encoder: a report, nothing is fitted on val).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--manifest", default="data/prepared/manifest.parquet")
    parser.add_argument("--features-dir", default="data/features")
    parser.add_argument("--metrics", default="metrics/adapt.json")
    args = parser.parse_args(argv)

    import numpy as np
    import pandas as pd

    from voiceid.adapt.params import AdaptParams
    from voiceid.adapt.run import accepted, adapt, val_pair_eer
    from voiceid.atomic import atomic_write
    from voiceid.config import ConfigError, load_section
    from voiceid.data.audio import AudioError
    from voiceid.features.dvector import DvectorUnavailable, feature_names
    from voiceid.features.params import FeatureParams
    from voiceid.features.tables import META_COLUMNS, read_feature_table, write_feature_table

    features_dir = Path(args.features_dir)
    try:
        params = load_section(AdaptParams, "adapt", args.params)
        fparams = load_section(FeatureParams, "features", args.params)
        rows = accepted(pd.read_parquet(args.manifest), pd.read_csv(features_dir / "rejects.csv"))
        result = adapt(rows[list(META_COLUMNS)], rows["path"].astype(str).tolist(), params, fparams.dvector, fparams.sample_rate)
    except (ConfigError, OSError, DvectorUnavailable, AudioError, ValueError) as exc:
        print(f"adapt: {exc}", file=sys.stderr)
        return 2

    write_feature_table(features_dir / "dvector_ft.parquet", rows, result.X, feature_names())
    atomic_write(features_dir / "dvector_ft.pt", lambda f: f.write(result.tuned.state))
    tuned, pretrained = result.tuned, features_dir / "dvector.parquet"
    base_eer = None
    if pretrained.is_file():
        base_meta, base_X = read_feature_table(pretrained)  # read once: the table is ~1 MB per 1000 clips
        base_eer = val_pair_eer(base_X, base_meta)
    report = {
        "train_clips": tuned.n_clips,
        "train_speakers": tuned.n_speakers,
        "steps": len(tuned.losses),
        "loss_first": round(tuned.losses[0], 4) if tuned.losses else None,
        "loss_last10": round(float(np.mean(tuned.losses[-10:])), 4) if tuned.losses else None,
        "train_seconds": round(tuned.seconds, 1),
        "embed_seconds": round(result.embed_seconds, 1),
        "val_pair_eer_adapted": round(val_pair_eer(result.X, rows), 4),
        "val_pair_eer_pretrained": round(base_eer, 4) if base_eer is not None else None,
    }
    Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(args.metrics).write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"adapt: fine-tuned on {tuned.n_clips} train clips of {tuned.n_speakers} speakers, {report['steps']} steps in "
        f"{report['train_seconds']} s (loss {report['loss_first']} -> {report['loss_last10']}); {len(rows)} clips embedded "
        f"in {report['embed_seconds']} s; val pair EER pretrained {report['val_pair_eer_pretrained']} -> adapted "
        f"{report['val_pair_eer_adapted']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
