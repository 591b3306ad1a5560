"""Optuna studies of the experiment grid, one per (feature set, family), logged to MLflow.

Protocol (README "Experiment grid"):

* Only enrolled rows are used. Classifiers fit on ``split == "train"`` and are tuned on the
  fixed ``split == "val"`` rows (with ~5 training utterances per speaker a fixed split is
  more honest and cheaper than cross-validation); the best configuration is refitted on
  the same training rows (so its ``val_*`` metrics stay honest for the selection stage)
  and scored once on ``split == "test"``.
* Clustering families fit their preprocessing on train rows, are tuned by clustering the
  train+val rows and are reported by clustering the test rows (see ``voiceid.clustering``).
* Studies use a seeded TPE sampler, a median pruner for iterative families, and resume from
  their storage (``load_if_exists``); a study's name carries a fingerprint of its inputs so
  changed data starts a fresh study. The first trial of a fresh study is the family's
  default configuration (for SVC the seed work's C=5 rbf recipe).
* A trial that raises or returns NaN is recorded as FAIL and the study goes on.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import optuna
import pandas as pd

from voiceid import clustering, models, tracking
from voiceid.config import as_dict

METADATA_COLUMNS = ("utt_id", "speaker", "role", "split", "content_hash", "path", "duration", "text")
CLASSIFIER_OBJECTIVES = ("f1_weighted", "f1_macro", "accuracy", "top5_accuracy")
CLUSTERING_OBJECTIVES = ("ari", "nmi", "f1_weighted", "accuracy")


class GridError(RuntimeError):
    """The grid cannot run on these inputs (empty split, no completed trial, ...)."""


@dataclass(frozen=True)
class GridParams:
    """``grid`` section of params.yaml."""

    dataset_name: str  # MLflow experiment: voiceid/<dataset_name>/<feature_set>
    feature_sets: tuple[str, ...]
    families: tuple[str, ...]
    objective: Literal["f1_weighted", "f1_macro", "accuracy", "top5_accuracy"]
    clustering_objective: Literal["ari", "nmi", "f1_weighted", "accuracy"]
    n_trials: int
    timeout_s: float | None
    seed: int
    storage: str
    tpe_startup_trials: int
    pruner_startup_trials: int
    report_every: int
    catboost: models.CatBoostLimits = field(default_factory=models.CatBoostLimits)

    def check(self) -> None:
        known = {*models.FAMILIES, *clustering.FAMILIES}
        for name in self.families:
            if name not in known:
                raise ValueError(f"unknown family {name!r} in 'families' (known: {', '.join(sorted(known))})")
        if self.n_trials < 1:
            raise ValueError("'n_trials' must be >= 1")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("'timeout_s' must be > 0 or null")


def family_kind(name: str) -> Literal["classifier", "clustering"]:
    if name in models.FAMILIES:
        return "classifier"
    if name in clustering.FAMILIES:
        return "clustering"
    raise ValueError(f"unknown family {name!r} (known: {', '.join([*models.FAMILIES, *clustering.FAMILIES])})")


# --- data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    X: np.ndarray  # (n, d) float32
    y: np.ndarray  # (n,) speaker labels
    utt_id: np.ndarray


@dataclass(frozen=True)
class GridData:
    """Enrolled rows of one feature table, by split."""

    feature_set: str
    feature_names: tuple[str, ...]
    train: Rows
    val: Rows
    test: Rows

    @property
    def fingerprint(self) -> str:
        """Hash of features, labels and splits: a study resumes only on identical inputs."""
        h = hashlib.sha256()
        for rows in (self.train, self.val, self.test):
            h.update(np.ascontiguousarray(rows.X).tobytes())
            h.update("\n".join(map(str, rows.y)).encode())
            h.update("\n".join(map(str, rows.utt_id)).encode())
        return h.hexdigest()


def read_table(path: str) -> tuple[pd.DataFrame, np.ndarray, tuple[str, ...]]:
    """Feature parquet -> (metadata, X float32, feature names); every non-metadata column is a feature."""
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise GridError(f"{path}: cannot read feature table: {exc}") from exc
    missing = [c for c in ("utt_id", "speaker", "role", "split") if c not in table.columns]
    if missing:
        raise GridError(f"{path}: feature table lacks column(s) {', '.join(missing)}")
    names = tuple(c for c in table.columns if c not in METADATA_COLUMNS)
    if not names:
        raise GridError(f"{path}: feature table has no feature columns")
    meta = table.loc[:, [c for c in table.columns if c in METADATA_COLUMNS]]
    return meta, table.loc[:, list(names)].to_numpy(dtype=np.float32), names


def grid_data(meta: pd.DataFrame, X: np.ndarray, feature_set: str, names: tuple[str, ...]) -> GridData:
    """Split the enrolled rows; errors name the feature set and the problem."""
    enrolled = (meta["role"] == "enrolled").to_numpy()
    bad = enrolled & ~np.isfinite(X).all(axis=1)
    if bad.any():
        ids = ", ".join(meta.loc[bad, "utt_id"].astype(str).head(5))
        raise GridError(f"{feature_set}: {int(bad.sum())} enrolled rows have non-finite features (e.g. {ids})")
    parts = {}
    for split in ("train", "val", "test"):
        mask = enrolled & (meta["split"] == split).to_numpy()
        if not mask.any():
            raise GridError(f"{feature_set}: no enrolled rows in split {split!r}")
        parts[split] = Rows(X[mask], meta.loc[mask, "speaker"].astype(str).to_numpy(), meta.loc[mask, "utt_id"].astype(str).to_numpy())
    unseen = set(parts["val"].y) | set(parts["test"].y)
    unseen -= set(parts["train"].y)
    if unseen:
        raise GridError(f"{feature_set}: speakers {sorted(unseen)[:5]} have val/test rows but no train rows")
    return GridData(feature_set, names, parts["train"], parts["val"], parts["test"])


# --- studies -------------------------------------------------------------------------------


def study_name(dataset: str, feature_set: str, family: str, objective: str, fingerprint: str, space: Any = None) -> str:
    """``<dataset>/<feature_set>/<family>/<objective>/<key>``; the key hashes the inputs and the
    search-space description ``space``, so a study only resumes on the same data and space."""
    key = hashlib.sha256(f"{fingerprint}|{space!r}".encode()).hexdigest()[:12]
    return f"{dataset}/{feature_set}/{family}/{objective}/{key}"


def open_study(name: str, storage: str, *, seed: int, startup_trials: int, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create or resume study ``name``; any SQLAlchemy URL works (sqlite, PostgreSQL).

    RDB storages get a heartbeat so a trial left RUNNING by a killed worker is marked FAIL
    when the study resumes. The sampler is re-seeded with the number of existing trials so
    a resumed study does not replay the random start-up configurations.
    """
    store: Any = storage
    if "://" in storage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat is "experimental"
            store = optuna.storages.RDBStorage(storage, heartbeat_interval=30, grace_period=90)
    study = optuna.create_study(
        storage=store, study_name=name, direction="maximize", load_if_exists=True, pruner=pruner,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials),
    )
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=startup_trials)
    return study


