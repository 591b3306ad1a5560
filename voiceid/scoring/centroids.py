"""Speaker centroids of unit embeddings: building, merging, cosine identification (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from voiceid.scoring.cosine import cosine_matrix, l2_normalize


class Centroids(NamedTuple):
    """One unit-length mean embedding per enrolled speaker (rows follow ``speakers``)."""

    speakers: list[str]
    vectors: NDArray[np.float64]  # (n_speakers, embedding_dim)


def speaker_centroids(emb: ArrayLike, speakers: Sequence[str] | NDArray[np.str_]) -> Centroids:
    """Mean of each speaker's unit-length embeddings, re-normalised (speakers sorted)."""
    e = l2_normalize(emb)
    spk = np.asarray(speakers)
    if len(spk) != len(e):
        raise ValueError(f"{len(e)} embeddings but {len(spk)} speaker labels")
    names = sorted(set(spk.tolist()))
    return Centroids(names, l2_normalize(np.stack([e[spk == s].mean(axis=0) for s in names])))


def identify(emb: ArrayLike, centroids: Centroids) -> tuple[list[str], NDArray[np.float64]]:
    """Closed-set decision: the enrolled speaker with the highest cosine, and all the scores."""
    scores = cosine_matrix(emb, centroids.vectors)  # (n, n_speakers)
    return [centroids.speakers[i] for i in scores.argmax(axis=1)], scores


def merge(base: Centroids, extra: Centroids | None) -> Centroids:
    """``base`` plus ``extra``; a gallery speaker with an enrolled name replaces that centroid."""
    if extra is None or not extra.speakers:
        return base
    if extra.vectors.shape[1] != base.vectors.shape[1]:
        raise ValueError(f"gallery vectors have {extra.vectors.shape[1]} dims, the embedder gives {base.vectors.shape[1]}")
    keep = [i for i, s in enumerate(base.speakers) if s not in set(extra.speakers)]
    return Centroids(
        [base.speakers[i] for i in keep] + list(extra.speakers),
        np.concatenate([base.vectors[keep], l2_normalize(extra.vectors)]),
    )
