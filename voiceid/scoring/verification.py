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
from scipy.special import log_ndtr
from scipy.stats import norm


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


def far_threshold(scores: ArrayLike, nontarget: ArrayLike, far: float) -> float:
    """Lowest threshold (one of ``scores`` or +inf) accepting at most a share ``far`` of the non-targets.

    The one FAR rule of voiceid: open-set DIR@FAR and the ``fpr`` threshold both use it.
    With n non-target scores the reachable rates are multiples of 1/n.

    >>> far_threshold([0.9, 0.8, 0.7, 0.2], [False, False, True, True], 0.0)
    0.8
    >>> far_threshold([0.9, 0.8, 0.7, 0.2], [False, False, True, True], 0.5)
    0.7
    """
    s = np.asarray(scores, dtype=np.float64)
    non = np.asarray(nontarget, dtype=bool)
    if not 0.0 <= far < 1.0:
        raise ValueError(f"far must be in [0, 1), found {far}")
    if s.shape != non.shape or not non.any():
        raise ValueError(f"need one non-target flag per score and at least one non-target, found {s.shape} / {int(non.sum())}")
    candidates = np.concatenate([np.unique(s), [np.inf]])
    unk = np.sort(s[non])
    # non-targets at or above each candidate, by binary search
    accepted = len(unk) - np.searchsorted(unk, candidates, side="left")
    ok = accepted <= permitted_accepts(far, len(unk))
    return float(candidates[int(np.argmax(ok))])


def permitted_accepts(far: float, n_nontarget: int) -> int:
    """How many of ``n_nontarget`` scores a FAR of ``far`` lets through (:func:`far_threshold`'s count).

    >>> permitted_accepts(0.05, 200), permitted_accepts(0.1, 30), permitted_accepts(0.0, 7)
    (10, 3, 0)
    """
    return int(np.floor(far * n_nontarget + 1e-9))  # tolerance: far * n is often meant as an integer


DET_CLIP = 1e-3  # rates of 0 or 1 sit at +-3.1 deviates instead of infinity


def probit(rate: ArrayLike) -> NDArray[np.float64]:
    """Normal deviate of a rate, the axis of DET plots; 0 and 1 are clipped to ``DET_CLIP`` to stay finite.

    >>> [round(float(x), 2) for x in probit([0.5, 0.0])]
    [0.0, -3.09]
    """
    return np.asarray(norm.ppf(np.clip(np.asarray(rate, dtype=np.float64), DET_CLIP, 1 - DET_CLIP)), dtype=np.float64)


COSINE_CLIP = 1e-6  # Fisher's z of a cosine of exactly +-1 would be infinite


def fisher_z(cosines: ArrayLike) -> NDArray[np.float64]:
    """``arctanh`` of cosine scores: the bounded [-1, 1] scale opened onto the real line.

    A normal tail fitted to raw cosines puts mass above 1, where no score can be, so a threshold
    chosen from it can pass 1 and accept no one; on Fisher's scale the tail ends where cosines do.

    >>> [round(float(z), 3) for z in fisher_z([0.0, 0.5, 1.0])]
    [0.0, 0.549, 7.254]
    """
    return np.asarray(np.arctanh(np.clip(np.asarray(cosines, dtype=np.float64), -1 + COSINE_CLIP, 1 - COSINE_CLIP)))


