"""The champion: audio in, speaker (or "unknown") and a calibrated score out.

Everything a decision needs travels in one picklable :class:`Champion`:

* a :class:`FrontEnd` (which feature set, with the ``features`` params that define it);
* the *primary* scorer, the candidate that won the selection: either a calibrated classifier
  (:class:`ClassifierScorer`, score = calibrated probability of the top speaker) or an
  embedding model with enrolled centroids and a logistic calibrator of cosine scores
  (:class:`EmbeddingScorer`, score = calibrated probability of the closest centroid);
* its threshold (fitted on validation data) and the label map (the enrolled speakers);
* an *embedding* scorer with its own validation threshold, so speakers enrolled later
  (a gallery of extra centroids, :func:`save_gallery`) are identified without retraining;
  when the winner is itself an embedding model the two are the same object.

This module is MLflow-free; :mod:`voiceid.tracking.pyfunc` wraps a Champion as an MLflow
pyfunc model whose ``predict`` calls :meth:`Champion.predict_frame`.

Example (with fitted parts, see tests/test_champion.py):
    champion.identify(wave, 16000)                  # Decision(speaker='ls0019', score=0.97, ...)
    champion.identify(wave, 16000, gallery=extra)   # also considers the gallery's speakers
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from voiceid.scoring.calibration import ScoreCalibrator
from voiceid.scoring.centroids import Centroids, merge
from voiceid.scoring.cosine import cosine_matrix
from voiceid.scoring.openset import UNKNOWN
from voiceid.serve.frontend import Embedder, FrontEnd
from voiceid.serve.gallery import load_gallery

OUTPUT_COLUMNS = ("speaker", "score", "threshold", "known", "error")


class Scored(NamedTuple):
    """Top-1 speaker and open-set score per probe (score is a calibrated probability)."""

    pred: NDArray[np.str_]
    score: NDArray[np.float64]


class ClassifierScorer:
    """A fitted classifier wrapped with its validation calibrator (``predict_proba``)."""

    kind = "classifier"

    def __init__(self, front: FrontEnd, calibrated: Any) -> None:
        self.front = front
        self.calibrated = calibrated

    @property
    def speakers(self) -> list[str]:
        return [str(s) for s in self.calibrated.classes_]

    def score_inputs(self, inputs: list[np.ndarray]) -> Scored:
        X = np.stack([np.asarray(x).ravel() for x in inputs])  # (n, dim)
        proba = self.calibrated.predict_proba(X)  # (n, n_speakers)
        best = proba.argmax(axis=1)
        return Scored(np.asarray(self.speakers)[best], proba[np.arange(len(best)), best])


class EmbeddingScorer:
    """Embedder + enrolled centroids + logistic calibration of the closest cosine score."""

    kind = "embedding"

    def __init__(
        self, front: FrontEnd, embedder: Embedder, centroids: Centroids, calibrator: ScoreCalibrator, embedder_id: str
    ) -> None:
        self.front = front
        self.embedder = embedder
        self.centroids = centroids
        self.calibrator = calibrator
        self.embedder_id = embedder_id  # galleries record it, so vectors of another model are refused

    @property
    def speakers(self) -> list[str]:
        return list(self.centroids.speakers)

    def cosines(self, emb: NDArray[np.float64], gallery: Centroids | None = None) -> tuple[Centroids, NDArray[np.float64]]:
        cents = merge(self.centroids, gallery)
        return cents, cosine_matrix(emb, cents.vectors)  # (n, n_speakers)

    def score_embeddings(self, emb: NDArray[np.float64], gallery: Centroids | None = None) -> Scored:
        cents, cos = self.cosines(emb, gallery)
        best = cos.argmax(axis=1)
        return Scored(np.asarray(cents.speakers)[best], self.calibrator.predict_proba(cos[np.arange(len(best)), best]))

    def score_inputs(self, inputs: list[np.ndarray], gallery: Centroids | None = None) -> Scored:
        return self.score_embeddings(self.embedder.embed(inputs), gallery)


class Decision(NamedTuple):
    speaker: str
    score: float
    threshold: float
    known: bool


@dataclass
class Champion:
    """The selected system; see the module docstring."""

    family: str
    run_id: str | None
    primary: ClassifierScorer | EmbeddingScorer
    threshold: float
    threshold_rule: str
    embedding: EmbeddingScorer | None
    embedding_threshold: float | None
    sample_rate: int

    @property
    def label_map(self) -> list[str]:
        """The enrolled speakers, in the primary scorer's column order."""
        return self.primary.speakers

    def _scorer_for(self, gallery: Centroids | None) -> tuple[ClassifierScorer | EmbeddingScorer, float]:
        if gallery is None:
            return self.primary, self.threshold
        if self.embedding is None or self.embedding_threshold is None:
            raise ValueError("this champion has no embedding model, so it cannot use a gallery")
        return self.embedding, self.embedding_threshold

    def embed(self, wave: np.ndarray, sample_rate: int) -> NDArray[np.float64]:
        """Embedding (dim,) of one waveform, for enrolling a new speaker."""
        if self.embedding is None:
            raise ValueError("this champion has no embedding model")
        return self.embedding.embedder.embed([self.embedding.front(wave, sample_rate)])[0]

    def identify(self, wave: np.ndarray, sample_rate: int, gallery: Centroids | None = None) -> Decision:
        """Who is speaking: an enrolled (or gallery) speaker, or "unknown" below the threshold."""
        scorer, threshold = self._scorer_for(gallery)
        x = scorer.front(wave, sample_rate)
        out = scorer.score_inputs([x], gallery) if isinstance(scorer, EmbeddingScorer) else scorer.score_inputs([x])
        score = float(out.score[0])
        known = score >= threshold
        return Decision(str(out.pred[0]) if known else UNKNOWN, score, float(threshold), bool(known))

    def predict_frame(self, frame: pd.DataFrame, gallery: str | Path | Centroids | None = None) -> pd.DataFrame:
        """One output row per input row (columns :data:`OUTPUT_COLUMNS`).

        Input: a column ``path`` (audio file), or ``waveform`` (list of floats) plus
        ``sample_rate``.  A row that cannot be read gets a missing speaker (NA), score NaN and its ``error``;
        the other rows are still answered.
        """
        from voiceid.data.audio import AudioError, load_audio

        if isinstance(gallery, (str, Path)):
            gallery = load_gallery(gallery, self.embedding.embedder_id if self.embedding else None) if str(gallery) else None
        has_path = "path" in frame.columns
        if not has_path and not {"waveform", "sample_rate"} <= set(frame.columns):
            raise ValueError(f"input needs a 'path' column or 'waveform' and 'sample_rate' columns, found {list(frame.columns)}")
        rows = []
        for i, row in enumerate(frame.itertuples(index=False)):
            rec = row._asdict()
            try:
                path = rec.get("path") if has_path else None
                if path is not None and isinstance(path, str) and path:
                    clip = load_audio(path, target_sr=self.sample_rate)
                    wave, sr = clip.wave, clip.sample_rate
                else:
                    wave, sr = _row_waveform(rec, i)
                d = self.identify(wave, sr, gallery)
                rows.append((d.speaker, d.score, d.threshold, d.known, ""))
            except (AudioError, ValueError) as exc:
                rows.append((None, float("nan"), float("nan"), False, str(exc)))
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def _row_waveform(rec: dict[str, Any], i: int) -> tuple[np.ndarray, int]:
    wave = rec.get("waveform")
    sr = rec.get("sample_rate")
    if wave is None or sr is None or (isinstance(sr, float) and np.isnan(sr)):
        raise ValueError(f"row {i}: needs a path, or a waveform and a sample_rate")
    wave = np.asarray(wave, dtype=np.float32).ravel()
    if wave.size == 0 or not np.all(np.isfinite(wave)):
        raise ValueError(f"row {i}: waveform is empty or holds NaN/inf samples")
    return wave, int(sr)
