"""Audio front ends of the champion: waveform -> feature vector or embedding, exactly as in training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from voiceid.adapt.params import SET_NAME as ADAPTED_SET
from voiceid.features.params import VECTOR_SETS, FeatureParams
from voiceid.features.signal import feature_vector, logmel, to_pipeline_rate


@dataclass(frozen=True)
class FrontEnd:
    """How a waveform becomes model input: a clip-level vector set, ``logmel`` frames, or a
    pair of clip-level inputs for a joint set ``"a+b"`` (``"a+b+c"``: ``(a, (b, c))``), as
    ``FeatureBank.rows`` gives them.  ``dvector_ft`` (stage ``adapt``) embeds with the adapted
    encoder whose weights ``adapted`` holds, so the champion carries them.
    """

    feature_set: str
    params: FeatureParams
    adapted: bytes | None = field(default=None, repr=False, compare=False)

    def __call__(self, wave: np.ndarray, sample_rate: int) -> Any:
        wave = np.asarray(wave, dtype=np.float32).ravel()
        if self.feature_set == "logmel":
            return logmel(wave, sample_rate, self.params)  # (n_frames, n_mels)
        if self.feature_set in (*VECTOR_SETS, ADAPTED_SET):
            return self._vector(self.feature_set, wave, sample_rate)  # (dim,)
        first, _, rest = self.feature_set.partition("+")
        if rest and first in (*VECTOR_SETS, ADAPTED_SET):  # nested to the right, as FeatureBank.rows pairs the tables
            return self._vector(first, wave, sample_rate), FrontEnd(rest, self.params, self.adapted)(wave, sample_rate)
        raise ValueError(f"unknown feature set {self.feature_set!r}")

    def _vector(self, name: str, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        if name != ADAPTED_SET:
            return feature_vector(name, wave, sample_rate, self.params)
        if self.adapted is None:
            raise ValueError(f"{ADAPTED_SET} needs the adapted encoder's weights (stage adapt's {ADAPTED_SET}.pt)")
        from voiceid.adapt.finetune import load_encoder
        from voiceid.features.dvector import dvector

        # as the adapt stage: decoded at the pipeline rate first, then the encoder's own path
        wave = to_pipeline_rate(wave, sample_rate, self.params)
        return dvector(wave, self.params.sample_rate, self.params.dvector, model=load_encoder(self.adapted))


class Embedder(Protocol):
    def embed(self, inputs: list[np.ndarray]) -> NDArray[np.float64]: ...


class StatsEmbedder:
    """The seed's cosine baseline: clip statistics standardised by a train-fitted scaler."""

    def __init__(self, scaler: Any) -> None:
        self.scaler = scaler

    def embed(self, inputs: list[np.ndarray]) -> NDArray[np.float64]:
        X = np.stack([np.asarray(x, dtype=np.float64).ravel() for x in inputs])  # (n, dim)
        return np.asarray(self.scaler.transform(X), dtype=np.float64)


def leaves(x: Any) -> list[np.ndarray]:
    """The blocks of a (possibly nested) joint input, in order: ``(a, (b, c))`` -> ``[a, b, c]``."""
    return [leaf for part in x for leaf in leaves(part)] if isinstance(x, tuple) else [x]


class JointEmbedder:
    """Several clip-level sets as one embedding: each block standardised (train-fitted scaler),
    length-normalised and weighted ``1/sqrt(n_blocks)``, then concatenated.

    The cosine of two joint embeddings is the mean of the blocks' cosines, so a pretrained
    encoder (``dvector``) and spectral statistics (``mfcc60``) vote equally whatever their
    widths; the scoring back-end (WCCN, LDA, AS-norm) then works on the joint space, and a
    gallery enrolled with it is one vector per speaker like any other.

    >>> import numpy as np
    >>> from sklearn.preprocessing import StandardScaler
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    >>> joint = JointEmbedder([StandardScaler().fit(a), StandardScaler().fit(b)])
    >>> e = joint.embed(list(zip(a, b)))
    >>> e.shape, bool(np.allclose(np.linalg.norm(e, axis=1), 1.0))
    ((5, 6), True)
    """

    def __init__(self, scalers: list[Any]) -> None:
        self.scalers = scalers

    def embed(self, inputs: list[Any]) -> NDArray[np.float64]:
        flat = [leaves(x) for x in inputs]
        if any(len(x) != len(self.scalers) for x in flat):
            raise ValueError(f"joint inputs need {len(self.scalers)} blocks each")
        blocks = []
        for j, scaler in enumerate(self.scalers):
            X = np.stack([np.asarray(x[j], dtype=np.float64).ravel() for x in flat])  # (n, dim_j)
            Z = np.asarray(scaler.transform(X), dtype=np.float64)
            blocks.append(Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12))
        return np.concatenate(blocks, axis=1) / np.sqrt(len(blocks))  # (n, sum of dims), unit norm


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
