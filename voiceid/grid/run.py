"""One grid cell end to end: tune a family on a feature set, refit the best, log the final run.

``run_family`` is what ``stages/grid.py`` and ``benchmarks/grid_az_digits.py`` call; the
study mechanics live in ``voiceid.study`` and the MLflow calls in ``voiceid.tracking``.

Final runs (tag ``stage=final``) carry params (hyper-parameters, ``seed``, ``objective``),
metrics ``val_<m>`` (the tuning rows) and ``test_<m>`` for m in accuracy, f1_weighted,
f1_macro, top5_accuracy (classifiers) or ari, nmi, accuracy, f1_weighted, f1_macro,
n_clusters, noise_fraction (clustering), plus ``fit_seconds``; the test metrics are also
logged under their bare names (``f1_weighted``, ``accuracy``, ...) so the MLflow UI compares
every family, ECAPA included, on the same columns; the model (sklearn flavour,
``predict_proba`` for classifiers), ``confusion_matrix.png``, ``classes.json`` and
``feature_columns.json``; tags family, feature_set, kind, git_commit, data_hash, seed,
dataset, study_name, study_run_id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from threadpoolctl import threadpool_limits

from voiceid import tracking
from voiceid.features.params import ENCODER_SETS
from voiceid.grid import classifiers, clustering
from voiceid.grid.data import GridData
from voiceid.grid.objectives import (
    classifier_objective,
    clustering_objective,
    fit_context,
    tuning_cluster_data,
)
from voiceid.grid.params import GridParams, family_kind, grid_run_params
from voiceid.scoring import classification
from voiceid.study import (
    best_params,
    finalise_once,
    join,
    log_unlogged,
    open_study,
    optimize,
    seed_sampler,
    study_name,
    study_run_id,
    timed,
    trial_counts,
    trial_logger,
    wait_idle,
)
from voiceid.viz.confusion import confusion_figure


@dataclass(frozen=True)
class FamilyResult:
    """Outcome of one (family, feature set) cell; ``summary()`` goes into metrics/<family>.json."""

    family: str
    feature_set: str
    kind: str
    objective: str
    study_name: str
    study_run_id: str
    final_run_id: str
    best_trial: int
    best_params: dict[str, Any]
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    fit_seconds: float
    counts: dict[str, int]

    def summary(self) -> dict[str, Any]:
        return {
            f"val_{self.objective}": self.val_metrics[self.objective],
            **{f"test_{k}": v for k, v in self.test_metrics.items()},
            "fit_seconds": round(self.fit_seconds, 4),
            **self.counts,
            "best_trial": self.best_trial,
            "final_run_id": self.final_run_id,  # its tags name the study and the study run
        }


def run_family(
    name: str, data: GridData, params: GridParams, base_tags: Mapping[str, str], *, log_model: bool = True
) -> FamilyResult:
    """Tune ``name`` on ``data`` (resuming its study), then refit and log the final run.

    BLAS is held to one thread: the matrices are small, and on a busy machine idle BLAS
    threads spin and made an MLP fit 14x slower (42.6 s vs 3.0 s measured on az_digits).
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _run_family(name, data, params, base_tags, log_model)


def _run_family(name: str, data: GridData, params: GridParams, base_tags: Mapping[str, str], log_model: bool) -> FamilyResult:
    kind = family_kind(name)
    objective_name = params.objective if kind == "classifier" else params.clustering_objective
    space_key: tuple[Any, ...] = (sorted(_defaults(name, data, params)), params.catboost if name == "catboost" else None)
    if data.feature_set in ENCODER_SETS:  # trials of the per-dimension scaler (before 2026-12-03) are not resumed
        space_key += ("isotropic scaler",)
    sname = study_name(params.dataset_name, data.feature_set, name, objective_name, data.fingerprint, space_key)
    experiment = tracking.experiment_name(params.dataset_name, data.feature_set)
    tags = {
        **base_tags,
        "family": name,
        "feature_set": data.feature_set,
        "kind": kind,
        "seed": str(params.seed),
        "dataset": params.dataset_name,
        "study_name": sname,
    }
    if kind == "classifier":
        family = classifiers.get_family(name)
        ctx = fit_context(data, params)
        space = lambda trial: family.space(trial, ctx)  # noqa: E731
        defaults = family.defaults(ctx)
        objective = classifier_objective(name, data, params)
        iterative = family.iterative
    else:
        cfamily = clustering.get_family(name)
        space, defaults, iterative = cfamily.space, cfamily.defaults, False
        objective = clustering_objective(name, data, params)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=params.pruner_startup_trials, n_warmup_steps=params.report_every)
        if iterative
        else optuna.pruners.NopPruner()
    )
    study = open_study(sname, params.storage, seed=params.seed, startup_trials=params.tpe_startup_trials, pruner=pruner)
    # Team mode (voiceid.study): workers on the same storage share the study's budget, its MLflow
    # parent run and one final refit per round; a lone worker sees no difference.
    session = join(study)
    if session.slot:  # a second worker must not replay the first one's start-up configurations
        seed_sampler(study, params.seed, params.tpe_startup_trials, salt=7919 * session.slot)
    parent = study_run_id(
        study, lambda: tracking.create_study_run(experiment, sname, tags, grid_run_params(params)), tracking.run_exists
    )

    with tracking.start_study_run(experiment, sname, tags, run_id=parent) as srun:
        logger = trial_logger(srun, tags, once=True)
        log_unlogged(study, logger)  # finished before a crash, never logged
        optimize(study, objective, n_trials=params.n_trials, timeout_s=params.timeout_s, defaults=defaults, callbacks=[logger])
        wait_idle(study)

    def refit() -> str:  # by one worker per round; the study run is no longer the active run
        log_unlogged(study, logger)
        hp = best_params(study, space)
        best, counts = study.best_trial, trial_counts(study)
        tracking.annotate_run(srun.run_id, tags={"best_trial": best.number}, metrics={"best_objective": best.value, **counts})
        final_tags = {**tags, "study_run_id": srun.run_id, "best_trial": str(best.number), "objective": objective_name}
        run_params = {**hp, "seed": params.seed, "objective": objective_name, "refit_on": "train"}
        final = _final_classifier if kind == "classifier" else _final_clustering
        job = _FinalJob(
            name, hp, data, params, experiment=experiment, run_params=run_params, tags=final_tags, log_model=log_model
        )
        run_id = final(job)
        tracking.annotate_run(srun.run_id, tags={"final_run_id": run_id})
        return run_id

    _, run_id = finalise_once(study, session, refit)
    # the final run holds what every worker reports, whichever of them refitted
    (run,) = tracking.get_runs([run_id])
    val_m = {k[4:]: v for k, v in run.metrics.items() if k.startswith("val_")}
    test_m = {k[5:]: v for k, v in run.metrics.items() if k.startswith("test_")}
    best_number = int(run.tags.get("best_trial", study.best_trial.number))
    hp = best_params(study, space)
    counts = trial_counts(study)
    return FamilyResult(
        name,
        data.feature_set,
        kind,
        objective_name,
        sname,
        srun.run_id,
        run_id,
        best_number,
        hp,
        val_m,
        test_m,
        float(run.metrics.get("fit_seconds", 0.0)),
        counts,
    )


