"""Cosine scoring of embeddings (pure numpy)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def l2_normalize(x: ArrayLike, eps: float = 1e-12) -> NDArray[np.float64]:
    """Rows scaled to unit length (a zero row stays zero)."""
    a = np.asarray(x, dtype=np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), eps)


def cosine_matrix(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """All-pairs cosine similarity: (n, d) x (m, d) -> (n, m).

    Example:
        >>> cosine_matrix([[1.0, 0.0], [1.0, 1.0]], [[2.0, 0.0]]).round(4)
        array([[1.    ],
               [0.7071]])
    """
    return l2_normalize(a) @ l2_normalize(b).T


def cosine_pairs(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Row-wise cosine similarity of two (n, d) arrays -> (n,): one score per trial."""
    a2, b2 = l2_normalize(a), l2_normalize(b)
    if a2.shape != b2.shape:
        raise ValueError(f"trial sides differ in shape: {a2.shape} vs {b2.shape}")
    return np.einsum("ij,ij->i", a2, b2)


def s_norm(
    scores: ArrayLike,
    enroll_cohort: ArrayLike,
    test_cohort: ArrayLike,
    top_k: int | None = None,
) -> NDArray[np.float64]:
    """Symmetric score normalisation, optionally adaptive (AS-norm with the ``top_k`` closest).

    ``scores`` (n,) are raw trial scores; ``enroll_cohort`` / ``test_cohort`` (n, n_cohort) are
    each trial side's scores against an impostor cohort (speakers outside the trials).  Each raw
    score is z-normalised by both sides' cohort statistics and the two are averaged, which
    removes per-speaker score offsets so one threshold fits all speakers.

    Example:
        >>> s_norm([2.0], [[0.0, 2.0]], [[1.0, 3.0]])  # z = 1 against side 1, 0 against side 2
        array([0.5])
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    sides = [np.asarray(c, dtype=np.float64) for c in (enroll_cohort, test_cohort)]
    for c in sides:
        if c.ndim != 2 or c.shape[0] != s.size:
            raise ValueError(f"cohort scores must have shape ({s.size}, n_cohort), found {c.shape}")
        if top_k is not None and not 1 <= top_k <= c.shape[1]:
            raise ValueError(f"top_k must be in 1..{c.shape[1]}, found {top_k}")
    out = np.zeros_like(s)
    for c in sides:
        mean, sd = cohort_stats(c, top_k)
        # A degenerate (constant) cohort contributes nothing rather than dividing by zero.
        out += 0.5 * np.where(sd > 1e-6, (s - mean) / np.where(sd > 1e-6, sd, 1.0), 0.0)
    return out


def cohort_stats(cohort_scores: ArrayLike, top_k: int | None = None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and standard deviation of each row's cohort scores, over its ``top_k`` highest when given.

    The closest impostors are the ones that matter at the threshold, hence *adaptive* s-norm.

    >>> m, sd = cohort_stats([[0.0, 2.0, 1.0]], top_k=2)
    >>> float(m[0]), float(sd[0])
    (1.5, 0.5)
    """
    c = np.asarray(cohort_scores, dtype=np.float64)
    if top_k is not None:
        c = -np.sort(-c, axis=1)[:, :top_k]
    return c.mean(axis=1), c.std(axis=1)
