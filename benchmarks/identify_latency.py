"""Warm identification latency of a 5 s clip on CPU (bar: < 100 ms), as ``voiceid identify`` does it.

The model is loaded once (that cost is printed apart), warmed up, then each of ``--n`` calls
is timed for three paths:

* ``file``: what the CLI does per file -- decode + resample + validate + ``Champion.identify``;
* ``file+store``: the same with an enrollment gallery (the embedding model over the model's
  own speakers and the store's);
* ``wave``: ``Champion.identify`` on a waveform already in memory.

Usage:
    .venv/bin/python benchmarks/identify_latency.py [--model models:/voiceid@champion | champion.pkl]
        [--tracking-uri URI] [--store data/enrollment] [--audio FILE] [--seconds 5] [--n 50] [--threads 1]
    .venv/bin/python benchmarks/identify_latency.py --ecapa-channels 64
        # no registry needed: an ECAPA champion of the params.yaml shape with untrained weights
        # (the cost of a forward pass does not depend on the weights)

Without ``--store`` (or with an empty one) a gallery of 10 speakers is made by embedding
perturbed copies of the clip, so the gallery path is always measured.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def voice(seconds: float, seed: int = 0, sr: int = 16000) -> np.ndarray:
    """A harmonic, syllable-modulated synthetic voice (the features do not care that it is fake)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110.0 * (1.0 + 0.02 * np.sin(2 * np.pi * 3 * t))
    wave = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, np.pi)) / k for k in range(1, 12))
    wave = wave * (0.5 + 0.5 * np.sin(2 * np.pi * 3.3 * t) ** 2) + 0.01 * rng.standard_normal(t.shape)
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def ecapa_champion(channels: int) -> Any:
    """A Champion whose scorer is ECAPA (params.yaml shape, ``channels`` wide, random weights)."""
    import dataclasses

    import torch

    from voiceid.config import load_section
    from voiceid.ecapa.model import ECAPATDNN
    from voiceid.ecapa.params import EcapaParams
    from voiceid.features.params import FeatureParams
    from voiceid.scoring.calibration import ScoreCalibrator
    from voiceid.scoring.centroids import Centroids
    from voiceid.serve.champion import Champion, EmbeddingScorer
    from voiceid.serve.frontend import EcapaEmbedder, FrontEnd

    torch.manual_seed(0)
    features = load_section(FeatureParams, "features", REPO / "params.yaml")
    config = dataclasses.replace(load_section(EcapaParams, "ecapa", REPO / "params.yaml").model,
                                 n_mels=features.logmel.n_mels, channels=channels)
    cents = np.random.default_rng(0).normal(size=(20, config.embedding_dim))
    calibrator = ScoreCalibrator().fit(np.r_[np.linspace(-1, 0.5, 50), np.linspace(0.3, 1, 50)], np.r_[np.zeros(50), np.ones(50)])
    scorer = EmbeddingScorer(FrontEnd("logmel", features), EcapaEmbedder(ECAPATDNN(config).eval()),
                             Centroids([f"s{i:02d}" for i in range(20)], cents / np.linalg.norm(cents, axis=1, keepdims=True)),
                             calibrator, f"ecapa:untrained-{channels}")
    return Champion("ecapa", None, scorer, 0.5, "fpr", scorer, 0.5, features.sample_rate)


def timed(fn: Any, n: int, warmup: int = 3) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1000.0  # ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/voiceid@champion")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--ecapa-channels", type=int, default=None, help="time an untrained ECAPA champion instead")
    parser.add_argument("--store", default=None, help="enrollment store to use as the gallery")
    parser.add_argument("--audio", default=None, help="a recording to time (default: a synthetic voice)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads (the CLI serves one file at a time)")
    args = parser.parse_args(argv)

    import soundfile as sf
    import torch
    from threadpoolctl import threadpool_limits

    from voiceid.data.audio import load_audio
    from voiceid.scoring.centroids import speaker_centroids
    from voiceid.serve.cli import CliError, identify_file, load_model
    from voiceid.serve.store import EnrollmentStore

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    try:
        if args.ecapa_channels:
            champion, info = ecapa_champion(args.ecapa_channels), {"uri": f"untrained ECAPA C={args.ecapa_channels}"}
        else:
            champion, info = load_model(args.model, args.tracking_uri)
    except CliError as exc:
        print(f"identify_latency: {exc}", file=sys.stderr)
        return 2
    load_s = time.perf_counter() - t0

    tmp = Path(tempfile.mkdtemp(prefix="voiceid_latency_"))
    if args.audio:
        clip = load_audio(args.audio, champion.sample_rate)
        reps = int(np.ceil(args.seconds * clip.sample_rate / len(clip.wave)))
        wave = np.tile(clip.wave, reps)[: int(args.seconds * clip.sample_rate)]  # tiled to exactly --seconds
    else:
        wave = voice(args.seconds, sr=champion.sample_rate)
    path = str(tmp / "probe.wav")
    sf.write(path, wave, champion.sample_rate)

    gallery = EnrollmentStore(args.store).gallery(champion.embedding.embedder_id) if args.store else None
    if gallery is None and champion.embedding is not None:
        rng = np.random.default_rng(1)
        emb = [champion.embed(voice(1.5, seed=s, sr=champion.sample_rate) * rng.uniform(0.5, 1.0), champion.sample_rate)
               for s in range(10)]
        gallery = speaker_centroids(np.stack(emb), [f"g{s}" for s in range(10)])

    with threadpool_limits(limits=args.threads):
        rows = [("file", timed(lambda: identify_file(champion, path, None, 0.25, -50.0), args.n))]
        if gallery is not None:
            rows.append(("file+store", timed(lambda: identify_file(champion, path, gallery, 0.25, -50.0), args.n)))
        rows.append(("wave", timed(lambda: champion.identify(wave, champion.sample_rate), args.n)))

    emb_family = champion.embedding.embedder_id if champion.embedding is not None else "none"
    n_gallery = len(gallery.speakers) if gallery is not None else 0
    print(f"model {info['uri']}{' v' + info['version'] if info.get('version') else ''}: family {champion.family}, "
          f"embedding {emb_family}, {len(champion.label_map)} own speakers (+{n_gallery} in the gallery); "
          f"cold load {load_s:.2f} s; clip {args.seconds:.1f} s; {args.n} timed calls, {args.threads} thread(s)")
    print(f"{'path':12s} {'median ms':>10s} {'p95 ms':>8s} {'mean ms':>8s}")
    for name, ms in rows:
        print(f"{name:12s} {np.median(ms):10.1f} {np.percentile(ms, 95):8.1f} {ms.mean():8.1f}")
    worst = max(np.median(ms) for _, ms in rows)
    print(f"bar: warm identification of a {args.seconds:.0f} s clip < 100 ms on CPU: "
          f"{'met' if worst < 100 else 'NOT met'} (slowest median {worst:.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