@dataclass(frozen=True)
class _FinalJob:
    """What a final refit needs, whichever kind of family: the chosen hyper-parameters and where to log."""

    name: str
    hp: dict[str, Any]
    data: GridData
    params: GridParams
    experiment: str
    run_params: dict[str, Any]  # the final run's params (hyper-parameters, seed, objective, refit_on)
    tags: dict[str, str]
    log_model: bool


def _final_classifier(job: _FinalJob) -> str:
    name, hp, data, params = job.name, job.hp, job.data, job.params
    family = classifiers.get_family(name)
    ctx = fit_context(data, params)
    pipe, fit_s = timed(lambda: classifiers.fit_classifier(family, hp, data.train.X, data.train.y, ctx))
    classes = np.asarray(pipe.classes_)
    val_m = classification.classification_metrics(data.val.y, pipe.predict_proba(data.val.X), classes)
    test_proba = pipe.predict_proba(data.test.X)
    test_m = classification.classification_metrics(data.test.y, test_proba, classes)
    cm = classification.confusion(data.test.y, classification.predict_labels(test_proba, classes), classes)
    title = f"{name} on {data.feature_set}: test f1_weighted {test_m['f1_weighted']:.3f}"
    run_id = tracking.log_final_run(
        job.experiment,
        f"{name}-final",
        params=job.run_params,
        metrics={**test_m, **_prefixed("val", val_m), **_prefixed("test", test_m), "fit_seconds": fit_s},
        tags=job.tags,
        model=pipe if job.log_model else None,
        input_example=data.train.X[:2],
        requirements=tracking.pip_requirements(*tracking.SKLEARN_REQUIREMENTS, *family.requirements),
        figures={"confusion_matrix.png": confusion_figure(cm, [str(c) for c in classes], title)},
        json_artifacts={"classes.json": [str(c) for c in classes], "feature_columns.json": list(data.feature_names)},
    )
    return run_id


def _final_clustering(job: _FinalJob) -> str:
    name, hp, data, params = job.name, job.hp, job.data, job.params
    tune = tuning_cluster_data(data)
    _, tune_labels = clustering.fit_clusterer(name, hp, tune, params.seed)
    val_m = clustering.clustering_metrics(np.concatenate([data.train.y, data.val.y]), tune_labels)
    test_data = clustering.ClusterData(data.train.X, data.train.y, data.test.X, tune.n_clusters, tune.encoder)
    (pipe, labels), fit_s = timed(lambda: clustering.fit_clusterer(name, hp, test_data, params.seed))
    test_m = clustering.clustering_metrics(data.test.y, labels)
    matched = clustering.matched_labels(data.test.y, labels).astype(str)
    speakers = [str(s) for s in np.unique(data.test.y)]
    axis = speakers + ([clustering.UNMATCHED] if (matched == clustering.UNMATCHED).any() else [])
    cm = classification.confusion(data.test.y.astype(str), matched, np.asarray(axis))
    title = f"{name} on {data.feature_set}: test ARI {test_m['ari']:.3f}"
    run_id = tracking.log_final_run(
        job.experiment,
        f"{name}-final",
        params={**job.run_params, "refit_on": "test rows (transductive clustering)"},
        metrics={**test_m, **_prefixed("val", val_m), **_prefixed("test", test_m), "fit_seconds": fit_s},
        tags=job.tags,
        model=pipe if job.log_model else None,
        input_example=data.test.X[:2],
        figures={"confusion_matrix.png": confusion_figure(cm, axis, title)},
        json_artifacts={"classes.json": speakers, "feature_columns.json": list(data.feature_names)},
    )
    return run_id


def _defaults(name: str, data: GridData, params: GridParams) -> dict[str, Any]:
    if name in classifiers.FAMILIES:
        return classifiers.get_family(name).defaults(fit_context(data, params))
    return dict(clustering.get_family(name).defaults)


def _prefixed(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}
