"""Does selection's later-speaker protocol pick the back-end that serves *new* speakers best? On az_digits.

Stage ``select`` chooses each embedding candidate's back-end twice
(:mod:`voiceid.select.later`). For its own decisions it takes the lowest val EER on the enrolled
speakers. For the enrollment store it takes the lowest identification EER when val-unknown
speakers are enrolled as later speakers. This script checks the second choice against what
actually happens to new speakers.

Each seeded draw (``enroll_az_digits.held_out``) holds out 20 *new* speakers and 8 *strangers*,
never seen by anything fitted. Of the other 31 speakers, 2/3 are the model's own (8 training
clips each, which fit the centroids, the scalers and LDA/WCCN, and clips 9-12 are their val
probes). The rest are *val-unknown* speakers (20 clips each).

Per system (cosine of ``mfcc60``, ``dvector``, ``joint``) and back-end variant, on val:

* ``val EER``: own val probes against val-unknown clips;
* ``later EER``: :func:`voiceid.select.later.later_trials` on the val-unknown speakers.

And on the held-out speakers:

* ``new EER``: the 20 new speakers enrolled from 5 clips beside the own ones, their other 15 clips
  against the strangers' 20 (:func:`voiceid.scoring.openset.identification_eer`);
* ``new DIR@5%``: the new speakers' files identified at the threshold that accepts 5% of the
  test strangers (an oracle, for comparison only).

The summary line per system says how the variant chosen by each val figure fares on new speakers.
No model is trained, so many draws are cheap (the feature tables are shared with ``enroll_ceiling.py``).

Usage:
    .venv/bin/python benchmarks/later_backends.py [--seeds 42 43 ... 49] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enroll_az_digits import held_out
from enroll_ceiling import SYSTEMS, add_draw_args, embed, open_features

VARIANTS = {"plain": (None, False), "wccn": (None, True), "lda+wccn": (64, True)}
N_NEW, ENROLL_FILES, FAR = 20, 5, 0.05


def _scorer(own: list[str], vectors: np.ndarray) -> Any:
    """An EmbeddingScorer over the own speakers' centroids (only its cosines are used here)."""
    from voiceid.scoring.calibration import ScoreCalibrator
    from voiceid.scoring.centroids import Centroids
    from voiceid.serve.champion import EmbeddingScorer

    return EmbeddingScorer(None, None, Centroids(own, vectors), ScoreCalibrator(), "bench")  # type: ignore[arg-type]


