"""Embedding utterances of any length with a trained (or exported) ECAPA network."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from voiceid.ecapa.model import ECAPATDNN, EcapaConfig


def embed(
    model: torch.nn.Module,
    feats: Sequence[np.ndarray],
    device: torch.device | None = None,
    batch_size: int = 16,
) -> NDArray[np.float32]:
    """Embeddings (n, embedding_dim) of variable-length (n_frames, n_mels) log-mel arrays.

    ``model`` is an :class:`~voiceid.ecapa.model.ECAPATDNN` (put in eval mode here) or the
    ``torch.export`` graph that ``tracking.load_model(uri, "pytorch")`` returns for a logged
    one (eval mode is baked in at export).  Utterances of equal length are batched together
    (no padding, so no frame of another utterance leaks into the pooling statistics).
    """
    config = getattr(model, "config", None)
    n_mels = config.n_mels if isinstance(config, EcapaConfig) else (feats[0].shape[-1] if feats else None)
    if isinstance(model, ECAPATDNN):
        model.eval()
    if not feats:
        return np.zeros((0, config.embedding_dim if isinstance(config, EcapaConfig) else 0), dtype=np.float32)
    device = device or next(model.parameters()).device
    by_len: dict[int, list[int]] = {}
    for i, f in enumerate(feats):
        if f.ndim != 2 or f.shape[1] != n_mels or len(f) == 0:
            raise ValueError(f"utterance {i}: expected (n_frames > 0, {n_mels}) features, found {f.shape}")
        by_len.setdefault(len(f), []).append(i)
    rows: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for idx in by_len.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                x = torch.from_numpy(np.stack([feats[i] for i in chunk]).astype(np.float32)).to(device)
                rows.update(zip(chunk, model(x).cpu().numpy()))  # (b, embedding_dim)
    return np.stack([rows[i] for i in range(len(feats))]).astype(np.float32)
