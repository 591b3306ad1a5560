"""ECAPA training with 1 process and with N processes (torchrun, DDP over gloo on CPU) on the same az_digits data.

Prepares the ``logmel`` table of ``../shared/data/az_digits`` (the enrolled ``train`` rows of 59
speakers, as ``grid_az_digits.py`` splits them), then trains the same ECAPA configuration twice
with the training loop of the ``ecapa`` stage (:func:`voiceid.ecapa.train.train_embedder`):
once in this process, once under ``torchrun --standalone --nproc_per_node N``, where each step's
batch is split by rank and DistributedDataParallel averages the gradients. Prints the loss of
every step side by side, and each run's wall time.

Every rank draws the same whole batch, so the two runs see identical data, crops and
augmentation, and start from identical weights: their losses differ only through batch norm,
whose statistics on CPU are per rank (PyTorch's SyncBatchNorm is GPU-only; on CUDA it is used),
and floating-point order. ``--bn-eval`` holds batch norm on its running statistics in both runs,
which leaves only the rounding: a check that the sharding and gradient weighting are exact.

Usage:
    .venv/bin/python benchmarks/ecapa_ddp.py [--nproc 2] [--epochs 2] [--steps 10] [--bn-eval]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _azdigits import DATA, REPO, add_work_dir, open_work_dir, prepare_and_featurise  # noqa: E402


def _configs(args: argparse.Namespace, n_mels: int):
    from voiceid.ecapa.model import EcapaConfig
    from voiceid.ecapa.train import TrainConfig

    model = EcapaConfig(n_mels=n_mels, channels=args.channels, se_channels=16, attention_channels=32, embedding_dim=64)
    train = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch_size, crop_frames=100,
                        lr=0.002, margin_warmup=0.5, patience=args.epochs, seed=42)
    return model, train


def train(args: argparse.Namespace) -> int:
    """One training run (this process, or one torchrun rank); rank 0 writes ``args.out``."""
    import numpy as np
    import torch

    from voiceid.ecapa import distributed
    from voiceid.ecapa.train import train_embedder

    ctx = distributed.init_from_env("cpu")
    if args.bn_eval:  # batch norm on its running statistics: the only per-rank difference gone
        from torch import nn

        nn.BatchNorm1d.train = lambda self, mode=True: nn.Module.train(self, False)  # type: ignore[method-assign]
    torch.set_num_threads(max(1, args.threads // ctx.local_world))
    blob = np.load(args.data, allow_pickle=False)
    feats = [blob[f"f{i}"] for i in range(int(blob["n"]))]
    labels = blob["labels"].tolist()
    model_cfg, train_cfg = _configs(args, feats[0].shape[1])
    start = time.perf_counter()
    result = train_embedder(feats, labels, model_cfg, train_cfg, device=torch.device("cpu"))
    seconds = time.perf_counter() - start
    if ctx.is_main:
        Path(args.out).write_text(json.dumps({"world": ctx.world, "seconds": seconds, "step_losses": result.step_losses,
                                              "history": result.history}))
    distributed.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per machine, shared by its ranks")
    parser.add_argument("--bn-eval", action="store_true",
                        help="keep batch norm in eval mode in both runs (a check: the losses must then agree to rounding)")
    parser.add_argument("--train", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    add_work_dir(parser, "ecapa_ddp")
    args = parser.parse_args(argv)
    if args.train:
        return train(args)
    work = open_work_dir(args)
    if work is None:
        return 2
    import numpy as np

    from voiceid.data.prepare import PrepareParams
    from voiceid.features.tables import read_logmel

    ws = prepare_and_featurise(
        work,
        PrepareParams(adapter="folder", source=str(DATA), min_utts=9, utts_per_speaker=20, train_per_speaker=5,
                      val_per_speaker=3, n_unknown=0, order="random", seed=42),
        ("logmel",),
    )
    meta, mats = read_logmel(work / "features" / "logmel.parquet")
    rows = np.flatnonzero(((meta["split"] == "train") & (meta["role"] == "enrolled")).to_numpy())
    speakers = sorted(set(meta["speaker"].iloc[rows]))
    data = work / "ddp_data.npz"
    np.savez(data, n=len(rows), labels=np.array([speakers.index(s) for s in meta["speaker"].iloc[rows]]),
             **{f"f{k}": mats[i] for k, i in enumerate(rows)})
    print(f"az_digits logmel: {len(rows)} training utterances of {len(speakers)} speakers ({ws.features_s:.1f} s)")

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    common = ["--train", "--data", str(data), "--epochs", str(args.epochs), "--steps", str(args.steps),
              "--batch-size", str(args.batch_size), "--channels", str(args.channels), "--threads", str(args.threads),
              *(["--bn-eval"] if args.bn_eval else [])]
    runs = {}
    for n in (1, args.nproc):
        out = work / f"ddp_{n}.json"
        launcher = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc_per_node", str(n)]
        start = time.perf_counter()
        subprocess.run([*launcher, __file__, *common, "--out", str(out)], check=True, env=env, cwd=work)
        runs[n] = json.loads(out.read_text())
        print(f"{n} process(es): {runs[n]['seconds']:.1f} s training ({time.perf_counter() - start:.1f} s with start-up)")

    one, many = runs[1]["step_losses"], runs[args.nproc]["step_losses"]
    bn = "batch norm in eval mode" if args.bn_eval else "batch norm in training mode (per-rank statistics in DDP)"
    print(f"\nloss per step (C={args.channels}, batch {args.batch_size}, {args.epochs} x {args.steps} steps; {bn})")
    print(f"{'step':>5s} {'1 process':>10s} {f'{args.nproc} processes':>12s} {'diff':>8s}")
    for step, (a, b) in enumerate(zip(one, many)):
        print(f"{step:5d} {a:10.4f} {b:12.4f} {b - a:+8.4f}")
    diffs = np.abs(np.subtract(one, many))
    print(f"max |diff| {diffs.max():.2e}, mean |diff| {diffs.mean():.2e}; "
          f"final epoch loss {runs[1]['history'][-1]['loss']:.4f} vs {runs[args.nproc]['history'][-1]['loss']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