class StrangerScores(NamedTuple):
    """Validation strangers' scores against the enrolled speakers: a normal per stranger.

    Per stranger, as T-norm models scores: one stranger's non-target scores are correlated (a
    voice near the population's centre scores high against everyone: a "wolf"), so strangers
    are modelled one by one rather than pooled.  With a few enrolled speakers a per-stranger sd
    is too noisy (its overestimates dominate the tail of a large gallery), so the sd is pooled
    over strangers, and each stranger's mean is shrunk toward the grand mean by the share of
    its spread that is not sampling noise (empirical Bayes).  With ``fisher`` (cosine scores)
    the normals live on :func:`fisher_z`'s scale; thresholds go in and come out as cosines.
    """

    mean: NDArray[np.float64]  # (n_strangers,)
    sd: NDArray[np.float64]  # (n_strangers,)
    fisher: bool = False  # champions pickled before it: raw scores

    @classmethod
    def fit(cls, scores: ArrayLike, fisher: bool = False) -> StrangerScores:
        """From an (n_strangers, n_models) score matrix; ``fisher``: the scores are cosines."""
        S = np.asarray(scores, dtype=np.float64)
        if S.ndim != 2 or S.shape[0] < 1 or S.shape[1] < 1 or S.size < 2:
            raise ValueError(f"need an (n_strangers, n_models) matrix of at least 2 scores, found shape {S.shape}")
        S = fisher_z(S) if fisher else S
        n, m = S.shape
        within = float(S.var(axis=1, ddof=1).mean()) if m > 1 else float(S.var(ddof=1))
        means = S.mean(axis=1)
        shrunk = _shrunk(means, np.full(n, within / m))[0] if n > 1 else means  # each mean's noise: within / m
        return cls(shrunk, np.full(n, max(np.sqrt(within), 1e-6)), fisher)

    def scale(self, scores: ArrayLike) -> NDArray[np.float64]:
        """Scores on the scale the normals are fitted on (Fisher's z for cosines)."""
        return fisher_z(scores) if self.fisher else np.asarray(scores, dtype=np.float64)

    def accepted(self, threshold: float, n_models: int) -> float:
        """Modelled share of strangers whose best of ``n_models`` scores reaches ``threshold``."""
        return self._accepted(float(self.scale(threshold)), n_models, np.zeros(0), np.zeros(0), np.zeros(0))

    def _accepted(
        self, t: float, n_models: int, t_extra: NDArray[np.float64], off: NDArray[np.float64], sd: NDArray[np.float64]
    ) -> float:
        """:meth:`accepted` on the fitted scale, plus one speaker per ``off`` entry whose strangers' scores sit that
        much higher with sd ``sd`` (speakers enrolled later), each with its own threshold ``t_extra``."""
        log_below = n_models * log_ndtr((t - self.mean) / self.sd)  # log P(every score < t), per stranger
        if len(off):
            log_below = log_below + log_ndtr((t_extra[None, :] - self.mean[:, None] - off[None, :]) / sd[None, :]).sum(axis=1)
        return float(np.mean(-np.expm1(log_below)))

    def threshold(self, far: float, n_models: int) -> float:
        """The top-1 threshold at which a share ``far`` of strangers is accepted against ``n_models`` speakers."""
        if not 0.0 < far < 1.0 or n_models < 1:
            raise ValueError(f"need 0 < far < 1 and n_models >= 1, found {far} and {n_models}")
        lo, hi = float(np.min(self.mean - 12 * self.sd)), float(np.max(self.mean + 12 * self.sd))
        unscale = np.tanh if self.fisher else float
        for _ in range(100):  # bisection on the fitted scale: accepted() falls as the threshold rises
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.accepted(float(unscale(mid)), n_models) > far else (lo, mid)
        return float(unscale(hi))

    def _extra(self, offsets: ArrayLike, spreads: ArrayLike | None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        off = np.asarray(offsets, dtype=np.float64).ravel()
        sd = np.full(len(off), float(self.sd.mean())) if spreads is None else np.asarray(spreads, dtype=np.float64).ravel()
        if sd.shape != off.shape or (sd <= 0).any():
            raise ValueError(f"need one positive spread per offset, found {sd.shape} for {off.shape}")
        return off, sd


def gallery_threshold(base: float, strangers: StrangerScores, n_fitted: int, n_models: int) -> float:
    """Top-1 threshold for ``n_models`` enrolled speakers, holding the stranger acceptance ``base`` had at ``n_fitted``.

    A stranger is accepted when *any* of its scores reaches the threshold, so with a fixed
    threshold FAR grows with the gallery.  ``base`` was fitted on validation data against the
    ``n_fitted`` speakers of the model; the modelled acceptance at ``base`` is held constant:
    the threshold returned accepts the same share of (modelled) strangers against ``n_models``,
    every speaker assumed like the fitted ones (:func:`gallery_thresholds` measures those
    enrolled later).  It never falls below ``base``.

    >>> strangers = StrangerScores(np.zeros(100), np.ones(100))
    >>> round(gallery_threshold(1.645, strangers, 1, 1), 3), round(gallery_threshold(1.645, strangers, 1, 10), 3)
    (1.645, 2.568)
    """
    if n_models <= n_fitted or not np.isfinite(base):
        return float(base)
    far = strangers.accepted(base, n_fitted)
    if far <= 0.0:  # base sits beyond every modelled stranger: nothing to hold
        return float(base)
    return max(float(base), strangers.threshold(far, n_models))


def later_speaker_levels(
    own: ArrayLike, later: ArrayLike, groups: ArrayLike, fitted_sd: float = 1.0, confidence: float | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Strangers' extra level and spread against each speaker enrolled later, for :func:`gallery_thresholds`.

    ``own`` (n_probes, n_own) and ``later`` (n_probes, k): val strangers' scores (on the
    stranger model's scale) against the model's own speakers and against the later ones;
    ``groups``: each probe's stranger (one speaker's clips are not independent draws).  Scores
    are paired: each probe's mean against the own speakers is removed.  The level is the paired
    score averaged per stranger; the spread is its sd over probes, relative to the same sd
    against the own speakers and scaled to the stranger model's ``fitted_sd`` (an own-like
    speaker gets exactly that).  Both are shrunk toward their mean over the
    later speakers by how much of their spread across speakers exceeds sampling noise
    (empirical Bayes: with a few strangers the later speakers are treated alike, with many each
    keeps its own; the sampling variance of a log-variance from G strangers is ~2 / (G - 1)).
    With ``confidence`` (``select.far_confidence``) each level is raised to that one-sided
    bound of its sampling error over the strangers, as the val threshold is: a level measured on
    5 strangers is not known well enough to lower anyone's guard.

    >>> rng = np.random.default_rng(0)
    >>> own, later = rng.normal(size=(400, 5)), rng.normal(size=(400, 3)) + [0.0, 0.5, 2.0]
    >>> off, sd = later_speaker_levels(own, later, np.arange(400), fitted_sd=1.0)
    >>> [round(float(x), 1) for x in off], [round(float(x), 1) for x in sd]
    ([0.0, 0.5, 2.0], [1.0, 1.0, 1.0])
    """
    o, x, g = np.asarray(own, dtype=np.float64), np.asarray(later, dtype=np.float64), np.asarray(groups)
    if x.ndim != 2 or o.ndim != 2 or len(o) != len(x) or len(g) != len(x) or len(x) < 2:
        raise ValueError(f"need (n, n_own) and (n, k) scores and n >= 2 groups, found {o.shape}, {x.shape}, {g.shape}")
    if confidence is not None and not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1) or None, found {confidence}")
    paired = x - o.mean(axis=1, keepdims=True)  # (n, k)
    m = o.shape[1]
    # an own speaker paired against the *other* own speakers, as a later one is against all of them
    own_var = float((o - (o.sum(axis=1, keepdims=True) - o) / (m - 1)).var(axis=0, ddof=1).mean()) if m > 1 else 1.0
    names = np.unique(g)
    per_stranger = np.stack([paired[g == name].mean(axis=0) for name in names])  # (G, k)
    relative_var = paired.var(axis=0, ddof=1) / max(own_var, 1e-12) * fitted_sd**2
    offsets, log_var = per_stranger.mean(axis=0), np.log(np.maximum(relative_var, 1e-12))
    if len(names) < 2:
        return offsets, np.exp(0.5 * log_var)
    noise = per_stranger.var(axis=0, ddof=1) / len(names)  # (k,) sampling variance of each level
    shared = float(per_stranger.mean(axis=1).var(ddof=1)) / len(names)  # of their mean (the same strangers)
    keep = np.zeros(len(offsets))
    if x.shape[1] > 1:
        offsets, keep = _shrunk(offsets, noise)
        log_var = _shrunk(log_var, np.full(len(log_var), 2.0 / (len(names) - 1)))[0]
    if confidence is not None:
        offsets = offsets + norm.ppf(confidence) * (keep * np.sqrt(noise) + (1 - keep) * np.sqrt(shared))
    return offsets, np.exp(0.5 * log_var)


def _shrunk(estimates: NDArray[np.float64], noise: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Each estimate pulled toward their mean by its share of noise (its sampling variance); and the weights kept."""
    centre = float(estimates.mean())
    signal = max(0.0, float(estimates.var(ddof=1)) - float(noise.mean()))
    keep = signal / (signal + noise) if signal > 0 else np.zeros(len(estimates))
    return centre + keep * (estimates - centre), keep


