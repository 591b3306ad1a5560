"""Time the seed feature recipe against voiceid's seed498 (and mfcc60) on the same real files.

    .venv/bin/python benchmarks/features_vs_seed.py            # 60 LibriSpeech + 60 az_digits files, 2 workers

The seed recipe runs file after file in this process, as the seed work did; voiceid runs
its real extraction path (decode, hash check, resample, shared STFT, joblib workers, no
cache).  Both are warmed up first (imports, numba JIT, worker start-up; a stage run pays
that once, ~2-5 s), both use one BLAS thread per process, the repeats of all variants are
interleaved and each figure is the best of ``--repeats``: steady-state throughput.  The
last line is ``speedup_vs_seed=<x>``: seed wall time / voiceid seed498 wall time with
``--n-jobs`` workers.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

from voiceid.data.audio import content_hash, load_audio
from voiceid.features.extract import extract_features
from voiceid.features.params import SET_NAMES, FeatureParams
from voiceid.features.seed_recipe import seed_features

REPO = Path(__file__).resolve().parents[1]


def pick_files(root: Path, n: int) -> list[Path]:
    """``n`` files spread evenly over the sorted listing: a fixed, speaker-diverse subset."""
    files = sorted(root.glob("*/*.wav"))
    if not files:
        raise SystemExit(f"{root}: no */*.wav files (is ../shared/data present?)")
    n = min(n, len(files))
    return [files[k * len(files) // n] for k in range(n)]


def bench_manifest(files: list[Path]) -> pd.DataFrame:
    rows = []
    for i, f in enumerate(files):
        clip = load_audio(f)
        rows.append(dict(utt_id=f"b{i:04d}", path=str(f), speaker=f.parent.name, role="enrolled",
                         split="train", content_hash=content_hash(clip.wave), duration=clip.duration))
    return pd.DataFrame(rows)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time stays meaningful on a busy machine."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--librispeech", type=Path, default=REPO.parent / "shared/data/librispeech_excerpts")
    ap.add_argument("--az-digits", type=Path, default=REPO.parent / "shared/data/az_digits")
    ap.add_argument("--n-librispeech", type=int, default=60)
    ap.add_argument("--n-az", type=int, default=60)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cqt", action="store_true", help="also time seed498 with tonnetz_chroma=cqt (exact parity)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # librosa's short-signal warnings on 1 s digits

    files = pick_files(args.librispeech, args.n_librispeech) + pick_files(args.az_digits, args.n_az)
    manifest = bench_manifest(files)
    audio_s = float(manifest["duration"].sum())
    n = len(files)
    print(f"files={n} (librispeech {args.n_librispeech}, az_digits {args.n_az}) audio={audio_s:.1f}s "
          f"n_jobs={args.n_jobs} repeats={args.repeats} (best of)")

    def report(label: str, seconds: float, cpu: float) -> None:
        # CPU time is only this process's: meaningful for in-process runs (seed, n_jobs=1)
        cpu_note = f"  cpu {audio_s / cpu:6.0f}x real time/core" if "n_jobs=1" in label or label.startswith("seed") else ""
        print(f"{label:<34} {seconds:8.3f} s  {1000 * seconds / n:8.2f} ms/file  {audio_s / seconds:7.0f}x real time{cpu_note}")

    def voiceid_run(sets: tuple[str, ...], n_jobs: int, **extra: object) -> Callable[[], object]:
        params = replace(FeatureParams(), sets=sets, **extra)
        return lambda: extract_features(manifest, params, None, n_jobs=n_jobs, progress=False)

    def seed_run() -> None:
        # One BLAS thread, as voiceid uses per file: a second thread only spins on a shared
        # machine, and letting it slow the seed down would flatter the speedup.
        with threadpool_limits(limits=1, user_api="blas"):
            for f in files:
                seed_features(f)

    j = args.n_jobs
    variants: dict[str, Callable[[], object]] = {
        "seed recipe (1 process)": seed_run,
        f"voiceid seed498 (n_jobs={j})": voiceid_run(("seed498",), j),
        "voiceid seed498 (n_jobs=1)": voiceid_run(("seed498",), 1),
        f"voiceid mfcc60 (n_jobs={j})": voiceid_run(("mfcc60",), j),
        "voiceid mfcc60 (n_jobs=1)": voiceid_run(("mfcc60",), 1),
        f"voiceid all 4 sets (n_jobs={j})": voiceid_run(SET_NAMES, j),
    }
    if args.cqt:
        variants[f"voiceid seed498 cqt (n_jobs={j})"] = voiceid_run(("seed498",), j, tonnetz_chroma="cqt")
    # warm-up: imports, numba JIT, worker processes; then interleave the repeats so a
    # change in machine load hits every variant alike
    seed_features(files[0])
    for n_jobs in {1, j}:
        extract_features(manifest.head(4 * n_jobs), FeatureParams(), None, n_jobs=n_jobs, progress=False)
    best = {label: (float("inf"), float("inf")) for label in variants}
    for _ in range(args.repeats):
        for label, run in variants.items():
            wall, cpu = timed(run)
            best[label] = (min(best[label][0], wall), min(best[label][1], cpu))
    for label, (wall, cpu) in best.items():
        report(label, wall, cpu)

    wall = {label: w for label, (w, _) in best.items()}
    seed_s, ours = wall["seed recipe (1 process)"], wall[f"voiceid seed498 (n_jobs={j})"]
    if args.cqt:
        print(f"speedup_exact_parity_cqt={seed_s / wall[f'voiceid seed498 cqt (n_jobs={j})']:.2f}")
    print(f"speedup_single_core={seed_s / wall['voiceid seed498 (n_jobs=1)']:.2f}")
    print(f"speedup_cpu_time={best['seed recipe (1 process)'][1] / best['voiceid seed498 (n_jobs=1)'][1]:.2f}")
    print(f"mfcc60_x_real_time_cpu_per_core={audio_s / best['voiceid mfcc60 (n_jobs=1)'][1]:.0f}")
    print(f"mfcc60_x_real_time={audio_s / wall[f'voiceid mfcc60 (n_jobs={j})']:.0f}")
    print(f"speedup_vs_seed={seed_s / ours:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
