"""Open-set decision rules and score calibration, fitted on validation data only.

A probe is *accepted* (answered with an enrolled speaker) when its open-set score reaches a
threshold; otherwise it is answered "unknown".  Three rules pick that threshold from
validation scores, each an estimator in the scikit-learn sense (``__init__`` stores
parameters, ``fit(scores, labels)`` sets ``threshold_``; ``labels`` are 1 for an enrolled
probe, 0 for an unknown one):

* :class:`FBetaThreshold` -- the seed work's rule: the point of the precision-recall curve
  with the best F-beta (beta > 1 favours recall: fewer enrolled speakers turned away);
* :class:`FprThreshold` -- TPR@FPR: the lowest threshold that accepts at most
  ``target_fpr`` of the unknown probes, so the true-positive rate is as high as it can be;
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

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator
from sklearn.metrics import precision_recall_curve

from voiceid.scoring.openset import detection_labels
from voiceid.scoring.verification import eer, far_threshold

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

    Attributes: ``threshold_``, ``fpr_`` (reached on the fit data, <= target), ``tpr_``.
    With few unknown probes the reachable rates are multiples of ``1 / n_unknown``.
    """

    def __init__(self, target_fpr: float = 0.05) -> None:
        self.target_fpr = target_fpr

    def fit(self, scores: ArrayLike, labels: ArrayLike) -> FprThreshold:
        if not 0.0 <= self.target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in [0, 1), found {self.target_fpr}")
        s, y = detection_labels(scores, labels)
        self.threshold_ = far_threshold(s, y == 0, self.target_fpr)
        self.fpr_ = float((s[y == 0] >= self.threshold_).mean())
        self.tpr_ = float((s[y == 1] >= self.threshold_).mean())
        return self


class EerThreshold(_Threshold):
    """Threshold at the equal error rate (:func:`voiceid.scoring.verification.eer`). Attributes: ``threshold_``, ``eer_``."""

    def fit(self, scores: ArrayLike, labels: ArrayLike) -> EerThreshold:
        s, y = detection_labels(scores, labels)
        rate, thr = eer(s, y)
        self.threshold_, self.eer_ = float(thr), float(rate)
        return self


def make_threshold(rule: ThresholdRule, beta: float = 1.0, target_fpr: float = 0.05) -> _Threshold:
    """The unfitted rule called ``rule`` (fbeta | fpr | eer)."""
    if rule == "fbeta":
        return FBetaThreshold(beta)
    if rule == "fpr":
        return FprThreshold(target_fpr)
    if rule == "eer":
        return EerThreshold()
    raise ValueError(f"unknown threshold rule {rule!r} (known: fbeta, fpr, eer)")


def fit_thresholds(scores: ArrayLike, labels: ArrayLike, beta: float, target_fpr: float) -> dict[str, _Threshold]:
    """All three rules fitted on the same validation scores, keyed fbeta / fpr / eer."""
    return {rule: make_threshold(rule, beta, target_fpr).fit(scores, labels) for rule in ("fbeta", "fpr", "eer")}
