"""voiceid.scoring.scaling: an encoder's embedding scaled as a whole, statistics per dimension."""

from __future__ import annotations

import pickle

import numpy as np
from sklearn.preprocessing import StandardScaler

from voiceid.scoring.cosine import cosine_matrix
from voiceid.scoring.scaling import IsotropicScaler, vector_scaler


def test_isotropic_scaling_keeps_the_centred_cosines_and_gives_unit_mean_variance() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 8)) * np.r_[np.full(4, 1.0), np.full(4, 1e-3)] + 3.0  # 4 near-silent units
    Z = IsotropicScaler().fit(X).transform(X)
    centred = X - X.mean(axis=0)
    np.testing.assert_allclose(cosine_matrix(Z, Z), cosine_matrix(centred, centred), atol=1e-12)
    assert abs(Z.var(axis=0).mean() - 1.0) < 1e-12
    # per dimension, the silent units would weigh as much as the voice
    S = StandardScaler().fit(X).transform(X)
    assert S[:, 4:].var() > 0.99 and Z[:, 4:].var() < 1e-5


def test_constant_rows_are_centred_without_dividing_by_zero() -> None:
    X = np.ones((3, 4))
    assert np.array_equal(IsotropicScaler().fit(X).transform(X), np.zeros((3, 4)))


def test_the_scaler_is_chosen_by_what_the_rows_are_and_survives_pickling() -> None:
    assert isinstance(vector_scaler(encoder=True), IsotropicScaler)
    assert isinstance(vector_scaler(encoder=False), StandardScaler)
    X = np.random.default_rng(1).normal(size=(10, 3))
    s = pickle.loads(pickle.dumps(IsotropicScaler().fit(X)))
    np.testing.assert_allclose(s.transform(X), IsotropicScaler().fit(X).transform(X))