def draw(seed: int, n_strangers: int, X: dict[str, np.ndarray], spk: np.ndarray) -> dict[tuple[str, str], dict[str, float]]:
    """{(system, variant): {val_eer, later_eer, new_eer, new_dir}} for one held-out draw."""
    from voiceid.scoring.backend import EmbeddingBackend
    from voiceid.scoring.centroids import speaker_centroids
    from voiceid.scoring.cosine import cosine_matrix
    from voiceid.scoring.openset import Probes, identification_eer
    from voiceid.scoring.verification import eer, far_threshold
    from voiceid.select.later import later_trials

    pipeline, new, strangers = held_out(seed, N_NEW, n_strangers)
    rng = np.random.default_rng(seed)
    order = [str(s) for s in rng.permutation(pipeline)]
    own, val_unknown = order[: round(len(order) * 2 / 3)], order[round(len(order) * 2 / 3) :]
    rows = {s: rng.permutation(np.flatnonzero(spk == s)) for s in np.unique(spk)}
    fit = np.concatenate([rows[s][:8] for s in own])
    own_val = np.concatenate([rows[s][8:12] for s in own])
    unk = np.concatenate([rows[s] for s in val_unknown])
    enroll = np.concatenate([rows[s][:ENROLL_FILES] for s in new])
    probes = np.concatenate([rows[s][ENROLL_FILES:] for s in new])
    test = np.concatenate([rows[s] for s in strangers])
    out: dict[tuple[str, str], dict[str, float]] = {}
    for system in SYSTEMS:
        E = embed(system, X, fit)
        for variant, (lda, wccn) in VARIANTS.items():
            T = EmbeddingBackend(lda, wccn=wccn).fit(E[fit], spk[fit]).transform(E)
            cents = speaker_centroids(T[fit], spk[fit])
            top = cosine_matrix(T[np.r_[own_val, unk]], cents.vectors).max(axis=1)
            known = np.r_[np.ones(len(own_val)), np.zeros(len(unk))]
            trials = later_trials(_scorer(cents.speakers, cents.vectors), T[unk], spk[unk], ENROLL_FILES, seed)
            assert trials is not None
            gallery = speaker_centroids(np.r_[T[fit], T[enroll]], np.r_[spk[fit], spk[enroll]])
            S = cosine_matrix(T[np.r_[probes, test]], gallery.vectors)
            held = Probes(
                spk[np.r_[probes, test]],
                np.asarray(gallery.speakers)[S.argmax(axis=1)],
                S.max(axis=1),
                np.r_[np.ones(len(probes), bool), np.zeros(len(test), bool)],
            )
            t = far_threshold(held.score, ~held.known, FAR)
            out[(system, variant)] = {
                "val_eer": eer(top, known)[0],
                "later_eer": identification_eer(trials),
                "new_eer": identification_eer(held),
                "new_dir": float((held.correct & (held.score >= t))[held.known].mean()),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_draw_args(parser, list(range(42, 50)))  # the same feature tables as enroll_ceiling.py
    args = parser.parse_args(argv)
    features = open_features(args)
    if features is None:
        return 2
    _, X, spk, _ = features
    runs = [draw(seed, args.n_strangers, X, spk) for seed in args.seeds]
    figures = ("val_eer", "later_eer", "new_eer", "new_dir")
    print(
        f"az_digits, {len(args.seeds)} draws (seeds {args.seeds}): {N_NEW} new speakers enrolled from {ENROLL_FILES} clips, "
        f"{args.n_strangers} strangers; means over draws (new DIR at the oracle {FAR:.0%}-FAR threshold)"
    )
    print(f"{'system':8s} {'back-end':9s} " + " ".join(f"{f:>10s}" for f in figures))
    for system in SYSTEMS:
        for variant in VARIANTS:
            means = [np.mean([r[(system, variant)][f] for r in runs]) for f in figures]
            print(f"{system:8s} {variant:9s} " + " ".join(f"{m:10.3f}" for m in means))
        for by in ("val_eer", "later_eer"):
            # per draw: the variant that val figure picks (ties: the order above), and how it fares on new speakers
            picked = [min(VARIANTS, key=lambda v, r=r: r[(system, v)][by]) for r in runs]
            new_eer = np.mean([r[(system, v)]["new_eer"] for r, v in zip(runs, picked, strict=True)])
            new_dir = np.mean([r[(system, v)]["new_dir"] for r, v in zip(runs, picked, strict=True)])
            counts = {v: picked.count(v) for v in VARIANTS if picked.count(v)}
            print(f"{system:8s} chosen by {by:9s}: {counts}; new EER {new_eer:.3f}, new DIR@5% {new_dir:.3f}")
        best = np.mean([min(r[(system, v)]["new_eer"] for v in VARIANTS) for r in runs])
        print(f"{system:8s} best variant per draw in hindsight: new EER {best:.3f}")
    print("\nsystem and variant together (the store's embedding model):")
    for rule, picked in _store_rules(runs).items():
        new_eer = np.mean([r[k]["new_eer"] for r, k in zip(runs, picked, strict=True)])
        new_dir = np.mean([r[k]["new_dir"] for r, k in zip(runs, picked, strict=True)])
        print(f"  {rule:52s} new EER {new_eer:.3f}, new DIR@5% {new_dir:.3f}")
    best = np.mean([min(v["new_eer"] for v in r.values()) for r in runs])
    print(f"  {'best per draw in hindsight':52s} new EER {best:.3f}")
    return 0


def _store_rules(runs: list[dict[tuple[str, str], dict[str, float]]]) -> dict[str, list[tuple[str, str]]]:
    """Per draw, the (system, variant) each rule gives the store."""
    out: dict[str, list[tuple[str, str]]] = {}
    for r in runs:
        # what select does: the system with the best val figure, then its variant by the later EER
        system = min(SYSTEMS, key=lambda s, r=r: min(r[(s, v)]["val_eer"] for v in VARIANTS))
        picks = {
            "system by val EER, variant by later EER (select)": min(
                ((system, v) for v in VARIANTS), key=lambda k, r=r: r[k]["later_eer"]
            ),
            "both by later EER": min(r, key=lambda k, r=r: r[k]["later_eer"]),
            "both by val EER (before this change)": min(r, key=lambda k, r=r: r[k]["val_eer"]),
        }
        for rule, k in picks.items():
            out.setdefault(rule, []).append(k)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
