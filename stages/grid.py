"""DVC stage ``grid@<family>``: tune one model family on every feature set, log to MLflow.

Reads data/features/<set>.parquet for each set in ``grid.feature_sets`` and the prepared
manifest (for the ``data_hash`` tag); writes metrics/models/<family>.json (per feature set: the
validation objective, test metrics and run ids of the final run). Studies live in
``grid.storage`` and resume there; runs go to ``tracking.uri`` ($MLFLOW_TRACKING_URI wins).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, help="model family, e.g. svc, kmeans, catboost")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--features-dir", default="data/features")
    parser.add_argument("--manifest", default="data/prepared/manifest.parquet")
    parser.add_argument("--metrics-dir", default="metrics/models")
    args = parser.parse_args(argv)

    import optuna

    from voiceid import tracking
    from voiceid.config import ConfigError, load_section
    from voiceid.grid.data import grid_data, read_table
    from voiceid.grid.params import GridParams, family_kind
    from voiceid.grid.run import run_family
    from voiceid.pipeline import check_params
    from voiceid.study import StudyError

    try:
        check_params(args.params, "grid")  # rules tying "grid" to the other sections
        params = load_section(GridParams, "grid", args.params)
        tracking_params = load_section(tracking.TrackingParams, "tracking", args.params)
        family_kind(args.family)
        base_tags = {"git_commit": tracking.git_commit(), "data_hash": tracking.data_hash(args.manifest)}
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"grid: {exc}", file=sys.stderr)
        return 2
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    uri = tracking.configure(tracking_params.uri)

    report: dict[str, dict] = {}
    for feature_set in params.feature_sets:
        path = Path(args.features_dir) / f"{feature_set}.parquet"
        start = time.perf_counter()
        try:
            meta, X, names = read_table(str(path))
            data = grid_data(meta, X, feature_set, names)
            result = run_family(args.family, data, params, base_tags)
        except StudyError as exc:  # GridError included
            print(f"grid: {exc}", file=sys.stderr)
            return 1
        report[feature_set] = result.summary()
        print(
            f"grid: {args.family} on {feature_set}: val_{result.objective} "
            f"{result.val_metrics[result.objective]:.4f}, test f1_weighted {result.test_metrics['f1_weighted']:.4f} "
            f"({result.counts}, {time.perf_counter() - start:.1f} s)"
        )

    out = Path(args.metrics_dir) / f"{args.family}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"grid: wrote {out}; runs in {uri}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
