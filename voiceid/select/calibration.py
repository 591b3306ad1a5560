"""Calibrating classifiers' probabilities on validation data: isotonic / sigmoid, chosen by a loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import log_loss
from sklearn.model_selection import PredefinedSplit, StratifiedKFold

CalibrationMethod = Literal["isotonic", "sigmoid"]


CalibrationMetric = Literal["log_loss", "brier", "open_brier"]


def brier_multiclass(y: ArrayLike, proba: ArrayLike, classes: ArrayLike) -> float:
    """Mean over rows of the squared distance between ``proba`` and the one-hot truth."""
    p = np.asarray(proba, dtype=np.float64)
    onehot = (np.asarray(y)[:, None] == np.asarray(classes)[None, :]).astype(np.float64)
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def calibration_losses(
    y: ArrayLike, proba: ArrayLike, classes: Sequence[Any] | np.ndarray, unknown_proba: ArrayLike | None = None
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


def fit_calibrated(model: Any, X: ArrayLike, y: Sequence[Any] | np.ndarray, method: CalibrationMethod) -> CalibratedClassifierCV:
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
        raise ValueError(f"validation labels must match the model's classes: missing {missing[:5]}, unknown {extra[:5]}")
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
