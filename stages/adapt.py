"""DVC stage ``adapt``: the pretrained d-vector encoder fine-tuned on this dataset's training speakers.

Outputs (exactly those in dvc.yaml): data/features/dvector_ft.parquet (the accepted clips of
the features stage, embedded by the adapted encoder: metadata + 256 float32 columns),
data/features/dvector_ft.pt (its weights: selection puts them into the champion) and
metrics/adapt.json (clips, speakers, losses, val pair EER of the pretrained vs the adapted
encoder: a report, nothing is fitted on val).  The same report, the ``adapt`` params and the
loss per step go to MLflow as a run tagged ``stage=adapt`` in ``voiceid/<grid.dataset_name>/dvector_ft``
(``tracking.uri``; $MLFLOW_TRACKING_URI wins).
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

    import pandas as pd

    from voiceid import tracking
    from voiceid.adapt.params import SET_NAME, AdaptParams
    from voiceid.adapt.run import accepted, adapt, write_adapted
    from voiceid.config import ConfigError, as_dict, load_section, read_key
    from voiceid.data.audio import AudioError
    from voiceid.features.dvector import DvectorUnavailable
    from voiceid.features.params import FeatureParams
    from voiceid.features.tables import META_COLUMNS

    features_dir = Path(args.features_dir)
    try:
        params = load_section(AdaptParams, "adapt", args.params)
        fparams = load_section(FeatureParams, "features", args.params)
        dataset = read_key("grid.dataset_name", str, args.params)  # the MLflow experiment family of this data
        tracking_params = load_section(tracking.TrackingParams, "tracking", args.params)
        tags = {"git_commit": tracking.git_commit(), "data_hash": tracking.data_hash(args.manifest)}
        rows = accepted(pd.read_parquet(args.manifest), pd.read_csv(features_dir / "rejects.csv"))
        result = adapt(rows[list(META_COLUMNS)], rows["path"].astype(str).tolist(), params, fparams.dvector, fparams.sample_rate)
    except (ConfigError, OSError, DvectorUnavailable, AudioError, ValueError) as exc:
        print(f"adapt: {exc}", file=sys.stderr)
        return 2

    report = write_adapted(features_dir, rows, result)
    tracking.configure(tracking_params.uri)
    run_id = tracking.log_final_run(
        tracking.experiment_name(dataset, SET_NAME),
        "adapt",
        params=as_dict(params),
        metrics={k: v for k, v in report.items() if isinstance(v, (int, float))},
        tags={**tags, "feature_set": SET_NAME, "seed": params.seed},
        json_artifacts={"adapt.json": report},
        series={"train_loss": result.tuned.losses},
        stage="adapt",
    )
    Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(args.metrics).write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"adapt: fine-tuned on {report['train_clips']} train clips of {report['train_speakers']} speakers, {report['steps']} steps in "
        f"{report['train_seconds']} s (loss {report['loss_first']} -> {report['loss_last10']}); {len(rows)} clips embedded "
        f"in {report['embed_seconds']} s; val pair EER pretrained {report['val_pair_eer_pretrained']} -> adapted "
        f"{report['val_pair_eer_adapted']}; MLflow run {run_id}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
