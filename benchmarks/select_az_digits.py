"""The whole chain on ../shared/data/az_digits: prepare, features, grid, ECAPA, selection.

59 speakers x 20 spoken digits: 40 speakers are enrolled (8 train, 4 val, 8 test
utterances each), 19 are unknown (10 utterances each; about half the unknown speakers fit
thresholds with val, the rest are test probes).  Everything runs on the library code of the
stages, into a work dir with its own MLflow sqlite store and Optuna storage (nothing is
written to the repo).  Studies and the feature cache resume there, so a rerun is quick.

Usage:
    .venv/bin/python benchmarks/select_az_digits.py [--n-trials 6] [--families svc mlp knn logreg]
                                                    [--ecapa-trials 1 | --no-ecapa] [--n-bootstrap 1000]

Prints per family: the calibration chosen, closed-set accuracy, DIR@FAR1% and EER of the
calibrated model on test with bootstrap 95% intervals, then the champion.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _azdigits import DATA, REPO, add_work_dir, open_work_dir, prepare_and_featurise, record_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=6, help="Optuna trials per classifier family")
    parser.add_argument("--feature-sets", nargs="*", default=["mfcc60"])
    parser.add_argument("--families", nargs="*", default=["svc", "mlp", "knn", "logreg"])
    parser.add_argument("--ecapa-trials", type=int, default=1)
    parser.add_argument("--no-ecapa", action="store_true")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    add_work_dir(parser, "select_az_digits")
    args = parser.parse_args(argv)
    work = open_work_dir(args)
    if work is None:
        return 2

    import optuna
    import torch

    from voiceid.config import load_section
    from voiceid.data.prepare import PrepareParams
    from voiceid.ecapa.data import split_logmel
    from voiceid.ecapa.params import EcapaParams
    from voiceid.ecapa.tune import run_ecapa
    from voiceid.features.tables import read_logmel
    from voiceid.grid.data import grid_data, read_table
    from voiceid.grid.params import GridParams
    from voiceid.grid.run import run_family
    from voiceid.select.candidates import FeatureBank
    from voiceid.select.params import SelectParams
    from voiceid.select.protocol import make_champion, select
    from voiceid.select.register import register_champion
    from voiceid.select.report import summary
    from voiceid.select.sources import find_sources, load_sources

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(2)
    t_all = time.perf_counter()

    # -- prepare (40 enrolled, 19 unknown speakers) and features --
    sets = tuple(dict.fromkeys([*args.feature_sets, "mfcc60", *(() if args.no_ecapa else ("logmel",))]))
    ws = prepare_and_featurise(
        work,
        PrepareParams(adapter="folder", source=str(DATA), min_utts=13, utts_per_speaker=20, train_per_speaker=8,
                      val_per_speaker=4, n_enrolled=40, n_unknown=19, unknown_utts_per_speaker=10,
                      unknown_val_fraction=0.5, order="random", seed=42),
        sets,
    )
    manifest, fparams, base_tags = ws.manifest, ws.fparams, ws.tags
    counts = manifest.groupby(["role", "split"]).size().to_dict()
    speakers = manifest.groupby("role")["speaker"].nunique().to_dict()
    print(f"prepare: speakers {speakers}, utterances {counts} ({ws.prepare_s:.1f} s)", flush=True)
    print(f"features: {ws.n_files} files, sets {sets}, {ws.n_computed} computed ({ws.features_s:.1f} s)", flush=True)

    # -- grid (classifier families) --
    grid = load_section(GridParams, "grid", REPO / "params.yaml")
    grid = dataclasses.replace(grid, dataset_name="az_digits", feature_sets=tuple(args.feature_sets),
                               families=tuple(args.families), n_trials=args.n_trials, timeout_s=300.0,
                               storage=f"sqlite:///{work}/optuna.db")
    for feature_set in args.feature_sets:
        meta, X, names = read_table(str(work / "features" / f"{feature_set}.parquet"))
        data = grid_data(meta, X, feature_set, names)
        for family in args.families:
            t0 = time.perf_counter()
            r = run_family(family, data, grid, base_tags)
            record_run(work, family, feature_set, r.summary())
            print(f"grid: {feature_set} {family:8s} val_{r.objective} {r.val_metrics[r.objective]:.4f} "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)

    # -- ECAPA --
    if not args.no_ecapa:
        ecapa = load_section(EcapaParams, "ecapa", REPO / "params.yaml")
        ecapa = dataclasses.replace(ecapa, dataset_name="az_digits",
                                    search=dataclasses.replace(ecapa.search, n_trials=args.ecapa_trials))
        t0 = time.perf_counter()
        meta, mats = read_logmel(work / "features" / "logmel.parquet")
        r = run_ecapa(split_logmel(meta, mats), ecapa, base_tags, work / "checkpoints")
        record_run(work, "ecapa", "logmel", r.summary())
        print(f"ecapa: val EER {r.val['eer']:.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)

    # -- selection --
    t0 = time.perf_counter()
    families = (*args.families, *(() if args.no_ecapa else ("ecapa",)), "cosine")
    params = dataclasses.replace(load_section(SelectParams, "select", REPO / "params.yaml"), families=families,
                                 n_bootstrap=args.n_bootstrap, registered_model="voiceid-az-digits")
    sources, skipped = find_sources(params, work / "models", families)
    bank = FeatureBank.from_dir(work / "features", [s.feature_set for s in sources])
    result = select(load_sources(sources), bank, params, fparams)
    report = summary(result, params, skipped)
    champion = make_champion(result, params, fparams)
    registry = register_champion(champion, params, report, base_tags)
    print(f"select: {time.perf_counter() - t0:.1f} s; skipped {report['skipped'] or 'none'}; probes {report['n_probes']}")

    def ci(d: dict[str, float]) -> str:
        return f"{d['value']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"

    print(f"\naz_digits, 40 enrolled / 19 unknown speakers; test with bootstrap 95% CI (n={args.n_bootstrap}); "
          f"thresholds ({params.threshold_rule}) fitted on val")
    print(f"{'family':8s} {'features':8s} {'calibration':11s} {'closed-set acc':22s} {'DIR@FAR1%':22s} {'EER':22s} "
          f"{'FAR':22s} {'FRR':22s}")
    for c in result.candidates:
        t = result.test_reports[c.family]
        print(f"{c.family:8s} {c.source.feature_set:8s} {c.calibration['method']:11s} {ci(t['accuracy']):22s} "
              f"{ci(t['dir_far_1']):22s} {ci(t['eer']):22s} {ci(t['far']):22s} {ci(t['frr']):22s}")
    t = result.test_reports[champion.family]
    print(f"champion: {champion.family} (best val {params.champion_metric}), {params.threshold_rule} threshold "
          f"{champion.threshold:.4f}: closed-set acc {ci(t['accuracy'])}, DIR@FAR1% {ci(t['dir_far_1'])}, "
          f"EER {ci(t['eer'])}; embedding model for new speakers: "
          f"{result.embedding.family if result.embedding else 'none'}")
    print(f"registered {registry['registered_uri']} v{registry['version']} in sqlite:///{work}/mlflow.db; "
          f"total {time.perf_counter() - t_all:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
