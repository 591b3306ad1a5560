"""Train-fitted scalers of clip-level vectors: statistics per dimension, an encoder's embedding as a whole.

Clip statistics (MFCC means, deltas, sds) mix units, so each dimension is scaled to unit sd
(:class:`~sklearn.preprocessing.StandardScaler`).  A speaker encoder's embedding is one space
made for cosine scoring, and its ReLU units can be nearly silent for the few speakers a
scaler is fitted on: dividing each by its own sd (~1/100 of the median for the GE2E encoder on
8 LibriSpeech speakers) amplified those units ~100x, and a stranger active on them scored 0.9
against a new speaker who was too.  :class:`IsotropicScaler` centres it (as WeSpeaker's cosine
scoring subtracts a training mean) and divides every dimension by one sd, so directions, hence
cosines, are kept while the average variance is 1, the scale classifiers' search ranges assume.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data


class IsotropicScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Centre each dimension; divide all of them by one sd, the root of their mean variance.

    >>> X = np.array([[1.0, 10.0], [3.0, 10.1]])
    >>> s = IsotropicScaler().fit(X)
    >>> s.transform(X).round(3).tolist(), round(float(s.scale_[0]), 4)
    ([[-1.412, -0.071], [1.412, 0.071]], 0.708)
    """

    def fit(self, X: ArrayLike, y: Any = None) -> IsotropicScaler:
        Z = validate_data(self, X, dtype=np.float64)
        self.mean_ = Z.mean(axis=0)
        sd = float(np.sqrt(Z.var(axis=0).mean()))
        self.scale_ = np.full(Z.shape[1], sd if sd > 0 else 1.0)  # all rows equal: nothing to scale
        return self

    def transform(self, X: ArrayLike) -> NDArray[np.float64]:
        check_is_fitted(self, "mean_")
        Z = validate_data(self, X, dtype=np.float64, reset=False)
        return np.asarray((Z - self.mean_) / self.scale_, dtype=np.float64)


def vector_scaler(encoder: bool) -> StandardScaler | IsotropicScaler:
    """An unfitted scaler for one feature set's vectors: ``encoder`` (a speaker encoder's embedding) or statistics."""
    return IsotropicScaler() if encoder else StandardScaler()
