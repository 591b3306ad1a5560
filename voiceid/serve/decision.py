"""A classifier's own open-set statistic: how much a probe looks like *some* enrolled speaker.

Per-class calibrated probabilities are a poor open-set score for some families: an SVC whose
temperature scaling fits a steep slope on separable folds, or a 1-nearest-neighbour vote, says
1.000 for every probe, strangers included. The statistics below are read from the model
itself, before any probability mapping, and are what the model decides on:

* an SVC inside the grid's temperature-scaling wrapper: the largest one-vs-rest decision value
  of the inner SVC (votes plus confidence, ``decision_function_shape="ovr"``);
* a nearest-neighbour classifier: minus the distance to the closest enrolled training clip
  (``kneighbors``), in the metric it was fitted with;
* a model with ``predict_proba`` (logistic regression, MLP, CatBoost): the log of its own top
  probability -- a softmax normalises away the part of the logits every class shares, which
  the largest raw decision value keeps (on the LibriSpeech excerpts it doubled logistic
  regression's EER);
* any other model: its largest ``decision_function`` value.

Selection calibrates the statistic on val (a logistic :class:`~voiceid.scoring.calibration.ScoreCalibrator`,
target "the answer is right"); it is the classifiers' open-set score by default, and the top
calibrated probability competes with it on val EER only when ``select.classifier_scores`` lists both.

>>> import numpy as np
>>> from sklearn.neighbors import KNeighborsClassifier
>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> X = np.array([[0.0, 0.0], [0.0, 1.0], [4.0, 4.0], [4.0, 5.0]])
>>> knn = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=1)).fit(X, ["a", "a", "b", "b"])
>>> s = open_set_statistic(knn, np.array([[0.0, 0.5], [20.0, -20.0]]))
>>> bool(s[0] > s[1])  # a probe among the training clips scores above a far-away one
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.pipeline import Pipeline


def _split(model: Any) -> tuple[Any, Any]:
    """(transform applied before the final estimator, final estimator); identity for a bare model."""
    if isinstance(model, Pipeline):
        return model[:-1], model[-1]
    return None, model


def _inner_decision(estimator: Any) -> Any | None:
    """The fitted base model of ``CalibratedClassifierCV(ensemble=False)`` when it has a decision function."""
    pairs = getattr(estimator, "calibrated_classifiers_", None)
    if not pairs or len(pairs) != 1:
        return None  # ensemble=True: k base models, none of them the deployed one
    base = getattr(pairs[0], "estimator", None)
    return base if hasattr(base, "decision_function") else None


def open_set_statistic(model: Any, X: ArrayLike) -> NDArray[np.float64]:
    """(n,) statistic per probe row of ``X``; higher means closer to an enrolled speaker. See the module docstring."""
    X = np.asarray(X)
    head, est = _split(model)
    Z = head.transform(X) if head is not None else X
    inner = _inner_decision(est)
    if inner is not None:
        return _top(inner.decision_function(Z))
    if hasattr(est, "kneighbors"):
        dist, _ = est.kneighbors(Z, n_neighbors=1)  # (n, 1)
        return -np.asarray(dist, dtype=np.float64)[:, 0]
    if hasattr(est, "predict_proba"):
        proba = np.asarray(est.predict_proba(Z), dtype=np.float64)  # (n, n_classes)
        return np.log(np.clip(proba.max(axis=1), 1e-300, 1.0))
    return _top(est.decision_function(Z))


def _top(values: Any) -> NDArray[np.float64]:
    v = np.asarray(values, dtype=np.float64)
    # a binary model gives one column, signed by class: its confidence in the class it picks is |v|
    return np.abs(v) if v.ndim == 1 else v.max(axis=1)