def _guarded(objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
    """Keep a failing trial's error on the trial so the MLflow child run shows it."""

    def run(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            raise

    return run


def trial_logger(study_run: tracking.StudyRun, tags: Mapping[str, str]) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    def log(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        extra = {"error": trial.user_attrs["error"]} if "error" in trial.user_attrs else {}
        tracking.log_trial(
            study_run,
            number=trial.number,
            params=trial.user_attrs.get("params", trial.params),
            value=trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None,
            state=trial.state.name,
            tags={**tags, **extra},
            metrics={f"val_{k}": v for k, v in trial.user_attrs.get("metrics", {}).items()},
            intermediate=trial.intermediate_values,
            duration_s=trial.duration.total_seconds() if trial.duration else None,
        )

    return log


_BUDGET_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def optimize(
    study: optuna.Study, objective: Callable[[optuna.Trial], float], params: GridParams,
    defaults: Mapping[str, Any], callbacks: list[Callable[..., None]],
) -> None:
    """Run trials until ``n_trials`` have completed or been pruned, or ``timeout_s`` passes.

    Failures do not count toward the budget, but a session never runs more than the
    remaining budget of trials, so a family that always fails still stops.
    """
    if not study.trials:
        study.enqueue_trial(dict(defaults), skip_if_exists=True)
    remaining = params.n_trials - len(study.get_trials(deepcopy=False, states=_BUDGET_STATES))
    if remaining <= 0:
        return
    study.optimize(
        _guarded(objective), n_trials=remaining, timeout=params.timeout_s, catch=(Exception,),
        callbacks=[*callbacks, optuna.study.MaxTrialsCallback(params.n_trials, states=_BUDGET_STATES)],
    )


# --- objectives ----------------------------------------------------------------------------


def fit_context(data: GridData, params: GridParams) -> models.FitContext:
    _, counts = np.unique(data.train.y, return_counts=True)
    return models.FitContext(params.seed, data.train.X.shape[1], int(counts.min()), params.catboost)


def classifier_objective(name: str, data: GridData, params: GridParams) -> Callable[[optuna.Trial], float]:
    family = models.get_family(name)
    ctx = fit_context(data, params)

    def objective(trial: optuna.Trial) -> float:
        hp = family.space(trial, ctx)
        trial.set_user_attr("params", hp)

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation accuracy {value:.3f} at step {step}")

        monitor = models.Monitor(data.val.X, data.val.y, report, params.report_every) if family.iterative else None
        pipe = models.fit_classifier(family, hp, data.train.X, data.train.y, ctx, monitor)
        scores = models.classification_metrics(data.val.y, pipe.predict_proba(data.val.X), pipe.classes_)
        trial.set_user_attr("metrics", scores)
        return scores[params.objective]

    return objective


def tuning_cluster_data(data: GridData) -> clustering.ClusterData:
    """Train+val rows, clustered during tuning; the test rows are kept for the final run."""
    return clustering.ClusterData(
        data.train.X, data.train.y, np.concatenate([data.train.X, data.val.X]), len(np.unique(data.train.y))
    )


def clustering_objective(name: str, data: GridData, params: GridParams) -> Callable[[optuna.Trial], float]:
    family = clustering.get_family(name)
    cdata = tuning_cluster_data(data)
    truth = np.concatenate([data.train.y, data.val.y])

    def objective(trial: optuna.Trial) -> float:
        hp = family.space(trial)
        trial.set_user_attr("params", hp)
        _, labels = clustering.fit_clusterer(name, hp, cdata, params.seed)
        scores = clustering.clustering_metrics(truth, labels)
        trial.set_user_attr("metrics", scores)
        return scores[params.clustering_objective]

    return objective


def best_params(study: optuna.Study, space: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Full hyper-parameters of the best trial (derived ones included), or GridError."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        failed = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
        raise GridError(f"study {study.study_name}: no trial completed ({failed} failed); see the MLflow trial runs")
    try:
        return space(optuna.trial.FixedTrial(study.best_trial.params))
    except ValueError as exc:
        raise GridError(
            f"study {study.study_name}: its best trial does not fit the current search space ({exc}); "
            "delete the study or point grid.storage elsewhere"
        ) from exc


def trial_counts(study: optuna.Study) -> dict[str, int]:
    states = optuna.trial.TrialState
    return {
        f"n_trials_{s.name.lower()}": len(study.get_trials(deepcopy=False, states=(s,)))
        for s in (states.COMPLETE, states.PRUNED, states.FAIL)
    }


def grid_run_params(params: GridParams) -> dict[str, Any]:
    """Grid settings logged on study runs (``grid.*``)."""
    return {f"grid.{k}": v for k, v in as_dict(params).items() if k not in ("families", "feature_sets")}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
