"""Galleries: extra speaker centroids (enrolled after training) as an ``.npz`` tied to one embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voiceid.scoring.centroids import Centroids
from voiceid.scoring.cosine import l2_normalize


def save_gallery(path: str | Path, gallery: Centroids, embedder_id: str) -> Path:
    """Write extra speakers' centroids (``.npz``), tagged with the embedder that made them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        speakers=np.asarray(gallery.speakers, dtype=str),
        vectors=np.asarray(gallery.vectors, dtype=np.float64),
        embedder_id=np.asarray(embedder_id),
    )
    return path


def load_gallery(path: str | Path, embedder_id: str | None = None) -> Centroids:
    """Read a gallery; refuse one made by another embedder than ``embedder_id``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            speakers = [str(s) for s in data["speakers"]]
            vectors = np.asarray(data["vectors"], dtype=np.float64)
            made_by = str(data["embedder_id"])
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable gallery file ({exc})") from exc
    if embedder_id is not None and made_by != embedder_id:
        raise ValueError(f"{path}: gallery was made by embedder {made_by!r}, this champion uses {embedder_id!r}")
    if vectors.ndim != 2 or len(vectors) != len(speakers):
        raise ValueError(f"{path}: {len(speakers)} speakers but vectors of shape {vectors.shape}")
    return Centroids(speakers, l2_normalize(vectors))
