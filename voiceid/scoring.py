"""Speaker-verification scoring: cosine scores, DET/ROC points, EER, minDCF, s-norm.

Pure numpy, no file handling, so every stage (embedder training, open-set selection) computes
the same figures the same way.  Conventions, used throughout:

* ``scores``: higher means "more likely the same speaker"; ``labels``: 1 for a target trial
  (same speaker), 0 for a non-target trial.
* A threshold ``t`` accepts every trial with ``score >= t``.  Candidate thresholds are the
  distinct scores plus ``+inf`` (reject everything), so both extremes are always on the curve.
* ``P_miss(t)`` = share of target trials rejected, ``P_fa(t)`` = share of non-targets accepted.

Example:
    >>> scores = [0.9, 0.4, 0.6, 0.1]
    >>> labels = [1, 1, 0, 0]
    >>> eer(scores, labels)
    (0.5, 0.6)
    >>> min_dcf(scores, labels, p_target=0.5)
    (0.5, 0.4)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray


class DetPoints(NamedTuple):
    """Error rates at each candidate threshold, thresholds ascending (P_fa falls, P_miss rises)."""

    p_fa: NDArray[np.float64]
    p_miss: NDArray[np.float64]
    thresholds: NDArray[np.float64]


class RocPoints(NamedTuple):
    """ROC points (false positive rate, true positive rate), thresholds ascending."""

    fpr: NDArray[np.float64]
    tpr: NDArray[np.float64]
    thresholds: NDArray[np.float64]


def check_binary(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    positive: str = "target",
    negative: str = "non-target",
    what: str = "trials",
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Validated 1-D ``(scores, labels)``: finite scores, 0/1 labels, both classes present.

    ``positive``/``negative``/``what`` name the label-1 / label-0 items in the error
    messages (the open-set rules call them "enrolled" / "unknown" "probes").
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    raw = np.asarray(labels).ravel()
    if s.shape != raw.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {raw.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    if not np.all(np.isin(raw, (0, 1))):
        raise ValueError(f"labels must be 0 ({negative}) or 1 ({positive})")
    y = raw.astype(bool)
    if y.all() or not y.any():
        raise ValueError(
            f"need both {positive} and {negative} {what}, found {int(y.sum())} {positive} and {int((~y).sum())} {negative}"
        )
    return s, y


def det_curve(scores: ArrayLike, labels: ArrayLike) -> DetPoints:
    """P_fa and P_miss at every distinct score and at +inf.

    Example:
        >>> det_curve([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0])
        DetPoints(p_fa=array([1. , 0.5, 0.5, 0. , 0. ]), p_miss=array([0. , 0. , 0.5, 0.5, 1. ]), thresholds=array([0.1, 0.4, 0.6, 0.9, inf]))
    """
    s, y = check_binary(scores, labels)
    order = np.argsort(s, kind="mergesort")
    s, y = s[order], y[order]
    thresholds, first = np.unique(s, return_index=True)  # first index of each distinct score
    # Trials strictly below a threshold are rejected: count them by the first index of that score.
    tar_below = np.concatenate([np.cumsum(y)[first - 1] * (first > 0), [y.sum()]])
    non_below = np.concatenate([np.cumsum(~y)[first - 1] * (first > 0), [(~y).sum()]])
    thresholds = np.concatenate([thresholds, [np.inf]])
    # Rates from integer counts, so equal error counts give bit-equal rates (exact EER crossings).
    p_miss = tar_below / y.sum()
    p_fa = ((~y).sum() - non_below) / (~y).sum()
    return DetPoints(p_fa.astype(np.float64), p_miss.astype(np.float64), thresholds)


def roc(scores: ArrayLike, labels: ArrayLike) -> RocPoints:
    """ROC points: false positive rate and true positive rate at each candidate threshold.

    Example:
        >>> roc([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]).tpr
        array([1. , 1. , 0.5, 0.5, 0. ])
    """
    p_fa, p_miss, thresholds = det_curve(scores, labels)
    return RocPoints(p_fa, 1.0 - p_miss, thresholds)


def eer(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """Equal error rate and the threshold where P_miss meets P_fa.

    Between the last threshold with P_miss < P_fa and the next one the two rates are linearly
    interpolated (the standard ROC-segment EER).  The returned threshold is that next one: the
    lowest threshold at which P_miss >= P_fa.

    Example:
        >>> eer([3.0, 2.0, 1.0, 0.0], [1, 1, 0, 0])
        (0.0, 2.0)
    """
    p_fa, p_miss, thresholds = det_curve(scores, labels)
    diff = p_fa - p_miss  # falls from 1 (t = min score) to -1 (t = inf)
    i = int(np.argmax(diff <= 0))  # first crossing; exists because diff[-1] = -1
    if i == 0 or diff[i] == 0:
        return float(p_miss[i]), float(thresholds[i])
    alpha = diff[i - 1] / (diff[i - 1] - diff[i])
    rate = p_miss[i - 1] + alpha * (p_miss[i] - p_miss[i - 1])
    return float(rate), float(thresholds[i])


def min_dcf(
    scores: ArrayLike,
    labels: ArrayLike,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Minimum normalised detection cost (NIST SRE) and the threshold reaching it.

    ``DCF(t) = c_miss * p_target * P_miss(t) + c_fa * (1 - p_target) * P_fa(t)``, divided by
    the cost of the best trivial system, ``min(c_miss * p_target, c_fa * (1 - p_target))``, so
    1.0 means "no better than always rejecting (or always accepting)".

    Example:
        >>> min_dcf([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0], p_target=0.01)
        (0.5, 0.9)
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), found {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"costs must be positive, found c_miss={c_miss}, c_fa={c_fa}")
    p_fa, p_miss, thresholds = det_curve(scores, labels)
    dcf = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    dcf /= min(c_miss * p_target, c_fa * (1.0 - p_target))
    i = int(np.argmin(dcf))
    return float(dcf[i]), float(thresholds[i])


def l2_normalize(x: ArrayLike, eps: float = 1e-12) -> NDArray[np.float64]:
    """Rows scaled to unit length (a zero row stays zero)."""
    a = np.asarray(x, dtype=np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), eps)


def cosine_matrix(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """All-pairs cosine similarity: (n, d) x (m, d) -> (n, m).

    Example:
        >>> cosine_matrix([[1.0, 0.0], [1.0, 1.0]], [[2.0, 0.0]]).round(4)
        array([[1.    ],
               [0.7071]])
    """
    return l2_normalize(a) @ l2_normalize(b).T


def cosine_pairs(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Row-wise cosine similarity of two (n, d) arrays -> (n,): one score per trial."""
    a2, b2 = l2_normalize(a), l2_normalize(b)
    if a2.shape != b2.shape:
        raise ValueError(f"trial sides differ in shape: {a2.shape} vs {b2.shape}")
    return np.einsum("ij,ij->i", a2, b2)


