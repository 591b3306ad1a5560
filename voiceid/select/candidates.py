"""Selection candidates: each family's best model (or an embedding model) calibrated and thresholded on val."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from voiceid.features.params import FeatureParams
from voiceid.features.tables import read_feature_table, read_logmel
from voiceid.scoring import openset
from voiceid.scoring.calibration import ScoreCalibrator
from voiceid.scoring.centroids import speaker_centroids
from voiceid.scoring.openset import Probes
from voiceid.select.calibration import calibrate_classifier
from voiceid.select.params import SelectParams
from voiceid.select.thresholds import fit_thresholds
from voiceid.serve.champion import ClassifierScorer, EmbeddingScorer, Scored
from voiceid.serve.frontend import EcapaEmbedder, FrontEnd, StatsEmbedder

Kind = Literal["classifier", "embedding"]


EMBEDDING_FAMILIES = ("ecapa", "cosine")


class FeatureBank:
    """Per feature set: metadata rows and model inputs ((n, dim) array, or a list of log-mel matrices)."""

    def __init__(self, tables: Mapping[str, tuple[pd.DataFrame, Any]]) -> None:
        self.tables = {k: (m.reset_index(drop=True), v) for k, (m, v) in tables.items()}

    @classmethod
    def from_dir(cls, features_dir: str | Path, sets: Sequence[str]) -> FeatureBank:
        tables: dict[str, tuple[pd.DataFrame, Any]] = {}
        for name in dict.fromkeys(sets):
            path = Path(features_dir) / f"{name}.parquet"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: feature table not found (is '{name}' in features.sets?)")
            tables[name] = read_logmel(path) if name == "logmel" else read_feature_table(path)
        return cls(tables)

    def without_test(self) -> FeatureBank:
        """The same bank with every test row removed: what calibration and thresholds may see."""
        out = {}
        for name, (meta, inputs) in self.tables.items():
            keep = np.flatnonzero((meta["split"] != "test").to_numpy())
            out[name] = (meta.iloc[keep], _take(inputs, keep))
        return FeatureBank(out)

    def rows(self, feature_set: str, role: str, split: str) -> tuple[Any, np.ndarray]:
        """(inputs, speakers) of the rows with this role and split."""
        if feature_set not in self.tables:
            raise KeyError(f"feature set {feature_set!r} not loaded (have {sorted(self.tables)})")
        meta, inputs = self.tables[feature_set]
        idx = np.flatnonzero(((meta["role"] == role) & (meta["split"] == split)).to_numpy())
        return _take(inputs, idx), meta["speaker"].astype(str).to_numpy()[idx]

    def probes(self, feature_set: str, split: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Enrolled then unknown rows of ``split``: (inputs as a list, speakers, known mask)."""
        xk, yk = self.rows(feature_set, "enrolled", split)
        xu, yu = self.rows(feature_set, "unknown", split)
        if len(yk) == 0 or len(yu) == 0:
            raise ValueError(f"{feature_set}/{split}: need enrolled and unknown rows, found {len(yk)} and {len(yu)}")
        inputs = list(xk) + list(xu)
        return inputs, np.concatenate([yk, yu]), np.r_[np.ones(len(yk), bool), np.zeros(len(yu), bool)]


def _take(inputs: Any, idx: np.ndarray) -> Any:
    return inputs[idx] if isinstance(inputs, np.ndarray) else [inputs[i] for i in idx]


@dataclass(frozen=True)
class Source:
    """Where a candidate comes from: an MLflow final run, or (``cosine``) nothing to load."""

    family: str
    kind: Kind
    feature_set: str
    run_id: str | None = None
    model_uri: str | None = None
    val_metric: str | None = None
    val_value: float | None = None


@dataclass
class Candidate:
    """A calibrated, thresholded model and what validation said about it."""

    source: Source
    scorer: ClassifierScorer | EmbeddingScorer
    calibration: dict[str, Any]
    val: Probes
    thresholds: dict[str, Any]  # rule -> fitted threshold estimator
    val_report: dict[str, float]

    @property
    def family(self) -> str:
        return self.source.family

    def threshold(self, rule: str) -> float:
        return float(self.thresholds[rule].threshold_)


