"""Selection: each family's best model, calibrated and thresholded on val, reported once on test.

Protocol (README "Selection"):

1. Candidates: for each family in ``select.families`` the final MLflow run with the best
   *validation* metric among runs of the same data (tag ``data_hash``): classifiers from the
   grid (``val_f1_weighted``, higher is better), ``ecapa`` (``val_eer``, lower is better),
   and ``cosine`` -- the seed work's baseline, built here: cosine similarity of standardised
   clip statistics (scaler fitted on train rows) to per-speaker train centroids.
2. Calibration on enrolled val rows: classifiers via :func:`voiceid.thresholds.calibrate_classifier`
   (isotonic or sigmoid, chosen by cross-fitted log-loss); embedding models by a logistic
   :class:`~voiceid.thresholds.ScoreCalibrator` of probe-to-centroid cosines (val probes of
   enrolled and val-unknown speakers against every enrolled centroid).
3. Open-set thresholds on val probes (enrolled val + val-unknown speakers): F-beta, TPR@FPR
   and EER rules, all recorded; ``threshold_rule`` names the one used for decisions.
4. Champion: the candidate with the best ``champion_metric`` on *val*; the best embedding
   candidate rides along for enrolling new speakers.
5. Test (enrolled test + test-unknown speakers), touched once, after everything above is
   frozen: :func:`voiceid.openset.report` with bootstrap intervals.

Steps 1-4 receive :meth:`FeatureBank.without_test`, a bank with no test rows at all, so no
fitted quantity can depend on test data (tests/test_selection.py checks it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from voiceid import openset
from voiceid.champion import (
    Champion,
    ClassifierScorer,
    EcapaEmbedder,
    EmbeddingScorer,
    FrontEnd,
    Scored,
    StatsEmbedder,
    centroids_from,
)
from voiceid.features import FeatureParams, read_feature_table, read_logmel
from voiceid.openset import Probes
from voiceid.thresholds import ScoreCalibrator, calibrate_classifier, fit_thresholds

Kind = Literal["classifier", "embedding"]
EMBEDDING_FAMILIES = ("ecapa", "cosine")
LOWER_IS_BETTER = frozenset({"eer", "min_dcf", "far", "frr"})


@dataclass(frozen=True)
class SelectParams:
    """The ``select`` section of params.yaml."""

    families: tuple[str, ...] = ("svc", "mlp", "catboost", "knn", "logreg", "ecapa", "cosine")
    val_metric: str = "val_f1_weighted"  # picks each classifier family's final run (higher is better)
    ecapa_val_metric: str = "val_eer"  # picks the ECAPA final run (lower is better)
    cosine_feature_set: str = "mfcc60"
    calibration_methods: tuple[Literal["isotonic", "sigmoid"], ...] = ("isotonic", "sigmoid")
    calibration_metric: Literal["log_loss", "brier", "open_brier"] = "open_brier"
    beta: float = 1.0
    target_fpr: float = 0.05
    threshold_rule: Literal["fbeta", "fpr", "eer"] = "fpr"
    champion_metric: Literal["dir_far_1", "dir_far_5", "eer", "min_dcf", "open_set_accuracy"] = "dir_far_1"
    p_target: float = 0.01
    registered_model: str = "voiceid"
    experiment: str = "voiceid/select"
    n_bootstrap: int = 1000
    seed: int = 42

    def check(self) -> None:
        if not self.families:
            raise ValueError("families must name at least one candidate family")
        if not self.calibration_methods:
            raise ValueError("calibration_methods must name at least one method")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, found {self.beta}")
        if not 0.0 <= self.target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in [0, 1), found {self.target_fpr}")
        if not 0.0 < self.p_target < 1.0:
            raise ValueError(f"p_target must be in (0, 1), found {self.p_target}")
        if self.n_bootstrap < 0:
            raise ValueError(f"n_bootstrap must be >= 0, found {self.n_bootstrap}")


# --- data ------------------------------------------------------------------------------------


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


# --- candidates ------------------------------------------------------------------------------


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
        choice = calibrate_classifier(model, Xk, yk, params.calibration_methods, params.calibration_metric,
                                      seed=params.seed, X_extra=Xu)
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
        centroids = centroids_from(embedder.embed(list(Xt)), yt)
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


def _better(metric: str, a: float, b: float) -> bool:
    return a < b if metric in LOWER_IS_BETTER else a > b


def choose(candidates: Sequence[Candidate], metric: str) -> Candidate:
    """Best ``metric`` on val; ties keep the earlier candidate (``families`` order)."""
    if not candidates:
        raise ValueError("no candidate to choose from")
    best = candidates[0]
    for c in candidates[1:]:
        if _better(metric, c.val_report[metric], best.val_report[metric]):
            best = c
    return best


# --- the whole selection ---------------------------------------------------------------------


@dataclass
class SelectionResult:
    candidates: list[Candidate]
    champion: Candidate
    embedding: Candidate | None
    test: dict[str, Probes] = field(default_factory=dict)
    test_reports: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    test_by_rule: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # family -> why it is not a candidate


def select(
    sources: Sequence[tuple[Source, Any]], bank: FeatureBank, params: SelectParams, features: FeatureParams
) -> SelectionResult:
    """Calibrate, threshold and choose on val; then score every candidate once on test."""
    fit_bank = bank.without_test()
    candidates, skipped = [], {}
    for s, m in sources:
        try:
            candidates.append(build_candidate(s, m, fit_bank, params, features))
        except ValueError as exc:  # one unusable model must not cost the others
            skipped[s.family] = f"cannot calibrate/threshold on val: {exc}"
    if not candidates:
        raise ValueError(f"no usable candidate model ({skipped or 'none found'}): run the grid/ecapa stages "
                         "or add 'cosine' to select.families")
    embedding = [c for c in candidates if c.source.kind == "embedding"]
    result = SelectionResult(
        candidates,
        choose(candidates, params.champion_metric),
        choose(embedding, params.champion_metric) if embedding else None,
        skipped=skipped,
    )
    # Everything fitted is frozen from here on; the test split is read once per candidate.
    for i, c in enumerate(candidates):
        probes = score_split(c, bank, "test")
        t = c.threshold(params.threshold_rule)
        result.test[c.family] = probes
        result.test_reports[c.family] = openset.bootstrap(
            probes, lambda p, t=t: openset.report(p, t, p_target=params.p_target), params.n_bootstrap, params.seed + i
        )
        result.test_by_rule[c.family] = {
            rule: dict(zip(("far", "frr"), openset.far_frr(probes, c.threshold(rule)))) for rule in c.thresholds
        }
    return result


def make_champion(result: SelectionResult, params: SelectParams, features: FeatureParams) -> Champion:
    """The deployable object: the champion's scorer and threshold plus the embedding fallback."""
    c, e = result.champion, result.embedding
    return Champion(
        family=c.family,
        run_id=c.source.run_id,
        primary=c.scorer,
        threshold=c.threshold(params.threshold_rule),
        threshold_rule=params.threshold_rule,
        embedding=e.scorer if e is not None else None,  # type: ignore[arg-type]
        embedding_threshold=e.threshold(params.threshold_rule) if e is not None else None,
        sample_rate=features.sample_rate,
    )
