"""Scoring back-end for embeddings: centring, LDA / WCCN, length-norm, adaptive score normalisation.

The recipe of speaker-verification toolkits (Kaldi, WeSpeaker) for cosine scoring, as
scikit-learn style estimators fitted on *training* speakers only (enrolled train rows and
background speakers; never val or test):

* :class:`EmbeddingBackend` -- length-norm, subtract the training mean, optionally project
  with LDA (between- vs within-speaker scatter, scikit-learn's ``LinearDiscriminantAnalysis``
  with shrinkage) and whiten the within-speaker covariance (WCCN), length-norm again;
* :class:`AsNorm` -- adaptive symmetric normalisation: each cosine is z-scored against the
  top-N scores of both its sides against a cohort of impostor embeddings.  The cohort must
  hold no speaker that is ever a probe (voiceid uses the background speakers), or val and
  test scores would be normalised by their own voices.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> centres = rng.normal(size=(6, 8))
    >>> X = np.repeat(centres, 5, axis=0) + 0.3 * rng.normal(size=(30, 8))
    >>> y = np.repeat(np.arange(6), 5)
    >>> Z = EmbeddingBackend(lda_dim=4, wccn=True).fit(X, y).transform(X)
    >>> Z.shape, bool(np.allclose(np.linalg.norm(Z, axis=1), 1.0))
    ((30, 4), True)
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from voiceid.scoring.cosine import cohort_stats, cosine_matrix, l2_normalize


class EmbeddingBackend(BaseEstimator):
    """Length-norm -> centre -> [LDA to ``lda_dim``] -> [WCCN] -> length-norm, fitted on training speakers.

    Attributes (after ``fit``): ``mean_`` (d,), ``lda_`` (the fitted LDA or None),
    ``wccn_`` ((k, k) whitening matrix or None), ``dim_`` (output dimension).
    """

    def __init__(self, lda_dim: int | None = None, wccn: bool = False, wccn_shrinkage: float = 0.1) -> None:
        self.lda_dim = lda_dim
        self.wccn = wccn
        self.wccn_shrinkage = wccn_shrinkage

    def fit(self, X: ArrayLike, y: ArrayLike) -> EmbeddingBackend:
        x, labels = l2_normalize(X), np.asarray(y).astype(str)
        if len(x) != len(labels) or len(x) < 2:
            raise ValueError(f"need matching embeddings and labels (>= 2), found {len(x)} and {len(labels)}")
        self.mean_ = x.mean(axis=0)
        z = x - self.mean_
        self.lda_ = None
        n_classes = len(np.unique(labels))
        if self.lda_dim is not None:
            k = min(self.lda_dim, n_classes - 1, z.shape[1])
            if k < 1:
                raise ValueError(f"LDA needs >= 2 training speakers, found {n_classes}")
            lda = LinearDiscriminantAnalysis(n_components=k, solver="eigen", shrinkage="auto")
            with warnings.catch_warnings():
                # Background speakers often have one clip. Such a speaker adds no within-speaker
                # scatter and counts in the total, as in Kaldi's ivector-compute-lda; scikit-learn
                # warns twice per one-clip class (480 lines in one select stage of the embedded data)
                warnings.filterwarnings("ignore", message="Only one sample available", category=UserWarning)
                self.lda_ = lda.fit(z, labels)
            z = self.lda_.transform(z)
        self.wccn_ = None
        if self.wccn:
            within = np.zeros((z.shape[1], z.shape[1]))
            for spk in np.unique(labels):
                d = z[labels == spk] - z[labels == spk].mean(axis=0)
                within += d.T @ d
            within /= len(z)
            # shrink towards the average variance: ~5 clips per speaker give a noisy covariance
            within = (1 - self.wccn_shrinkage) * within + self.wccn_shrinkage * np.trace(within) / len(within) * np.eye(
                len(within)
            )
            self.wccn_ = np.linalg.cholesky(np.linalg.inv(within))  # z @ B has identity within-speaker covariance
            z = z @ self.wccn_
        self.dim_ = int(z.shape[1])
        return self

    def transform(self, X: ArrayLike) -> NDArray[np.float64]:
        if not hasattr(self, "mean_"):
            raise ValueError("EmbeddingBackend is not fitted; call fit(X, speakers) first")
        z = l2_normalize(X) - self.mean_
        if self.lda_ is not None:
            z = self.lda_.transform(z)
        if self.wccn_ is not None:
            z = z @ self.wccn_
        return l2_normalize(z)


class AsNorm(BaseEstimator):
    """Adaptive s-norm of cosine scores against a cohort of impostor embeddings (top ``top_n`` per side).

    ``fit(cohort)`` stores the (already back-end transformed) cohort; ``normalize(scores,
    probes, models)`` maps an (n_probes, n_models) cosine matrix to normalised scores.
    """

    def __init__(self, top_n: int = 100) -> None:
        self.top_n = top_n

    def fit(self, cohort: ArrayLike) -> AsNorm:
        c = l2_normalize(cohort)
        if c.ndim != 2 or len(c) < 2:
            raise ValueError(f"AS-norm needs a cohort of >= 2 embeddings, found {c.shape}")
        self.cohort_ = c
        self.top_n_ = int(min(self.top_n, len(c)))
        return self

    def normalize(self, scores: ArrayLike, probes: ArrayLike, models: ArrayLike) -> NDArray[np.float64]:
        s = np.asarray(scores, dtype=np.float64)
        mu_t, sd_t = cohort_stats(cosine_matrix(probes, self.cohort_), self.top_n_)  # (n,)
        mu_e, sd_e = cohort_stats(cosine_matrix(models, self.cohort_), self.top_n_)  # (m,)
        eps = 1e-6
        return 0.5 * ((s - mu_e[None, :]) / np.maximum(sd_e[None, :], eps) + (s - mu_t[:, None]) / np.maximum(sd_t[:, None], eps))
