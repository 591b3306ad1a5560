"""Closed-set identification metrics (pure numpy / scikit-learn): one definition for the grid, ECAPA and selection."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import confusion_matrix, top_k_accuracy_score


def predict_labels(proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Arg-max labels from class probabilities (CatBoost's own predict returns a column)."""
    return np.asarray(classes)[np.argmax(proba, axis=1)]


def label_metrics(true: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """accuracy, f1_weighted and f1_macro of predicted labels (sklearn's definitions, zero_division=0).

    Macro and weighted F1 run over the labels that occur as truth or prediction, as
    scikit-learn does by default; written in numpy because the bootstrap calls it thousands
    of times.

    >>> m = label_metrics(["a", "a", "b", "c"], ["a", "b", "b", "c"])
    >>> round(m["accuracy"], 3), round(m["f1_macro"], 3), round(m["f1_weighted"], 3)
    (0.75, 0.778, 0.75)
    """
    t, p = np.asarray(true).astype(str), np.asarray(pred).astype(str)
    if len(t) == 0 or len(t) != len(p):
        raise ValueError(f"need equally many true and predicted labels, found {len(t)} and {len(p)}")
    labels, idx = np.unique(np.concatenate([t, p]), return_inverse=True)
    ti, pi = idx[: len(t)], idx[len(t) :]
    n = len(labels)
    tp = np.bincount(ti[ti == pi], minlength=n).astype(np.float64)
    support = np.bincount(ti, minlength=n).astype(np.float64)
    predicted = np.bincount(pi, minlength=n).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    return {
        "accuracy": float((t == p).mean()),
        "f1_weighted": float((f1 * support).sum() / support.sum()),
        "f1_macro": float(f1.mean()),
    }


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """accuracy, f1_weighted, f1_macro and top5_accuracy from predicted probabilities.

    ``classes`` orders the columns of ``proba``; a true label outside it counts as an error.
    """
    y_true = np.asarray(y_true)
    classes = np.asarray(classes)
    if proba.shape != (len(y_true), len(classes)):
        raise ValueError(f"proba has shape {proba.shape}, expected ({len(y_true)}, {len(classes)})")
    y_pred = predict_labels(proba, classes)
    known = np.isin(y_true, classes)
    k = min(5, len(classes))
    top5 = float(known.mean()) if len(y_true) else 0.0  # with <= 5 classes every known label is in the top 5
    if len(classes) > k and known.any():
        top5 = float(top_k_accuracy_score(y_true[known], proba[known], k=k, labels=classes)) * top5
    return {**label_metrics(y_true, y_pred), "top5_accuracy": top5}


def confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Confusion counts with rows/columns in ``labels`` order."""
    return confusion_matrix(y_true, y_pred, labels=labels)
