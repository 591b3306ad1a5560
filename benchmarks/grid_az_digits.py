"""Experiment grid on ../shared/data/az_digits: every family on mfcc60 and seed498.

59 speakers x 20 spoken digits. The split mirrors the prepare stage: every speaker is
enrolled (no unknowns), 5 training utterances per speaker, 3 validation, the rest (12)
test. Features come from the features stage's library code. Each family is tuned with
``--n-trials`` trials (seeded TPE on the val rows), refitted on train and scored once on
test, everything logged to a throw-away MLflow store in the work dir. The seed work's
recipe, StandardScaler + SVC(C=5, rbf), is run on the same split as the reference.

Usage:
    .venv/bin/python benchmarks/grid_az_digits.py [--n-trials 10] [--families svc knn ...]

Prints per (feature set, family): val objective, test f1_weighted, trial counts and
wall time, then a table of test f1_weighted. Studies resume from the work dir's
optuna.db, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _azdigits import DATA, REPO, add_work_dir, open_work_dir, prepare_and_featurise

FEATURE_SETS = ("mfcc60", "seed498")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=10)
    parser.add_argument("--timeout-s", type=float, default=240.0, help="per study")
    parser.add_argument("--families", nargs="*", default=None, help="default: grid.families of params.yaml")
    add_work_dir(parser, "grid_az_digits")
    parser.add_argument("--no-models", action="store_true", help="skip logging models (faster)")
    args = parser.parse_args(argv)
    work = open_work_dir(args)
    if work is None:
        return 2

    import numpy as np
    import optuna
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from voiceid.config import load_section
    from voiceid.data.prepare import PrepareParams
    from voiceid.grid.data import grid_data, read_table
    from voiceid.grid.params import GridParams
    from voiceid.grid.run import run_family

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid = load_section(GridParams, "grid", REPO / "params.yaml")
    families = tuple(args.families or grid.families)
    grid = dataclasses.replace(
        grid, dataset_name="az_digits", feature_sets=FEATURE_SETS, families=families, n_trials=args.n_trials,
        timeout_s=args.timeout_s, storage=f"sqlite:///{work}/optuna.db",
    )

    ws = prepare_and_featurise(
        work,
        PrepareParams(adapter="folder", source=str(DATA), min_utts=9, utts_per_speaker=20, train_per_speaker=5,
                      val_per_speaker=3, n_unknown=0, order="random", seed=42),
        FEATURE_SETS,
    )
    manifest = ws.manifest
    counts = manifest.groupby("split").size().to_dict()
    print(f"prepare: {manifest['speaker'].nunique()} speakers, splits {counts}, "
          f"{ws.n_rejected} rejected ({ws.prepare_s:.1f} s)")
    print(f"features: {ws.n_files} files, {ws.n_computed} computed ({ws.features_s:.1f} s)")

    base_tags = ws.tags
    table: dict[str, dict[str, float]] = {}
    for feature_set in FEATURE_SETS:
        meta, X, names = read_table(str(work / "features" / f"{feature_set}.parquet"))
        data = grid_data(meta, X, feature_set, names)
        # the seed recipe, on exactly the same rows
        t0 = time.perf_counter()
        seed_model = make_pipeline(StandardScaler(), SVC(C=5, kernel="rbf")).fit(data.train.X, data.train.y)
        seed_f1 = f1_score(data.test.y, seed_model.predict(data.test.X), average="weighted")
        table.setdefault("seed recipe SVC(C=5, rbf)", {})[feature_set] = seed_f1
        print(f"{feature_set:8s} seed-recipe    test f1_weighted {seed_f1:.4f} ({time.perf_counter() - t0:.2f} s)")
        for family in families:
            t0 = time.perf_counter()
            result = run_family(family, data, grid, base_tags, log_model=not args.no_models)
            table.setdefault(family, {})[feature_set] = result.test_metrics["f1_weighted"]
            extra = f" ari {result.test_metrics['ari']:.4f}" if "ari" in result.test_metrics else (
                f" top5 {result.test_metrics['top5_accuracy']:.4f}")
            print(f"{feature_set:8s} {family:14s} val_{result.objective} {result.val_metrics[result.objective]:.4f}"
                  f"  test f1_weighted {result.test_metrics['f1_weighted']:.4f}{extra}"
                  f"  trials {result.counts}  {time.perf_counter() - t0:.1f} s", flush=True)

    print("\ntest f1_weighted (az_digits, 59 speakers, 5 train utts/speaker; clustering: Hungarian-matched)")
    print(f"{'family':28s}" + "".join(f"{fs:>10s}" for fs in FEATURE_SETS))
    for family, row in table.items():
        print(f"{family:28s}" + "".join(f"{row.get(fs, np.nan):10.4f}" for fs in FEATURE_SETS))
    print(f"MLflow store: sqlite:///{work}/mlflow.db (mlflow ui --backend-store-uri ...)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
