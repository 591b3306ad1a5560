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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, precision_recall_curve
from sklearn.model_selection import PredefinedSplit, StratifiedKFold

from voiceid.scoring import check_binary, det_curve, eer

ThresholdRule = Literal["fbeta", "fpr", "eer"]
CalibrationMethod = Literal["isotonic", "sigmoid"]
CalibrationMetric = Literal["log_loss", "brier", "open_brier"]


def _binary(scores: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Validated probe scores with labels 1 (enrolled probe) / 0 (unknown probe)."""
    s, y = check_binary(scores, labels, positive="enrolled", negative="unknown", what="probes")
    return s, y.astype(np.int64)


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
        s, y = _binary(scores, labels)
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
        s, y = _binary(scores, labels)
        p_fa, p_miss, thresholds = det_curve(s, y)
        i = int(np.argmax(p_fa <= self.target_fpr))  # p_fa falls as thresholds rise; +inf gives 0
        self.threshold_ = float(thresholds[i])
        self.fpr_, self.tpr_ = float(p_fa[i]), float(1.0 - p_miss[i])
        return self


class EerThreshold(_Threshold):
    """Threshold at the equal error rate (:func:`voiceid.scoring.eer`). Attributes: ``threshold_``, ``eer_``."""

    def fit(self, scores: ArrayLike, labels: ArrayLike) -> EerThreshold:
        s, y = _binary(scores, labels)
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


class ScoreCalibrator(BaseEstimator):
    """Logistic calibration of a 1-D score: ``p = 1 / (1 + exp(-(a_ * s + b_)))``.

    Fitted on validation trials (score of a probe against one enrolled speaker, label 1 when
    it is that speaker), it turns cosine similarities into probabilities.  Monotone, so a
    threshold on the probability is a threshold on the cosine (:meth:`inverse`).
    """

    def __init__(self, C: float = 1e4) -> None:
        self.C = C

    def fit(self, scores: ArrayLike, labels: ArrayLike) -> ScoreCalibrator:
        s, y = _binary(scores, labels)
        lr = LogisticRegression(C=self.C, max_iter=1000).fit(s[:, None], y)
        self.a_, self.b_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        if self.a_ <= 0:
            raise ValueError("calibration failed: higher scores are not more likely targets on this data")
        return self

    def predict_proba(self, scores: ArrayLike) -> NDArray[np.float64]:
        """Calibrated probability (same shape as ``scores``) that each trial is a target."""
        z = self.a_ * np.asarray(scores, dtype=np.float64) + self.b_
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function without overflow

    def inverse(self, p: float) -> float:
        """The raw score whose calibrated probability is ``p`` (0 -> -inf, 1 -> +inf)."""
        if p <= 0.0:
            return float("-inf")
        if p >= 1.0:
            return float("inf")
        return float((np.log(p / (1.0 - p)) - self.b_) / self.a_)


# --- classifier calibration ------------------------------------------------------------------


def brier_multiclass(y: ArrayLike, proba: ArrayLike, classes: ArrayLike) -> float:
    """Mean over rows of the squared distance between ``proba`` and the one-hot truth."""
    p = np.asarray(proba, dtype=np.float64)
    onehot = (np.asarray(y)[:, None] == np.asarray(classes)[None, :]).astype(np.float64)
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def calibration_losses(
    y: ArrayLike, proba: ArrayLike, classes: ArrayLike, unknown_proba: ArrayLike | None = None
) -> dict[str, float]:
    """log_loss and brier of probabilities whose columns follow ``classes``, and open_brier.

    ``open_brier`` adds probes of unknown speakers (``unknown_proba``), whose ideal output
    is all zeros (no enrolled speaker), to the Brier mean: it penalises a calibrator that
    is sure of *some* enrolled speaker for everyone -- what an open-set threshold suffers.
    """
    p = np.asarray(proba, dtype=np.float64)
    u = np.asarray(unknown_proba, dtype=np.float64) if unknown_proba is not None else np.zeros((0, p.shape[1]))
    brier = brier_multiclass(y, p, classes)
    return {
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1.0), labels=list(classes))),
        "brier": brier,
        "open_brier": float((brier * len(p) + np.sum(u**2)) / (len(p) + len(u))),
    }


def fit_calibrated(model: Any, X: ArrayLike, y: ArrayLike, method: CalibrationMethod) -> CalibratedClassifierCV:
    """``model`` (already fitted, never refitted) with a ``method`` calibrator fitted on (X, y)."""
    # The frozen model is not refitted, so the split only has to show every row to the
    # calibrator once: a single fold holding all rows (no per-class fold-size constraint).
    split = PredefinedSplit(np.zeros(len(y), dtype=int))
    return CalibratedClassifierCV(FrozenEstimator(model), method=method, cv=split).fit(X, y)


class CalibratedEnsemble:
    """Mean ``predict_proba`` of calibrated copies of one frozen classifier.

    Member i was calibrated on every validation fold but fold i; deploying the average of
    exactly these members means the scores thresholds were fitted on (out-of-fold for the
    enrolled val probes, this average for the unknown ones) come from calibrators fitted on
    as much data as the deployed one -- a calibrator refitted on all rows would be more
    confident at test time than on val, and a val-fitted FAR would not hold.
    """

    def __init__(self, members: Sequence[CalibratedClassifierCV]) -> None:
        if not members:
            raise ValueError("need at least one calibrated member")
        self.members = list(members)
        self.classes_ = np.asarray(self.members[0].classes_)
        for m in self.members[1:]:
            if not np.array_equal(m.classes_, self.classes_):
                raise ValueError("calibrated members disagree on the classes")

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        return np.mean([m.predict_proba(X) for m in self.members], axis=0)  # (n, n_classes)

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


@dataclass(frozen=True)
class CalibrationChoice:
    """Outcome of :func:`calibrate_classifier`.

    ``calibrated`` is the model to deploy (``predict_proba``, columns follow its
    ``classes_``); ``losses[method]`` the cross-fitted log_loss, brier and open_brier of each
    method tried; ``oof_proba`` the chosen method's out-of-fold probabilities of the
    validation rows, for fitting thresholds on scores no calibrator saw.
    """

    calibrated: CalibratedEnsemble
    method: str
    losses: dict[str, dict[str, float]]
    oof_proba: NDArray[np.float64]
    n_folds: int


def calibrate_classifier(
    model: Any,
    X: ArrayLike,
    y: ArrayLike,
    methods: Sequence[CalibrationMethod] = ("isotonic", "sigmoid"),
    metric: CalibrationMetric = "log_loss",
    max_folds: int = 5,
    seed: int = 0,
    X_extra: ArrayLike | None = None,
) -> CalibrationChoice:
    """Calibrate a fitted classifier on validation rows (X, y), choosing the method honestly.

    k-fold cross-fitting on the validation rows (k = min(max_folds, smallest class count)):
    for each method, calibrator i is fitted on all folds but fold i and scores fold i, so
    isotonic's ability to memorise its fitting rows does not win by itself.  ``X_extra``
    (unknown speakers' val probes, scored by the average of the k calibrators) enters
    ``open_brier`` only.  The winner's k calibrators, averaged, are the deployed model
    (:class:`CalibratedEnsemble`).  When a class has a single validation row no fold can
    hold it out: then the first method is fitted on all rows and ``oof_proba`` is in-sample.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    classes = np.asarray(model.classes_)
    missing = sorted(set(classes.tolist()) - set(y.tolist()))
    extra = sorted(set(y.tolist()) - set(classes.tolist()))
    if missing or extra:
        raise ValueError(
            f"validation labels must match the model's classes: missing {missing[:5]}, unknown {extra[:5]}"
        )
    if not methods:
        raise ValueError("methods must name at least one calibration method")
    counts = np.unique(y, return_counts=True)[1]
    k = int(min(max_folds, counts.min()))
    if k < 2:
        single = CalibratedEnsemble([fit_calibrated(model, X, y, methods[0])])
        return CalibrationChoice(single, methods[0], {}, single.predict_proba(X), 0)
    Xe = np.asarray(X_extra) if X_extra is not None else X[:0]
    folds = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(X, y))
    fitted: dict[str, tuple[CalibratedEnsemble, NDArray[np.float64]]] = {}
    losses: dict[str, dict[str, float]] = {}
    for method in methods:
        members, proba = [], np.zeros((len(y), len(classes)))
        for fit_idx, held_idx in folds:
            members.append(fit_calibrated(model, X[fit_idx], y[fit_idx], method))
            proba[held_idx] = members[-1].predict_proba(X[held_idx])
        ensemble = CalibratedEnsemble(members)
        fitted[method] = (ensemble, proba)
        unknown = ensemble.predict_proba(Xe) if len(Xe) else None
        losses[method] = calibration_losses(y, proba, ensemble.classes_, unknown)
    best = min(methods, key=lambda m: (losses[m][metric], losses[m]["log_loss"]))
    return CalibrationChoice(fitted[best][0], best, losses, fitted[best][1], k)
