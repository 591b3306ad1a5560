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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from voiceid.scoring.classification import label_metrics
from voiceid.scoring.verification import check_binary, eer, far_threshold, min_dcf

UNKNOWN = "unknown"

# report() figures where smaller is better (every other figure: larger is better)
LOWER_IS_BETTER = frozenset({"eer", "min_dcf", "far", "frr", "score_log_loss"})


@dataclass(frozen=True)
class Probes:
    """Per-probe answers: true speaker, top-1 enrolled speaker, open-set score, enrolled or not."""

    true: NDArray[np.str_]
    pred: NDArray[np.str_]
    score: NDArray[np.float64]
    known: NDArray[np.bool_]
    ids: NDArray[np.str_] | None  # utterance ids: lets several systems' answers be paired probe by probe

    def __init__(
        self, true: ArrayLike, pred: ArrayLike, score: ArrayLike, known: ArrayLike, ids: ArrayLike | None = None
    ) -> None:
        t, p = np.asarray(true).astype(str), np.asarray(pred).astype(str)
        s, k = np.asarray(score, dtype=np.float64), np.asarray(known, dtype=bool)
        if not t.ndim == p.ndim == s.ndim == k.ndim == 1 or not len(t) == len(p) == len(s) == len(k):
            raise ValueError(f"probe arrays must be 1-D of one length, found {t.shape} {p.shape} {s.shape} {k.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError("probe scores contain NaN or infinite values")
        i = None if ids is None else np.asarray(ids).astype(str)
        if i is not None and i.shape != t.shape:
            raise ValueError(f"probe ids must match the probes, found {i.shape} for {t.shape}")
        object.__setattr__(self, "true", t)
        object.__setattr__(self, "pred", p)
        object.__setattr__(self, "score", s)
        object.__setattr__(self, "known", k)
        object.__setattr__(self, "ids", i)

    def __len__(self) -> int:
        return len(self.true)

    @property
    def correct(self) -> NDArray[np.bool_]:
        """Known probes whose top-1 answer is right."""
        return self.known & (self.pred == self.true)

    def take(self, idx: ArrayLike) -> Probes:
        i = np.asarray(idx)
        return Probes(self.true[i], self.pred[i], self.score[i], self.known[i], None if self.ids is None else self.ids[i])


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


def identification_eer(p: Probes) -> float:
    """Open-set identification's equal error rate: where FPIR meets FNIR.

    FPIR(t) is FAR(t); FNIR(t) = 1 - DIR(t), the share of known probes *not* both accepted and
    rightly named, so a wrong name is a miss at every threshold (EER ignores names).

    >>> identification_eer(Probes(["a", "b", "x", "y"], ["a", "a", "a", "b"], [0.9, 0.8, 0.7, 0.2], [1, 1, 0, 0]))
    0.5
    """
    _need_both(p)
    floor = float(p.score.min()) - 1.0  # below every score: a wrongly named probe is never a hit
    return eer(np.where(p.known & ~p.correct, floor, p.score), p.known.astype(np.int64))[0]


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
        "score_log_loss": score_log_loss(p),
    }
    for x in fars:
        out[f"dir_far_{_pct(x)}"] = dir_at_far(p, x)[0]
    known = p.known.astype(np.int64)
    out["eer"] = eer(p.score, known)[0]
    out["min_dcf"] = min_dcf(p.score, known, p_target=p_target)[0]
    return out


def score_log_loss(p: Probes, eps: float = 1e-6) -> float:
    """Cross-entropy of each probe's score as the probability that its answer is right.

    Continuous where EER and DIR move in steps: with few probes several systems often tie at
    EER 0, and this still tells a confident, well-separated system from a lucky one.

    >>> round(score_log_loss(Probes(["a", "x"], ["a", "a"], [0.9, 0.2], [True, False])), 4)
    0.1643
    """
    q = np.clip(p.score, eps, 1 - eps)
    return float(-np.mean(np.where(p.correct, np.log(q), np.log(1 - q))))


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
    """Point value and percentile interval of each figure ``metrics`` returns, for one system.

    Known and unknown probes are resampled separately with replacement (each keeps its count);
    ``rng`` is ``numpy.random.default_rng(seed)``, so the intervals are reproducible.
    Returns ``{name: {"value", "lo", "hi"}}``. Several systems: :func:`paired_bootstrap`.
    """
    return paired_bootstrap({"": p}, lambda _, q: metrics(q), "", n, seed, level)[0][""]