def gallery_thresholds(
    base: float,
    strangers: StrangerScores,
    n_fitted: int,
    n_models: int,
    offsets: ArrayLike,
    spreads: ArrayLike | None = None,
) -> tuple[float, NDArray[np.float64]]:
    """Per-speaker top-1 thresholds for a grown gallery, holding the stranger acceptance ``base`` had at ``n_fitted``.

    As :func:`gallery_threshold`, but each speaker enrolled later (one ``offsets`` / ``spreads``
    entry: the strangers' measured extra level and sd against it) gets its own threshold, set
    where a typical stranger is as likely to pass it as one of the ``n_models`` fitted-like
    speakers' shared threshold (equal tails on the fitted scale, as Z-norm makes them).  A
    speaker the strangers score high against then costs its own threshold, not every
    speaker's.  Returns (the fitted-like speakers' threshold, one per ``offsets`` entry); none
    below ``base``.

    >>> strangers = StrangerScores(np.zeros(100), np.ones(100))
    >>> own, extra = gallery_thresholds(1.645, strangers, 1, 1, offsets=[1.0])
    >>> round(own, 3), [round(float(t), 3) for t in extra]  # the strangers' extra level sits in its own threshold
    (1.955, [2.955])
    """
    off, sd = strangers._extra(offsets, spreads)
    if not np.isfinite(base):
        return float(base), np.full(len(off), float(base))
    far = strangers.accepted(base, n_fitted)
    if far <= 0.0 or (n_models <= n_fitted and not len(off)):
        return float(base), np.full(len(off), float(base))
    if n_models + len(off) < 1:
        raise ValueError("need at least one model")
    centre, spread = float(strangers.mean.mean()), float(strangers.sd.mean())
    unscale = np.tanh if strangers.fisher else (lambda x: x)
    lo, hi = -12.0, 12.0 + float(np.max((off + 12 * sd) / sd, initial=0.0))
    for _ in range(60):  # bisection on the common tail deviate c (to ~1e-16 of its range): acceptance falls as it rises
        c = 0.5 * (lo + hi)
        accepted = strangers._accepted(centre + c * spread, n_models, centre + off + c * sd, off, sd)
        lo, hi = (c, hi) if accepted > far else (lo, c)
    own = max(float(base), float(unscale(centre + hi * spread)))
    return own, np.maximum(float(base), np.asarray(unscale(centre + off + hi * sd), dtype=np.float64))
