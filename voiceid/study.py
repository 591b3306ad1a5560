"""Optuna study mechanics shared by the grid and ECAPA: names, resume, budgets, the trial -> MLflow logger."""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optuna

from voiceid import tracking


class StudyError(RuntimeError):
    """A study cannot give a result (no completed trial, a best trial outside the search space)."""


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
        storage=store,
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        pruner=pruner,
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


def trial_logger(
    study_run: tracking.StudyRun, tags: Mapping[str, str]
) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
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
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    n_trials: int,
    timeout_s: float | None,
    defaults: Mapping[str, Any],
    callbacks: list[Callable[..., None]],
) -> None:
    """Run trials until ``n_trials`` have completed or been pruned, or ``timeout_s`` passes.

    Failures do not count toward the budget, but a session never runs more than the
    remaining budget of trials, so a family that always fails still stops.
    """
    if not study.trials:
        study.enqueue_trial(dict(defaults), skip_if_exists=True)
    remaining = n_trials - len(study.get_trials(deepcopy=False, states=_BUDGET_STATES))
    if remaining <= 0:
        return
    study.optimize(
        _guarded(objective),
        n_trials=remaining,
        timeout=timeout_s,
        catch=(Exception,),
        callbacks=[*callbacks, optuna.study.MaxTrialsCallback(n_trials, states=_BUDGET_STATES)],
    )


def best_params(study: optuna.Study, space: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Full hyper-parameters of the best trial (derived ones included), or StudyError."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        failed = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
        raise StudyError(f"study {study.study_name}: no trial completed ({failed} failed); see the MLflow trial runs")
    try:
        return space(optuna.trial.FixedTrial(study.best_trial.params))
    except ValueError as exc:
        raise StudyError(
            f"study {study.study_name}: its best trial does not fit the current search space ({exc}); "
            "delete the study or point grid.storage elsewhere"
        ) from exc


def trial_counts(study: optuna.Study) -> dict[str, int]:
    states = optuna.trial.TrialState
    return {
        f"n_trials_{s.name.lower()}": len(study.get_trials(deepcopy=False, states=(s,)))
        for s in (states.COMPLETE, states.PRUNED, states.FAIL)
    }


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