def align(systems: Mapping[str, Probes]) -> dict[str, Probes]:
    """The probes every system answered, in one order (the first system's), matched by ``ids``.

    Systems built from different feature tables may have lost different files; pairing them
    probe by probe needs the same probes in the same order.

    >>> a = Probes(["x", "y"], ["x", "x"], [0.9, 0.1], [True, False], ids=["u1", "u2"])
    >>> b = Probes(["y", "x"], ["x", "x"], [0.3, 0.8], [False, True], ids=["u2", "u1"])
    >>> align({"a": a, "b": b})["b"].score.tolist()
    [0.8, 0.3]
    """
    ids: dict[str, NDArray[np.str_]] = {}
    for n, p in systems.items():
        if p.ids is None:
            raise ValueError("aligning systems needs probe ids")
        ids[n] = p.ids
    names = list(systems)
    common = set.intersection(*(set(ids[n].tolist()) for n in names))
    order = [u for u in ids[names[0]] if u in common]
    out = {}
    for n in names:
        pos = {u: i for i, u in enumerate(ids[n])}
        out[n] = systems[n].take([pos[u] for u in order])
    ref = out[names[0]]
    for n in names[1:]:
        if not (np.array_equal(out[n].true, ref.true) and np.array_equal(out[n].known, ref.known)):
            raise ValueError(f"systems {names[0]!r} and {n!r} disagree on the speakers of the same probes")
    return out


def paired_bootstrap(
    systems: Mapping[str, Probes],
    metrics: Callable[[str, Probes], dict[str, float]],
    reference: str,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, dict[str, float]]]]:
    """Intervals of every system's figures, and of each system's difference to ``reference``, from ONE set of resamples.

    Every system must answer the same probes in the same order (:func:`align`); each replicate
    draws known and unknown probe indices once and applies them to every system, so the
    intervals compare systems on the same data and the differences are paired (much tighter
    than two independent intervals).  ``metrics(name, probes)`` gives a system's figures
    (its own threshold included).  Returns ``(figures, differences)``, each
    ``{system: {metric: {"value", "lo", "hi"}}}``; ``differences[reference]`` is all zero.
    """
    names = list(systems)
    if reference not in systems:
        raise ValueError(f"reference {reference!r} is not among the systems {names}")
    first = systems[names[0]]
    for name in names:
        p = systems[name]
        _need_both(p)
        if len(p) != len(first) or not np.array_equal(p.known, first.known):
            raise ValueError(f"system {name!r} answers other probes than {names[0]!r}: align them first")
    point = {name: metrics(name, systems[name]) for name in names}
    keys = {name: [k for k in point[name] if k in point[reference]] for name in names}
    draws: dict[str, dict[str, list[float]]] = {name: {k: [] for k in point[name]} for name in names}
    diffs: dict[str, dict[str, list[float]]] = {name: {k: [] for k in keys[name]} for name in names}
    rng = np.random.default_rng(seed)
    ki, ui = np.flatnonzero(first.known), np.flatnonzero(~first.known)
    for _ in range(max(n, 0)):
        idx = np.concatenate([rng.choice(ki, len(ki)), rng.choice(ui, len(ui))])
        replicate = {name: metrics(name, systems[name].take(idx)) for name in names}
        for name in names:
            for k, v in replicate[name].items():
                draws[name][k].append(v)
            for k in keys[name]:
                diffs[name][k].append(replicate[name][k] - replicate[reference][k])
    tail = 100 * (1 - level) / 2

    def interval(value: float, d: list[float]) -> dict[str, float]:
        if not d:
            return {"value": float(value), "lo": float(value), "hi": float(value)}
        return {"value": float(value), "lo": float(np.percentile(d, tail)), "hi": float(np.percentile(d, 100 - tail))}

    figures = {name: {k: interval(point[name][k], draws[name][k]) for k in point[name]} for name in names}
    differences = {
        name: {k: interval(point[name][k] - point[reference][k], diffs[name][k]) for k in keys[name]} for name in names
    }
    return figures, differences


def decide(p: Probes, threshold: float) -> NDArray[np.str_]:
    """The answer to each probe: its top-1 speaker, or :data:`UNKNOWN` below the threshold."""
    return np.where(p.score >= threshold, p.pred, UNKNOWN)
