"""Optuna studies of the experiment grid, one per (feature set, family), logged to MLflow.

Protocol (README "Experiment grid"):

* Only enrolled rows are used. Classifiers fit on ``split == "train"`` and are tuned on the
  fixed ``split == "val"`` rows (with ~5 training utterances per speaker a fixed split is
  more honest and cheaper than cross-validation); the best configuration is refitted on
  the same training rows (val rows never enter the weights, but they chose the
  configuration, so the final ``val_*`` closed-set metrics lean optimistic) and scored once
  on ``split == "test"``.
* Clustering families fit their preprocessing on train rows, are tuned by clustering the
  train+val rows and are reported by clustering the test rows (see ``voiceid.grid.clustering``).
* Studies use a seeded TPE sampler, a median pruner for iterative families, and resume from
  their storage (``load_if_exists``); a study's name carries a fingerprint of its inputs so
  changed data starts a fresh study. The first trial of a fresh study is the family's
  default configuration (for SVC the seed work's C=5 rbf recipe).
* A trial that raises or returns NaN is recorded as FAIL and the study goes on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import optuna

from voiceid.features.params import ENCODER_SETS
from voiceid.grid import classifiers, clustering
from voiceid.grid.data import GridData
from voiceid.grid.params import GridParams
from voiceid.scoring import classification


def fit_context(data: GridData, params: GridParams) -> classifiers.FitContext:
    _, counts = np.unique(data.train.y, return_counts=True)
    return classifiers.FitContext(
        params.seed, data.train.X.shape[1], int(counts.min()), params.catboost, data.feature_set in ENCODER_SETS
    )


def classifier_objective(name: str, data: GridData, params: GridParams) -> Callable[[optuna.Trial], float]:
    family = classifiers.get_family(name)
    ctx = fit_context(data, params)

    def objective(trial: optuna.Trial) -> float:
        hp = family.space(trial, ctx)
        trial.set_user_attr("params", hp)

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation accuracy {value:.3f} at step {step}")

        monitor = classifiers.Monitor(data.val.X, data.val.y, report, params.report_every) if family.iterative else None
        pipe = classifiers.fit_classifier(family, hp, data.train.X, data.train.y, ctx, monitor)
        scores = classification.classification_metrics(data.val.y, pipe.predict_proba(data.val.X), pipe.classes_)
        trial.set_user_attr("metrics", scores)
        return scores[params.objective]

    return objective


def tuning_cluster_data(data: GridData) -> clustering.ClusterData:
    """Train+val rows, clustered during tuning; the test rows are kept for the final run."""
    return clustering.ClusterData(
        data.train.X,
        data.train.y,
        np.concatenate([data.train.X, data.val.X]),
        len(np.unique(data.train.y)),
        data.feature_set in ENCODER_SETS,
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
