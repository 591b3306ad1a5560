"""Open-set decision rules and score calibration, fitted on validation data only.

A probe is *accepted* (answered with an enrolled speaker) when its open-set score reaches a
threshold; otherwise it is answered "unknown".  Three rules pick that threshold from
validation scores, each an estimator in the scikit-learn sense (``__init__`` stores
parameters, ``fit(scores, labels)`` sets ``threshold_``; ``labels`` are 1 for an enrolled
probe, 0 for an unknown one):

* :class:`FBetaThreshold` -- the seed work's rule: the point of the precision-recall curve
  with the best F-beta (beta > 1 favours recall: fewer enrolled speakers turned away);
* :class:`FprThreshold` -- TPR@FPR: the lowest threshold that accepts at most
  ``target_fpr`` of the unknown probes, so the true-positive rate is as high as it can be
  (with ``confidence``: a threshold that meets the target with that confidence on *new*
  strangers, from a bootstrap over the unknown speakers);
* :class:`EerThreshold` -- where false accepts and false rejects are equally likely.

Scores are turned into probabilities by calibrators fitted on validation data too:
:class:`ScoreCalibrator` (logistic regression on a 1-D cosine score, for embedding models)
and :func:`calibrate_classifier`, which wraps an already fitted classifier in
``CalibratedClassifierCV(FrozenEstimator(model))`` -- scikit-learn's current API for
pre-fitted estimators (``cv="prefit"`` is gone) -- once per validation fold, picks isotonic
or sigmoid by cross-fitted log-loss, Brier or open-set Brier score, and deploys the fold
calibrators' average (:class:`CalibratedEnsemble`).

Example:
    >>> scores = [0.9, 0.8, 0.7, 0.3, 0.6, 0.2]
    >>> labels = [1, 1, 1, 1, 0, 0]
    >>> FprThreshold(target_fpr=0.0).fit(scores, labels).threshold_
    0.7
    >>> EerThreshold().fit(scores, labels).threshold_
    0.7
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator
from sklearn.metrics import precision_recall_curve

from voiceid.scoring.calibration import log_odds
from voiceid.scoring.openset import detection_labels
from voiceid.scoring.verification import eer, far_threshold, permitted_accepts

ThresholdRule = Literal["fbeta", "fpr", "eer"]


class _Threshold(BaseEstimator):
    """Shared decision: accept every score >= ``threshold_``."""

    threshold_: float

    def accept(self, scores: ArrayLike) -> NDArray[np.bool_]:
        """True where a probe is accepted as enrolled."""
        if not hasattr(self, "threshold_"):
            raise ValueError(f"{type(self).__name__} is not fitted; call fit(scores, labels) first")
        return np.asarray(scores, dtype=np.float64) >= self.threshold_


class FBetaThreshold(_Threshold):
    """Threshold with the best F-beta on the precision-recall curve of enrolled-vs-unknown.

    Attributes (after ``fit``): ``threshold_``, ``fbeta_``, ``precision_``, ``recall_``.
    """

    def __init__(self, beta: float = 1.0) -> None:
        self.beta = beta

    def fit(self, scores: ArrayLike, labels: ArrayLike) -> FBetaThreshold:
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, found {self.beta}")
        s, y = detection_labels(scores, labels)
        precision, recall, thresholds = precision_recall_curve(y, s)
        # The last PR point (recall 0, precision 1) has no threshold; drop it.
        p, r = precision[:-1], recall[:-1]
        b2 = self.beta**2
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(p + r > 0, (1 + b2) * p * r / (b2 * p + r), 0.0)
        # Ties go to the highest threshold: the same F-beta with fewer unknowns let in.
        i = len(f) - 1 - int(np.argmax(f[::-1]))
        self.threshold_ = float(thresholds[i])
        self.fbeta_, self.precision_, self.recall_ = float(f[i]), float(p[i]), float(r[i])
        return self


class FprThreshold(_Threshold):
    """TPR@FPR: the lowest threshold whose false-positive rate is at most ``target_fpr``.

    Attributes: ``threshold_``, ``fpr_`` (reached on the fit data, <= target), ``tpr_``,
    ``point_threshold_`` (the plain rule's threshold).  With few unknown probes the reachable
    rates are multiples of ``1 / n_unknown``.

    The plain rule meets the target on *these* unknown probes.  Their scores cluster by
    speaker (one loud stranger's clips all score high), so with the 5-20 unknown speakers a
    val set has, the share of *new* strangers accepted at that threshold is above the target
    more often than not, and on average by half again (simulated in tests/test_thresholds.py).
    With ``confidence`` (e.g. 0.9) the rule is refitted on ``n_resamples`` *smoothed* bootstrap
    resamples of the unknown speakers (``groups``; each probe its own group without them):
    speakers are drawn with replacement and each drawn speaker's scores are shifted together
    by a normal deviate (Silverman's bandwidth of the speaker mean scores), so a resample can
    hold a stranger louder than any seen -- a plain bootstrap cannot, and with ten speakers
    covers far less than it claims.  ``threshold_`` is the ``confidence`` quantile of the
    resampled thresholds (never below the plain one): the target holds for new strangers in
    about that share of draws when speaker effects are roughly normal, in fewer when a few
    strangers are far louder than the rest.  Probabilities (scores in [0, 1]) are shifted on
    the log-odds scale.  Enrolled probes are not resampled; ``tpr_`` shows the price on them.
    """

    def __init__(self, target_fpr: float = 0.05, confidence: float | None = None, n_resamples: int = 200, seed: int = 0) -> None:
        self.target_fpr = target_fpr
        self.confidence = confidence
        self.n_resamples = n_resamples
        self.seed = seed

    def fit(self, scores: ArrayLike, labels: ArrayLike, groups: ArrayLike | None = None) -> FprThreshold:
        if not 0.0 <= self.target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in [0, 1), found {self.target_fpr}")
        if self.confidence is not None and not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1) or None, found {self.confidence}")
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples must be >= 1, found {self.n_resamples}")
        s, y = detection_labels(scores, labels)
        g = np.arange(len(s)) if groups is None else np.asarray(groups)
        if g.shape != s.shape:
            raise ValueError(f"need one group per score, found {g.shape} for {s.shape}")
        self.point_threshold_ = far_threshold(s, y == 0, self.target_fpr)
        self.threshold_ = self.point_threshold_
        if self.confidence is not None:
            resampled = _smoothed_speaker_thresholds(s[y == 0], g[y == 0], self.target_fpr, self.n_resamples, self.seed)
            self.threshold_ = max(self.point_threshold_, float(np.quantile(resampled, self.confidence, method="higher")))
        self.fpr_ = float((s[y == 0] >= self.threshold_).mean())
        self.tpr_ = float((s[y == 1] >= self.threshold_).mean())
        return self


def _smoothed_speaker_thresholds(
    unknown: NDArray[np.float64], speaker: NDArray[Any], target_fpr: float, n: int, seed: int
) -> NDArray[np.float64]:
    """(n,) the plain FPR threshold on each smoothed speaker-bootstrap resample of the unknown scores."""
    prob = bool(np.all((unknown >= 0.0) & (unknown <= 1.0)))
    z = log_odds(unknown, eps=1e-9) if prob else unknown
    _, sp = np.unique(speaker, return_inverse=True)  # probe -> speaker index
    k = int(sp.max()) + 1
    members = [z[sp == i] for i in range(k)]
    means = np.array([m.mean() for m in members])
    # Silverman's rule on the speaker means: the spread of a new speaker's level the data can support
    h = 1.06 * float(means.std(ddof=1)) * k**-0.2 if k > 1 else 0.0
    rng = np.random.default_rng(seed)
    out = np.empty(n)
    for i in range(n):
        drawn = rng.integers(0, k, k)
        shift = rng.normal(0.0, h, k)
        r = np.sort(np.concatenate([members[j] + d for j, d in zip(drawn, shift, strict=True)]))[::-1]
        allowed = permitted_accepts(target_fpr, len(r))
        # the lowest threshold accepting no more: just above the first stranger that must be turned away
        out[i] = np.nextafter(r[allowed], np.inf) if allowed < len(r) else -np.inf
    return 1.0 / (1.0 + np.exp(-out)) if prob else out


class EerThreshold(_Threshold):
    """Threshold at the equal error rate (:func:`voiceid.scoring.verification.eer`). Attributes: ``threshold_``, ``eer_``."""

    def fit(self, scores: ArrayLike, labels: ArrayLike) -> EerThreshold:
        s, y = detection_labels(scores, labels)
        rate, thr = eer(s, y)
        self.threshold_, self.eer_ = float(thr), float(rate)
        return self


def make_threshold(
    rule: ThresholdRule, beta: float = 1.0, target_fpr: float = 0.05, confidence: float | None = None, seed: int = 0
) -> _Threshold:
    """The unfitted rule called ``rule`` (fbeta | fpr | eer); ``confidence``/``seed``: see :class:`FprThreshold`."""
    if rule == "fbeta":
        return FBetaThreshold(beta)
    if rule == "fpr":
        return FprThreshold(target_fpr, confidence=confidence, seed=seed)
    if rule == "eer":
        return EerThreshold()
    raise ValueError(f"unknown threshold rule {rule!r} (known: fbeta, fpr, eer)")


def fit_thresholds(
    scores: ArrayLike,
    labels: ArrayLike,
    beta: float,
    target_fpr: float,
    groups: ArrayLike | None = None,
    confidence: float | None = None,
    seed: int = 0,
) -> dict[str, _Threshold]:
    """All three rules fitted on the same validation scores, keyed fbeta / fpr / eer.

    ``groups`` (the probes' speakers) and ``confidence`` reach the ``fpr`` rule only.
    """
    out: dict[str, _Threshold] = {}
    for rule in ("fbeta", "fpr", "eer"):
        t = make_threshold(rule, beta, target_fpr, confidence, seed)
        out[rule] = t.fit(scores, labels, groups) if isinstance(t, FprThreshold) else t.fit(scores, labels)
    return out
