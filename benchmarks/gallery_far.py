"""Does stranger acceptance hold as speakers are enrolled? The gallery threshold against a fixed one, on az_digits.

Per seeded draw (``enroll_az_digits.held_out``: 20 *new* speakers and 8 *strangers*, neither
seen by anything fitted): of the other 31 speakers 2/3 are the model's own (8 training clips
each: their centroids, the scalers and the WCCN back-end), the rest are *validation strangers*
(10 clips each).  The val threshold accepts 5% of the val strangers' top-1 scores (the ``fpr``
rule of stage ``select``).  Then 5, 10 and 20 new speakers are enrolled from 5 clips each, and
the test strangers' acceptance and the new speakers' identification rate are measured with

* ``fixed``: the val threshold as it is;
* ``like own``: :func:`voiceid.scoring.verification.gallery_threshold` on the val strangers'
  :class:`~voiceid.scoring.verification.StrangerScores` (Fisher's z scale), every new speaker
  assumed to draw strangers' scores like the own ones (``voiceid identify`` before 2026-12-03);
* ``gallery``: per-speaker thresholds from the val strangers' measured level and spread against
  each new speaker, shrunk toward all new speakers' by how few val strangers there are
  (:func:`voiceid.scoring.verification.later_speaker_levels` and ``gallery_thresholds``: what
  ``voiceid identify`` does with a store, ``EmbeddingScorer.threshold_for``); a probe meets the
  threshold of its closest speaker;
* ``fixed@c`` / ``like own@c`` / ``gallery@c``: the same from the val threshold of ``select.far_confidence`` c
  (``--far-confidence``, default 0.8): the ``fpr`` rule refitted on smoothed bootstrap resamples
  of the val strangers' speakers (:class:`voiceid.select.thresholds.FprThreshold`), so the 5%
  should hold for *new* strangers, not only for the val ones.  The own speakers' clips 9-12 are
  its enrolled probes.

Systems as in ``enroll_ceiling.py`` (no fine-tuning: the adapted encoder needs one training per
draw, which ``enroll_az_digits.py`` does): cosine of ``mfcc60``, ``dvector`` and ``joint``, plain
or behind WCCN.  Only scores are computed here, so many draws are cheap (~10 s after the
features are cached in the work dir).

Usage:
    .venv/bin/python benchmarks/gallery_far.py [--seeds 42 43 ... 49] [--n-new 5 10 20] [--far-confidence 0.8] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enroll_az_digits import held_out
from enroll_ceiling import SYSTEMS, add_draw_args, embed, open_features

TARGET = 0.05  # select.target_fpr of params.yaml


def draw(
    seed: int, sizes: list[int], n_strangers: int, X: dict[str, np.ndarray], spk: np.ndarray, confidence: float
) -> dict[tuple, tuple]:
    """{(system, n_new, rule): (strangers accepted, new speakers identified)} for one held-out draw."""
    from voiceid.scoring.backend import EmbeddingBackend
    from voiceid.scoring.cosine import cosine_matrix, l2_normalize
    from voiceid.scoring.verification import (
        StrangerScores,
        far_threshold,
        fisher_z,
        gallery_threshold,
        gallery_thresholds,
        later_speaker_levels,
    )
    from voiceid.select.thresholds import FprThreshold

    pipeline, new_all, strangers = held_out(seed, max(sizes), n_strangers)
    rng = np.random.default_rng(seed)
    order = [str(s) for s in rng.permutation(pipeline)]
    own, val_strangers = order[: round(len(order) * 2 / 3)], order[round(len(order) * 2 / 3) :]
    rows = {s: rng.permutation(np.flatnonzero(spk == s)) for s in np.unique(spk)}
    fit = np.concatenate([rows[s][:8] for s in own])
    val = np.concatenate([rows[s][:10] for s in val_strangers])
    own_val = np.concatenate([rows[s][8:12] for s in own])
    test = np.concatenate([rows[s] for s in strangers])
    out: dict[tuple, tuple] = {}
    for system in SYSTEMS:
        E = embed(system, X, fit)
        for backend in ("plain", "wccn"):
            T = EmbeddingBackend(wccn=True).fit(E[fit], spk[fit]).transform(E) if backend == "wccn" else l2_normalize(E)
            centroid = {s: l2_normalize(T[rows[s][:8] if s in own else rows[s][:5]].mean(axis=0)) for s in own + new_all}
            own_C = np.stack([centroid[s] for s in own])
            S_val = cosine_matrix(T[val], own_C)  # (val strangers, own)
            top = S_val.max(axis=1)
            base = far_threshold(top, np.ones(len(top), dtype=bool), TARGET)
            own_top = cosine_matrix(T[own_val], own_C).max(axis=1)
            sure = FprThreshold(TARGET, confidence=confidence, seed=seed).fit(
                np.r_[own_top, top], np.r_[np.ones(len(own_top)), np.zeros(len(top))], np.r_[spk[own_val], spk[val]]
            )
            model = StrangerScores.fit(S_val, fisher=True)
            for n_new in (0, *sizes):
                names = np.array(own + new_all[:n_new])
                C = np.stack([centroid[s] for s in names])
                S_test = cosine_matrix(T[test], C)
                probes = np.concatenate([rows[s][5:] for s in new_all[:n_new]]) if n_new else np.zeros(0, dtype=int)
                S_new = cosine_matrix(T[probes], C)
                right = names[S_new.argmax(axis=1)] == spk[probes] if n_new else np.zeros(0, dtype=bool)
                z = fisher_z(cosine_matrix(T[val], C[len(own) :]))  # the val strangers against each new speaker
                per_speaker = {}
                for name, t, c in (("gallery", base, None), ("gallery@c", sure.threshold_, confidence)):
                    fitted_sd = float(model.sd.mean())
                    levels = later_speaker_levels(fisher_z(S_val), z, spk[val], fitted_sd, c) if n_new else (np.zeros(0),) * 2
                    own_t, new_t = gallery_thresholds(t, model, len(own), len(own), *levels)
                    per_speaker[name] = np.r_[np.full(len(own), own_t), new_t]
                rules = {
                    "fixed": base,
                    "like own": gallery_threshold(base, model, len(own), len(names)),
                    "gallery": per_speaker["gallery"],
                    "fixed@c": sure.threshold_,
                    "like own@c": gallery_threshold(sure.threshold_, model, len(own), len(names)),
                    "gallery@c": per_speaker["gallery@c"],
                }
                for rule, t in rules.items():
                    thr = np.broadcast_to(t, (len(names),))  # each probe meets its top speaker's threshold
                    passed = S_test.max(axis=1) >= thr[S_test.argmax(axis=1)]
                    ident = float((right & (S_new.max(axis=1) >= thr[S_new.argmax(axis=1)])).mean()) if n_new else float("nan")
                    out[(f"{system}/{backend}", n_new, rule)] = (float(passed.mean()), ident)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_draw_args(parser, list(range(42, 50)))  # the same feature tables as enroll_ceiling.py
    parser.add_argument("--n-new", type=int, nargs="*", default=[5, 10, 20])
    parser.add_argument("--far-confidence", type=float, default=0.8, help="the @c rules' select.far_confidence")
    args = parser.parse_args(argv)
    features = open_features(args)
    if features is None:
        return 2
    _, X, spk, _ = features
    sizes = sorted(args.n_new)
    runs = [draw(seed, sizes, args.n_strangers, X, spk, args.far_confidence) for seed in args.seeds]
    print(
        f"az_digits, {len(args.seeds)} draws (seeds {args.seeds}); strangers accepted (target {TARGET:.0%} on val) "
        f"and new speakers identified, as speakers are enrolled; mean [min, max] over draws; "
        f"@c: far_confidence {args.far_confidence}"
    )
    cols = (0, *sizes)
    print(
        f"{'system':14s} {'rule':10s} "
        + " ".join(f"{f'+{n} accepted':>20s}" for n in cols)
        + "   identified at +"
        + str(sizes[-1])
    )
    for system in dict.fromkeys(k[0] for k in runs[0]):
        for rule in ("fixed", "like own", "gallery", "fixed@c", "like own@c", "gallery@c"):
            cells = []
            for n in cols:
                far = np.array([r[(system, n, rule)][0] for r in runs])
                cells.append(f"{far.mean():6.1%} [{far.min():4.1%},{far.max():5.1%}]")
            ident = np.mean([r[(system, sizes[-1], rule)][1] for r in runs])
            print(f"{system:14s} {rule:10s} " + " ".join(f"{c:>20s}" for c in cells) + f"   {ident:6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
