"""Open-set identification metrics: pure numpy, one row per probe.

A probe is a test utterance of an enrolled speaker (``known``) or of a speaker nobody
enrolled.  The system answers each probe with its top enrolled speaker ``pred`` and an
open-set ``score`` (higher: more sure it is that speaker); a threshold ``t`` turns the
answer into "unknown" when ``score < t``.  Definitions used throughout:

* FAR(t) = share of unknown probes accepted (``score >= t``): someone unenrolled gets in.
* FRR(t) = share of known probes rejected (``score < t``).
* DIR(t), the detection-and-identification rate = share of known probes both accepted and
  given the right name; DIR@FAR=x uses the lowest threshold at which at most a share ``x``
  of the unknown probes is accepted (so it compares systems at one false-alarm level).
* EER / minDCF: :mod:`voiceid.scoring` on the enrolled-vs-unknown detection task.
* Closed-set accuracy and F1: the top-1 answer for known probes, ignoring the threshold.

:func:`bootstrap` resamples known and unknown probes separately (each keeps its count), so
every replicate has both kinds and the intervals reflect the finite test set.

Example:
    >>> p = Probes(true=["a", "b", "x", "y"], pred=["a", "a", "a", "b"],
    ...            score=[0.9, 0.8, 0.7, 0.2], known=[True, True, False, False])
    >>> far_frr(p, 0.75)
    (0.0, 0.0)
    >>> dir_at_far(p, 0.0)  # threshold just above the best unknown (0.7): "a" right, "b" wrong
    (0.5, 0.8)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from voiceid.scoring.classification import label_metrics
from voiceid.scoring.verification import check_binary, eer, far_threshold, min_dcf

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Probes:
    """Per-probe answers: true speaker, top-1 enrolled speaker, open-set score, enrolled or not."""

    true: NDArray[np.str_]
    pred: NDArray[np.str_]
    score: NDArray[np.float64]
    known: NDArray[np.bool_]

    def __init__(self, true: ArrayLike, pred: ArrayLike, score: ArrayLike, known: ArrayLike) -> None:
        t, p = np.asarray(true).astype(str), np.asarray(pred).astype(str)
        s, k = np.asarray(score, dtype=np.float64), np.asarray(known, dtype=bool)
        if not t.ndim == p.ndim == s.ndim == k.ndim == 1 or not len(t) == len(p) == len(s) == len(k):
            raise ValueError(f"probe arrays must be 1-D of one length, found {t.shape} {p.shape} {s.shape} {k.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError("probe scores contain NaN or infinite values")
        object.__setattr__(self, "true", t)
        object.__setattr__(self, "pred", p)
        object.__setattr__(self, "score", s)
        object.__setattr__(self, "known", k)

    def __len__(self) -> int:
        return len(self.true)

    @property
    def correct(self) -> NDArray[np.bool_]:
        """Known probes whose top-1 answer is right."""
        return self.known & (self.pred == self.true)

    def take(self, idx: ArrayLike) -> Probes:
        i = np.asarray(idx)
        return Probes(self.true[i], self.pred[i], self.score[i], self.known[i])


def detection_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Validated probe scores with labels 1 (enrolled probe) / 0 (unknown probe)."""
    s, y = check_binary(scores, labels, positive="enrolled", negative="unknown", what="probes")
    return s, y.astype(np.int64)


def _need_both(p: Probes) -> None:
    if p.known.all() or not p.known.any():
        raise ValueError(f"need enrolled and unknown probes, found {int(p.known.sum())} and {int((~p.known).sum())}")


def far_frr(p: Probes, threshold: float) -> tuple[float, float]:
    """(FAR, FRR) when every score >= ``threshold`` is accepted."""
    _need_both(p)
    accepted = p.score >= threshold
    return float(accepted[~p.known].mean()), float((~accepted[p.known]).mean())


def dir_at_threshold(p: Probes, threshold: float) -> float:
    """Share of known probes accepted and correctly named."""
    return float((p.correct & (p.score >= threshold))[p.known].mean())


def threshold_at_far(p: Probes, far: float) -> float:
    """Lowest threshold (a probe score or +inf) accepting at most ``far`` of the unknown probes."""
    _need_both(p)
    return far_threshold(p.score, ~p.known, far)


def dir_at_far(p: Probes, far: float) -> tuple[float, float]:
    """(DIR, threshold) at the lowest threshold whose FAR is at most ``far``."""
    t = threshold_at_far(p, far)
    return dir_at_threshold(p, t), t


def closed_set(p: Probes) -> dict[str, float]:
    """Top-1 accuracy and weighted/macro F1 over the known probes (sklearn's zero_division=0)."""
    if not p.known.any():
        raise ValueError("no enrolled probes to score")
    return label_metrics(p.true[p.known], p.pred[p.known])


def report(
    p: Probes,
    threshold: float,
    fars: Sequence[float] = (0.01, 0.05),
    p_target: float = 0.01,
) -> dict[str, float]:
    """Every figure of the final report at one fitted ``threshold`` (see module docstring)."""
    _need_both(p)
    far, frr = far_frr(p, threshold)
    accepted = p.score >= threshold
    open_correct = (p.correct & accepted).sum() + (~p.known & ~accepted).sum()
    out = {
        **closed_set(p),
        "far": far,
        "frr": frr,
        "dir": dir_at_threshold(p, threshold),
        "open_set_accuracy": float(open_correct / len(p)),
    }
    for x in fars:
        out[f"dir_far_{_pct(x)}"] = dir_at_far(p, x)[0]
    known = p.known.astype(np.int64)
    out["eer"] = eer(p.score, known)[0]
    out["min_dcf"] = min_dcf(p.score, known, p_target=p_target)[0]
    return out


def _pct(x: float) -> str:
    """0.01 -> "1", 0.005 -> "0.5": the FAR as a percentage for metric names."""
    return f"{100 * x:g}"


def bootstrap(
    p: Probes,
    metrics: Callable[[Probes], dict[str, float]],
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Point value and percentile interval of each figure ``metrics`` returns.

    Known and unknown probes are resampled separately with replacement; ``rng`` is
    ``numpy.random.default_rng(seed)``, so the intervals are reproducible.
    Returns ``{name: {"value", "lo", "hi"}}``.
    """
    _need_both(p)
    point = metrics(p)
    if n <= 0:
        return {k: {"value": v, "lo": v, "hi": v} for k, v in point.items()}
    rng = np.random.default_rng(seed)
    ki, ui = np.flatnonzero(p.known), np.flatnonzero(~p.known)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n):
        idx = np.concatenate([rng.choice(ki, len(ki)), rng.choice(ui, len(ui))])
        for k, v in metrics(p.take(idx)).items():
            draws[k].append(v)
    tail = 100 * (1 - level) / 2
    return {
        k: {"value": float(point[k]), "lo": float(np.percentile(d, tail)), "hi": float(np.percentile(d, 100 - tail))}
        for k, d in draws.items()
    }


def decide(p: Probes, threshold: float) -> NDArray[np.str_]:
    """The answer to each probe: its top-1 speaker, or :data:`UNKNOWN` below the threshold."""
    return np.where(p.score >= threshold, p.pred, UNKNOWN)