def s_norm(
    scores: ArrayLike,
    enroll_cohort: ArrayLike,
    test_cohort: ArrayLike,
    top_k: int | None = None,
) -> NDArray[np.float64]:
    """Symmetric score normalisation, optionally adaptive (AS-norm with the ``top_k`` closest).

    ``scores`` (n,) are raw trial scores; ``enroll_cohort`` / ``test_cohort`` (n, n_cohort) are
    each trial side's scores against an impostor cohort (speakers outside the trials).  Each raw
    score is z-normalised by both sides' cohort statistics and the two are averaged, which
    removes per-speaker score offsets so one threshold fits all speakers.

    Example:
        >>> s_norm([2.0], [[0.0, 2.0]], [[1.0, 3.0]])  # z = 1 against side 1, 0 against side 2
        array([0.5])
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    sides = [np.asarray(c, dtype=np.float64) for c in (enroll_cohort, test_cohort)]
    for c in sides:
        if c.ndim != 2 or c.shape[0] != s.size:
            raise ValueError(f"cohort scores must have shape ({s.size}, n_cohort), found {c.shape}")
        if top_k is not None and not 1 <= top_k <= c.shape[1]:
            raise ValueError(f"top_k must be in 1..{c.shape[1]}, found {top_k}")
    out = np.zeros_like(s)
    for c in sides:
        if top_k is not None:
            c = -np.sort(-c, axis=1)[:, :top_k]  # the closest impostors: the ones that matter at the threshold
        sd = c.std(axis=1)
        # A degenerate (constant) cohort contributes nothing rather than dividing by zero.
        z = np.where(sd > 1e-6, (s - c.mean(axis=1)) / np.where(sd > 1e-6, sd, 1.0), 0.0)
        out += 0.5 * z
    return out
