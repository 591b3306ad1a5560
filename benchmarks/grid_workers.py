"""Team mode on ../shared/data/az_digits: one grid family with 1 and with 2 workers against PostgreSQL.

Starts a throw-away PostgreSQL and an ``mlflow server`` on it (tests/team_servers.py; needs
Debian's ``postgresql``, ``make postgres``), prepares az_digits as ``grid_az_digits.py`` does
(59 speakers, 5 training utterances each, the ``mfcc60`` table), then for each worker count
runs that many ``python stages/grid.py --family F`` processes at once on one study (a fresh
study per count: the dataset name differs) and reports the wall clock from launch to the
last exit, the study's trial counts, the trials each worker ran and the MLflow runs.

Usage:
    .venv/bin/python benchmarks/grid_workers.py [--family svc] [--n-trials 24] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _azdigits import DATA, REPO, add_work_dir, open_work_dir, prepare_and_featurise  # noqa: E402

FEATURE_SET = "mfcc60"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="svc")
    parser.add_argument("--n-trials", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    add_work_dir(parser, "grid_workers")
    args = parser.parse_args(argv)
    work = open_work_dir(args)
    if work is None:
        return 2
    import team_servers

    reason = team_servers.unavailable()
    if reason:
        print(f"grid_workers: {reason}", file=sys.stderr)
        return 2
    import optuna
    import yaml

    from voiceid.data.prepare import PrepareParams

    ws = prepare_and_featurise(
        work,
        PrepareParams(adapter="folder", source=str(DATA), min_utts=9, utts_per_speaker=20, train_per_speaker=5,
                      val_per_speaker=3, n_unknown=0, order="random", seed=42),
        (FEATURE_SET,),
    )
    print(f"az_digits: {ws.manifest['speaker'].nunique()} speakers, {ws.n_files} files "
          f"(prepare {ws.prepare_s:.1f} s, features {ws.features_s:.1f} s)")
    base = yaml.safe_load((REPO / "params.yaml").read_text())

    results = {}
    with team_servers.postgres() as pg:
        storage = pg.create_database("optuna")
        with team_servers.mlflow_server(pg.create_database("mlflow"), work / "server") as server:
            print(f"PostgreSQL on 127.0.0.1:{pg.port}; mlflow server {server.uri}")
            import mlflow

            client = mlflow.MlflowClient(tracking_uri=server.uri)
            for n in args.workers:
                dataset = f"az_digits_w{n}"
                grid = {**base["grid"], "dataset_name": dataset, "feature_sets": [FEATURE_SET], "families": [args.family],
                        "n_trials": args.n_trials, "timeout_s": None, "storage": storage}
                run_dir = work / f"workers{n}"
                run_dir.mkdir(exist_ok=True)
                (run_dir / "params.yaml").write_text(yaml.safe_dump({"grid": grid, "tracking": {"uri": server.uri}}))
                env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
                cmd = [sys.executable, str(REPO / "stages/grid.py"), "--family", args.family, "--features-dir",
                       str(work / "features"), "--manifest", str(work / "manifest.parquet")]
                start = time.perf_counter()
                procs = [subprocess.Popen([*cmd, "--metrics-dir", f"metrics/w{i}"], cwd=run_dir, env=env,
                                          stdout=(run_dir / f"w{i}.log").open("w"), stderr=subprocess.STDOUT)
                         for i in range(n)]
                codes = [p.wait() for p in procs]
                wall = time.perf_counter() - start
                if any(codes):
                    print((run_dir / "w0.log").read_text()[-3000:], file=sys.stderr)
                    return 1
                report = json.loads((run_dir / f"metrics/w0/{args.family}.json").read_text())
                entry = report[FEATURE_SET]
                study = optuna.load_study(study_name=client.get_run(entry["final_run_id"]).data.tags["study_name"],
                                          storage=storage)
                states = Counter(t.state.name for t in study.trials if "surplus" not in t.user_attrs)
                surplus = sum("surplus" in t.user_attrs for t in study.trials)
                exp = client.get_experiment_by_name(f"voiceid/{dataset}/{FEATURE_SET}")
                runs = client.search_runs([exp.experiment_id], max_results=5000)
                stages = Counter(r.data.tags.get("stage") for r in runs)
                per_worker = Counter(r.data.tags.get("worker", "?") for r in runs if r.data.tags.get("stage") == "trial")
                results[n] = wall
                print(f"{n} worker(s): {wall:.1f} s wall; study trials {dict(states)} (+{surplus} surplus); "
                      f"trials per worker {sorted(per_worker.values(), reverse=True)}; MLflow runs {dict(stages)}; "
                      f"val_{entry.get('objective', 'f1_weighted')} "
                      f"{next(v for k, v in entry.items() if k.startswith('val_')):.4f}, "
                      f"test f1_weighted {entry['test_f1_weighted']:.4f}", flush=True)
    if 1 in results and len(results) > 1:
        for n, wall in results.items():
            if n != 1:
                print(f"wall-clock ratio 1 worker / {n} workers: {results[1] / wall:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