def build_candidate(source: Source, model: Any, bank: FeatureBank, params: SelectParams, features: FeatureParams) -> Candidate:
    """Calibrate ``model`` and fit its thresholds on the val rows of ``bank`` (never test rows)."""
    front = FrontEnd(source.feature_set, features)
    if source.kind == "classifier":
        Xk, yk = bank.rows(source.feature_set, "enrolled", "val")
        Xu, yu = bank.rows(source.feature_set, "unknown", "val")
        _check_width(model, np.asarray(Xk), source)
        choice = calibrate_classifier(
            model, Xk, yk, params.calibration_methods, params.calibration_metric, seed=params.seed, X_extra=Xu
        )
        scorer: ClassifierScorer | EmbeddingScorer = ClassifierScorer(front, choice.calibrated)
        classes = np.asarray(scorer.speakers)
        # Enrolled val probes are scored out-of-fold; unknown ones by the deployed fold
        # ensemble, exactly as test probes will be (see thresholds.CalibratedEnsemble).
        best = choice.oof_proba.argmax(axis=1)
        unk = scorer.score_inputs(list(Xu))
        val = Probes(
            np.concatenate([yk, yu]),
            np.concatenate([classes[best], unk.pred]),
            np.concatenate([choice.oof_proba[np.arange(len(best)), best], unk.score]),
            np.r_[np.ones(len(yk), bool), np.zeros(len(yu), bool)],
        )
        calibration = {"method": choice.method, "folds": choice.n_folds, "losses": choice.losses}
    else:
        Xt, yt = bank.rows(source.feature_set, "enrolled", "train")
        if source.family == "cosine":
            embedder: Any = StatsEmbedder(StandardScaler().fit(np.asarray(Xt, dtype=np.float64)))
        else:
            embedder = EcapaEmbedder(model)
        centroids = speaker_centroids(embedder.embed(list(Xt)), yt)
        inputs, speakers, known = bank.probes(source.feature_set, "val")
        emb = embedder.embed(inputs)
        scorer = EmbeddingScorer(front, embedder, centroids, ScoreCalibrator(), _embedder_id(source, embedder))
        _, cos = scorer.cosines(emb)
        # Trials: every val probe against every enrolled centroid; target = same speaker.
        target = speakers[:, None] == np.asarray(centroids.speakers)[None, :]
        scorer.calibrator.fit(cos.ravel(), target.ravel().astype(int))
        out = scorer.score_embeddings(emb)
        val = Probes(speakers, out.pred, out.score, known)
        calibration = {"method": "logistic", "a": scorer.calibrator.a_, "b": scorer.calibrator.b_}
    thresholds = fit_thresholds(val.score, val.known.astype(int), params.beta, params.target_fpr)
    val_report = openset.report(val, float(thresholds[params.threshold_rule].threshold_), p_target=params.p_target)
    return Candidate(source, scorer, calibration, val, thresholds, val_report)


def _check_width(model: Any, X: np.ndarray, source: Source) -> None:
    expected = getattr(model, "n_features_in_", None)
    if expected is not None and X.ndim == 2 and X.shape[1] != expected:
        raise ValueError(
            f"{source.family} (run {source.run_id}) expects {expected} features, "
            f"data/features/{source.feature_set}.parquet has {X.shape[1]}"
        )


def _embedder_id(source: Source, embedder: Any) -> str:
    """Names the embedding space, so a gallery built with another model is refused."""
    if isinstance(embedder, StatsEmbedder):
        s = embedder.scaler
        digest = hashlib.sha256(np.asarray(s.mean_).tobytes() + np.asarray(s.scale_).tobytes()).hexdigest()[:16]
        return f"cosine:{source.feature_set}:{digest}"
    return f"{source.family}:{source.run_id}"


def score_split(candidate: Candidate, bank: FeatureBank, split: str) -> Probes:
    """Enrolled + unknown probes of ``split`` scored by the candidate's frozen scorer."""
    inputs, speakers, known = bank.probes(candidate.source.feature_set, split)
    out: Scored = candidate.scorer.score_inputs(inputs)
    return Probes(speakers, out.pred, out.score, known)
