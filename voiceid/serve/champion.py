"""The champion: audio in, speaker (or "unknown") and a calibrated score out.

Everything a decision needs travels in one picklable :class:`Champion`:

* a :class:`FrontEnd` (which feature set, with the ``features`` params that define it);
* the *primary* scorer, the candidate that won the selection: either a calibrated classifier
  (:class:`ClassifierScorer`, score = calibrated probability of the top speaker, or of the
  model's own open-set statistic, :mod:`voiceid.serve.decision`) or an
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

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from voiceid.data.audio import AudioError
from voiceid.scoring.calibration import ScoreCalibrator
from voiceid.scoring.centroids import Centroids, merge
from voiceid.scoring.cosine import cosine_matrix
from voiceid.scoring.openset import UNKNOWN
from voiceid.scoring.verification import StrangerScores, gallery_threshold, gallery_thresholds, later_speaker_levels
from voiceid.serve.decision import open_set_statistic
from voiceid.serve.frontend import Embedder, FrontEnd
from voiceid.serve.gallery import load_gallery
from voiceid.serve.request import SOURCES, RowRules, describe, resolve_root, row_clip, row_label

_log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("speaker", "score", "threshold", "known", "error")


class Scored(NamedTuple):
    """Top-1 speaker and open-set score per probe (score is a calibrated probability)."""

    pred: NDArray[np.str_]
    score: NDArray[np.float64]


class ClassifierScorer:
    """A fitted classifier wrapped with its validation calibrator (``predict_proba``).

    The speaker is the arg-max of the calibrated probabilities. The open-set score is the
    model's own statistic (:func:`voiceid.serve.decision.open_set_statistic`) through
    ``decision``, a logistic calibrator of it fitted on val probes; without ``decision`` (chosen
    so by ``select.classifier_scores``, or pickled before it existed) the top calibrated probability.
    """

    kind = "classifier"

    def __init__(self, front: FrontEnd, calibrated: Any, model: Any = None, decision: ScoreCalibrator | None = None) -> None:
        if decision is not None and model is None:
            raise ValueError("a decision calibrator needs the model whose statistic it calibrates")
        self.front = front
        self.calibrated = calibrated
        self.model = model
        self.decision = decision

    @property
    def speakers(self) -> list[str]:
        return [str(s) for s in self.calibrated.classes_]

    def proba_and_score(self, inputs: list[np.ndarray]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(n, n_speakers) calibrated probabilities and (n,) open-set score of the top speaker."""
        X = np.stack([np.asarray(x).ravel() for x in inputs])  # (n, dim)
        proba = np.asarray(self.calibrated.predict_proba(X), dtype=np.float64)
        decision = getattr(self, "decision", None)  # champions pickled before it: the top probability
        top = proba.max(axis=1) if decision is None else decision.predict_proba(open_set_statistic(self.model, X))
        return proba, top

    def speaker_scores(self, inputs: list[np.ndarray]) -> NDArray[np.float64]:
        """(n, n_speakers) score of each probe for each speaker, for display (the demo's bars).

        Without ``decision``: the calibrated probabilities. With it, the open-set score belongs
        to the top speaker, and every other speaker gets that score times its calibrated
        probability relative to the top one's: the same ranking on the decision's scale.
        """
        proba, top = self.proba_and_score(inputs)
        return top[:, None] * proba / np.maximum(proba.max(axis=1, keepdims=True), 1e-300)

    def score_inputs(self, inputs: list[np.ndarray]) -> Scored:
        proba, top = self.proba_and_score(inputs)
        return Scored(np.asarray(self.speakers)[proba.argmax(axis=1)], top)


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
        self.asnorm: Any = None  # a fitted voiceid.scoring.backend.AsNorm, set by selection when it wins on val
        # val strangers' scores against the enrolled speakers (per stranger): how the threshold must
        # rise as a gallery grows (gallery_threshold); set by selection
        self.strangers: StrangerScores | None = None
        # the val strangers' embeddings (in this scorer's space), so their level against speakers enrolled
        # later is measured rather than assumed to be the own speakers': a centring mean taken from a few
        # own speakers leaves every other voice, new speakers and strangers alike, sharing its error
        self.stranger_emb: NDArray[np.float64] | None = None
        self.stranger_groups: NDArray[np.str_] | None = None  # each of those probes' val-unknown speaker
        self.far_confidence: float | None = None  # select.far_confidence: later speakers' levels at that bound

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_thresholds"}  # a cache, not part of the model

    @property
    def speakers(self) -> list[str]:
        return list(self.centroids.speakers)

    def cosines(self, emb: NDArray[np.float64], gallery: Centroids | None = None) -> tuple[Centroids, NDArray[np.float64]]:
        cents = merge(self.centroids, gallery)
        cos = cosine_matrix(emb, cents.vectors)  # (n, n_speakers)
        asnorm = getattr(self, "asnorm", None)  # AS-norm against background speakers (champions pickled before it: None)
        return cents, cos if asnorm is None else asnorm.normalize(cos, emb, cents.vectors)

    def threshold_for(self, gallery: Centroids | None, base: float) -> dict[str, float]:
        """Per speaker (own and ``gallery``), the score threshold that keeps strangers' acceptance where ``base`` had it.

        More enrolled speakers give a stranger more chances to score high, so thresholds rise
        with the gallery (:mod:`voiceid.scoring.verification`, on the val strangers' scores
        against this model's own speakers).  How high, and how spread, the val strangers score
        against each gallery speaker is measured (``stranger_emb``; :func:`later_speaker_levels`,
        shrunk toward all gallery speakers' when the val strangers are few): a gallery speaker
        near the strangers gets a higher threshold of its own (:func:`gallery_thresholds`), the
        own speakers keep a shared one.  None is below ``base``, the val threshold.  Champions
        pickled before: ``base`` without a stranger model; one shared threshold
        (:func:`gallery_threshold`) without ``stranger_emb``.
        """
        strangers = getattr(self, "strangers", None)
        cents = merge(self.centroids, gallery)
        if not isinstance(strangers, StrangerScores) or cents is self.centroids:
            return dict.fromkeys(cents.speakers, base)
        # identify asks once per probe, mostly of the same gallery: keep the last answer
        key = (
            base,
            id(getattr(self, "stranger_emb", None)),
            tuple(cents.speakers),
            hashlib.sha256(np.ascontiguousarray(cents.vectors).tobytes()).hexdigest(),
        )
        cached = getattr(self, "_thresholds", None)
        if cached is None or cached[0] != key:
            self._thresholds = (key, self._gallery_thresholds(cents, gallery, strangers, base))
        return dict(self._thresholds[1])

    def _gallery_thresholds(
        self, cents: Centroids, gallery: Centroids | None, strangers: StrangerScores, base: float
    ) -> dict[str, float]:
        n_own = len(self.centroids.speakers)
        n_kept = len(cents.speakers) - len(gallery.speakers) if gallery is not None else n_own
        emb = getattr(self, "stranger_emb", None)
        raw_base = self.calibrator.inverse(base)
        if emb is None or len(emb) < 2:
            raw = np.full(len(cents.speakers), gallery_threshold(raw_base, strangers, n_own, len(cents.speakers)))
        else:
            own_z = strangers.scale(self.cosines(emb)[1])  # (n_strangers, n_own) on the stranger model's scale
            later_z = strangers.scale(self.cosines(emb, gallery)[1][:, n_kept:])  # (n_strangers, n_gallery)
            groups = getattr(self, "stranger_groups", None)
            groups = np.arange(len(emb)) if groups is None else groups
            fitted_sd, confidence = float(strangers.sd.mean()), getattr(self, "far_confidence", None)
            offsets, spreads = later_speaker_levels(own_z, later_z, groups, fitted_sd, confidence)
            own, later = gallery_thresholds(raw_base, strangers, n_own, n_kept, offsets, spreads)
            raw = np.r_[np.full(n_kept, own), later]
        p = np.maximum(base, self.calibrator.predict_proba(raw))
        return {s: float(t) for s, t in zip(cents.speakers, p, strict=True)}

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

    def _scorer_for(self, gallery: Centroids | None) -> tuple[ClassifierScorer | EmbeddingScorer, float | dict[str, float]]:
        if gallery is None:
            return self.primary, self.threshold
        if self.embedding is None or self.embedding_threshold is None:
            raise ValueError("this champion has no embedding model, so it cannot use a gallery")
        return self.embedding, self.embedding.threshold_for(gallery, self.embedding_threshold)

    def embed(self, wave: np.ndarray, sample_rate: int) -> NDArray[np.float64]:
        """Embedding (dim,) of one waveform, for enrolling a new speaker."""
        if self.embedding is None:
            raise ValueError("this champion has no embedding model")
        return self.embedding.embedder.embed([self.embedding.front(wave, sample_rate)])[0]

    def identify(self, wave: np.ndarray, sample_rate: int, gallery: Centroids | None = None) -> Decision:
        """Who is speaking: an enrolled (or gallery) speaker, or "unknown" below the threshold."""
        scorer, thresholds = self._scorer_for(gallery)
        x = scorer.front(wave, sample_rate)
        out = scorer.score_inputs([x], gallery) if isinstance(scorer, EmbeddingScorer) else scorer.score_inputs([x])
        score, top = float(out.score[0]), str(out.pred[0])
        threshold = thresholds[top] if isinstance(thresholds, dict) else thresholds  # with a gallery: the top speaker's
        known = score >= threshold
        return Decision(top if known else UNKNOWN, score, float(threshold), bool(known))

    def predict_frame(
        self,
        frame: pd.DataFrame,
        gallery: str | Path | Centroids | None = None,
        audio_root: str | Path | None = None,
        rules: RowRules | None = None,
    ) -> pd.DataFrame:
        """One output row per input row (columns :data:`OUTPUT_COLUMNS`), as the served model answers.

        Each row gives its audio in one of ``path``, ``waveform`` (+ ``sample_rate``) or
        ``audio_b64`` (:mod:`voiceid.serve.request`).  ``path`` rows are read only under
        ``audio_root`` (None: refused, nothing opened).  Every row is validated as ``voiceid
        identify`` validates a file (``rules``); a row that fails gets a missing speaker (None),
        score NaN and its ``error``, and the other rows are still answered.  ``gallery``: extra
        speakers (a Centroids, or a gallery ``.npz`` the caller trusts).
        """
        if isinstance(gallery, (str, Path)):
            gallery = load_gallery(gallery, self.embedding.embedder_id if self.embedding else None) if str(gallery) else None
        if not set(frame.columns) & set(SOURCES):
            raise ValueError(
                f"input needs a 'path', 'waveform' (+ 'sample_rate') or 'audio_b64' column, found {list(frame.columns)}"
            )
        root, rules = resolve_root(audio_root), rules or RowRules()
        rows: list[tuple[str | None, float, float, bool, str]] = []  # OUTPUT_COLUMNS
        for i, rec in enumerate(frame.to_dict("records")):
            try:
                clip = row_clip(rec, i, self.sample_rate, root, rules)
                d = self.identify(clip.wave, clip.sample_rate, gallery)
                rows.append((d.speaker, d.score, d.threshold, d.known, ""))
            except (AudioError, ValueError) as exc:  # RowError is a ValueError
                rows.append((None, float("nan"), float("nan"), False, describe(exc, row_label(rec, i))))
            except Exception as exc:  # a bug must not cost the other rows their answers
                _log.exception("row %d failed", i)
                rows.append((None, float("nan"), float("nan"), False, f"failed: {type(exc).__name__}"))
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
