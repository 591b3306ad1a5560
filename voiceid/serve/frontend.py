"""Audio front ends of the champion: waveform -> feature vector or embedding, exactly as in training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from voiceid.features.params import VECTOR_SETS, FeatureParams
from voiceid.features.signal import feature_vector, logmel


@dataclass(frozen=True)
class FrontEnd:
    """How a waveform becomes model input: a clip-level vector set, or ``logmel`` frames."""

    feature_set: str
    params: FeatureParams

    def __call__(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        wave = np.asarray(wave, dtype=np.float32).ravel()
        if self.feature_set == "logmel":
            return logmel(wave, sample_rate, self.params)  # (n_frames, n_mels)
        if self.feature_set in VECTOR_SETS:
            return feature_vector(self.feature_set, wave, sample_rate, self.params)  # (dim,)
        raise ValueError(f"unknown feature set {self.feature_set!r}")


class Embedder(Protocol):
    def embed(self, inputs: list[np.ndarray]) -> NDArray[np.float64]: ...


class StatsEmbedder:
    """The seed's cosine baseline: clip statistics standardised by a train-fitted scaler."""

    def __init__(self, scaler: Any) -> None:
        self.scaler = scaler

    def embed(self, inputs: list[np.ndarray]) -> NDArray[np.float64]:
        X = np.stack([np.asarray(x, dtype=np.float64).ravel() for x in inputs])  # (n, dim)
        return np.asarray(self.scaler.transform(X), dtype=np.float64)


class EcapaEmbedder:
    """An ECAPA-TDNN network on log-mel frames (torch is imported only when used)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def embed(self, inputs: list[np.ndarray]) -> NDArray[np.float64]:
        from voiceid.ecapa.embed import embed

        return embed(self.model, inputs).astype(np.float64)  # (n, embedding_dim)


class BackendEmbedder:
    """Another embedder followed by a fitted scoring back-end (:class:`voiceid.scoring.backend.EmbeddingBackend`).

    Enrolled galleries are built with the champion's embedder, so they live in the back-end's
    space too.
    """

    def __init__(self, inner: Embedder, backend: Any) -> None:
        self.inner = inner
        self.backend = backend

    def embed(self, inputs: list[np.ndarray]) -> NDArray[np.float64]:
        return np.asarray(self.backend.transform(self.inner.embed(inputs)), dtype=np.float64)
