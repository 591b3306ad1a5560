"""DVC stage ``ecapa``: train the ECAPA-TDNN embedder with Optuna, evaluate, log to MLflow.

Reads data/features/logmel.parquet and the prepared manifest (for the ``data_hash`` tag);
writes metrics/models/ecapa.json (val EER; test EER, minDCF, accuracy, F1; run ids) and keeps one
resumable checkpoint per trial under checkpoints/ecapa/ (a DVC ``persist`` out, so a killed
``dvc repro`` continues where it stopped).  Runs go to ``tracking.uri`` ($MLFLOW_TRACKING_URI
wins): experiment voiceid/<dataset>/logmel, final run tagged family=ecapa.

Across processes: ``torchrun --nproc_per_node N stages/ecapa.py`` trains every trial with
DistributedDataParallel (gloo on CPU, NCCL on GPUs); rank 0 alone writes checkpoints, MLflow
runs and the metrics file (voiceid/ecapa/distributed.py).
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
    parser.add_argument("--logmel", default="data/features/logmel.parquet")
    parser.add_argument("--manifest", default="data/prepared/manifest.parquet")
    parser.add_argument("--checkpoints", default="checkpoints/ecapa")
    parser.add_argument("--metrics", default="metrics/models/ecapa.json")
    args = parser.parse_args(argv)

    import optuna
    import torch

    from voiceid import tracking
    from voiceid.config import ConfigError, load_section
    from voiceid.ecapa import distributed
    from voiceid.ecapa.data import split_logmel
    from voiceid.ecapa.params import EcapaError, EcapaParams
    from voiceid.ecapa.tune import run_ecapa
    from voiceid.features.tables import read_logmel
    from voiceid.pipeline import check_params

    start = time.perf_counter()
    try:
        check_params(args.params, "ecapa")  # rules tying "ecapa" to the other sections
        params = load_section(EcapaParams, "ecapa", args.params)
        tracking_params = load_section(tracking.TrackingParams, "tracking", args.params)
        base_tags = {"git_commit": tracking.git_commit(), "data_hash": tracking.data_hash(args.manifest)}
        meta, mats = read_logmel(args.logmel)
        data = split_logmel(meta, mats, source=args.logmel)
    except (ConfigError, EcapaError, ValueError, OSError) as exc:
        print(f"ecapa: {exc}", file=sys.stderr)
        return 2
    ctx = distributed.init_from_env(params.device)  # under torchrun: join the process group (no-op otherwise)
    if params.threads > 0:
        torch.set_num_threads(max(1, params.threads // ctx.local_world))  # the machine's threads, shared by its ranks
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    uri = tracking.configure(tracking_params.uri)

    try:
        result = run_ecapa(data, params, base_tags, args.checkpoints)
    except EcapaError as exc:
        print(f"ecapa: {exc}", file=sys.stderr)
        return 1
    finally:
        distributed.shutdown()
    if result is None:  # a rank other than 0: rank 0 logs and writes the metrics
        return 0
    summary = {**result.summary(), "stage_seconds": round(time.perf_counter() - start, 1)}
    out = Path(args.metrics)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(
        f"ecapa: {result.n_parameters / 1e6:.2f} M params, best trial {result.best_trial} {result.best_params}; "
        f"val EER {result.val['eer']:.3f}; test EER {result.test['eer']:.3f}, minDCF {result.test['min_dcf']:.3f}, "
        f"accuracy {result.test.get('accuracy', float('nan')):.3f} ({summary['stage_seconds']} s); runs in {uri}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
