"""Writing runs: Optuna study (parent) runs, their trial runs, final runs and figures.

One *study* run per Optuna study (tag ``stage=study``), with one nested *trial* run per
trial (tag ``stage=trial``, ``mlflow.parentRunId`` = the study run); one *final* run per
study (tag ``stage=final``): the best configuration refitted, with validation and test
metrics, the model, a confusion-matrix figure and the tags ``family``, ``feature_set``,
``git_commit``, ``data_hash``, ``seed``; one *adapt* run per fine-tuning of the pretrained
encoder (tag ``stage=adapt``, experiment ``voiceid/<dataset>/dvector_ft``), with its loss curve.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from voiceid.tracking._common import (
    STAGE_TAG,
    Flavor,
    Stage,
    finite,
    log_contents,
    log_series,
    quote,
    str_tags,
)
from voiceid.tracking.config import import_mlflow, set_experiment
from voiceid.tracking.datasets import log_manifest_input
from voiceid.tracking.models import log_model

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Trial states as Optuna names them; kept here as strings so tracking needs no optuna.
TRIAL_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass(frozen=True)
class StudyRun:
    """Handle on an open study (parent) run."""

    run_id: str
    experiment_id: str
    resumed: bool
    logged_trials: frozenset[int] = field(default_factory=frozenset)


def _find_study_run(client: Any, experiment_id: str, run_name: str) -> str | None:
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{STAGE_TAG} = 'study' and tags.mlflow.runName = '{quote(run_name)}'",
        max_results=1,
    )
    return found[0].info.run_id if found else None


def create_study_run(experiment: str, run_name: str, tags: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> str:
    """The id of the study (parent) run named ``run_name``: an existing one, else a new one.

    Team mode calls it once per study, under a lock held in the Optuna storage
    (:func:`voiceid.study.study_run_id`), so concurrent workers share one parent.
    """
    mlflow = import_mlflow()
    from mlflow.entities import Param

    experiment_id = set_experiment(experiment)
    client = mlflow.MlflowClient()
    existing = _find_study_run(client, experiment_id, run_name)
    if existing is not None:
        return existing
    run = client.create_run(experiment_id, run_name=run_name, tags={**str_tags(tags), STAGE_TAG: "study"})
    if params:
        client.log_batch(run.info.run_id, params=[Param(str(k), str(v)) for k, v in params.items()])
    return str(run.info.run_id)


def run_exists(run_id: str) -> bool:
    """Whether the current store holds run ``run_id`` (and it is not deleted)."""
    mlflow = import_mlflow()
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    return bool(run.info.lifecycle_stage != "deleted")


@contextlib.contextmanager
def start_study_run(
    experiment: str,
    run_name: str,
    tags: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
) -> Iterator[StudyRun]:
    """Open the parent run of a study, reopening it when a run of that name exists.

    Reopening lets an interrupted study continue under the same parent; the trial
    numbers already logged below it are returned so they are not logged twice.
    ``run_id`` reopens that run instead of looking one up by name: team mode passes the
    parent every worker agreed on (:func:`create_study_run`), so concurrent workers log
    their trials under one parent.
    """
    mlflow = import_mlflow()
    experiment_id = set_experiment(experiment)
    client = mlflow.MlflowClient()
    found = run_id or _find_study_run(client, experiment_id, run_name)
    all_tags = {**str_tags(tags), STAGE_TAG: "study"}
    if found:
        run_id = found
        logged = _logged_trial_numbers(client, experiment_id, run_id)
        active = mlflow.start_run(run_id=run_id)
        mlflow.set_tags(all_tags)
        resumed = True
    else:
        logged = frozenset()
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=all_tags)
        if params:
            mlflow.log_params(dict(params))
        resumed = False
    status = "FAILED"
    try:
        yield StudyRun(active.info.run_id, experiment_id, resumed, logged)
        status = "FINISHED"
    finally:
        mlflow.end_run(status=status)


def _logged_trial_numbers(client: Any, experiment_id: str, parent_run_id: str) -> frozenset[int]:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.{STAGE_TAG} = 'trial'",
        max_results=50000,
    )
    return frozenset(int(r.data.tags["trial_number"]) for r in runs if "trial_number" in r.data.tags)


def log_trial(
    study: StudyRun,
    *,
    number: int,
    params: Mapping[str, Any],
    value: float | None,
    state: str,
    tags: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    intermediate: Mapping[int, float] | None = None,
    duration_s: float | None = None,
) -> str:
    """Log one finished Optuna trial as a child run of ``study``; return its run id.

    ``state`` is the Optuna state name (COMPLETE, PRUNED, FAIL); a failed or pruned trial
    is logged too, with status FAILED / KILLED, so the UI shows what was tried.
    """
    if state not in TRIAL_STATES:
        raise ValueError(f"unknown trial state {state!r} (known: {', '.join(TRIAL_STATES)})")
    mlflow = import_mlflow()
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient()
    run_tags = {
        **str_tags(tags or {}),
        "mlflow.parentRunId": study.run_id,
        STAGE_TAG: "trial",
        "trial_number": str(number),
        "trial_state": state,
    }
    run = client.create_run(study.experiment_id, run_name=f"trial-{number:03d}", tags=run_tags)
    stamp = int(run.info.start_time)
    metric_rows = [Metric(k, float(v), stamp, 0) for k, v in (metrics or {}).items() if finite(v)]
    if value is not None and finite(value):
        metric_rows.append(Metric("objective", float(value), stamp, 0))
    metric_rows += [
        Metric("intermediate_objective", float(v), stamp, int(step))
        for step, v in sorted((intermediate or {}).items())
        if finite(v)
    ]
    if duration_s is not None:
        metric_rows.append(Metric("trial_seconds", float(duration_s), stamp, 0))
    client.log_batch(
        run.info.run_id,
        metrics=metric_rows,
        params=[Param(str(k), str(v)) for k, v in params.items()],
        tags=[],
    )
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def annotate_run(
    run_id: str, *, tags: Mapping[str, Any] | None = None, metrics: Mapping[str, float | None] | None = None
) -> None:
    """Add tags/metrics to an existing (possibly finished) run, e.g. a study's best value.

    Metrics that are None or not finite are skipped.
    """
    client = import_mlflow().MlflowClient()
    for key, value in (tags or {}).items():
        client.set_tag(run_id, str(key), str(value))
    for key, value in (metrics or {}).items():
        if value is not None and finite(value):
            client.log_metric(run_id, str(key), float(value))


def log_final_run(
    experiment: str,
    run_name: str,
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, Any],
    model: Any = None,
    flavor: Flavor = "sklearn",
    input_example: np.ndarray | None = None,
    requirements: Sequence[str] | None = None,
    figures: Mapping[str, Figure] | None = None,
    json_artifacts: Mapping[str, Any] | None = None,
    series: Mapping[str, Sequence[float]] | None = None,
    stage: Stage = "final",
) -> str:
    """Log a refitted model as a top-level run and return its run id.

    ``series``: metrics with a history (e.g. a training loss per step), shown as curves.

    ``model`` (optional) is logged under the artifact name ``model`` (see
    :func:`voiceid.tracking.models.log_model`). Non-finite metrics are skipped (MLflow
    rejects NaN in some stores). The run's tag ``model_uri`` holds the URI for
    :func:`voiceid.tracking.models.load_model`.
    """
    mlflow = import_mlflow()
    experiment_id = set_experiment(experiment)
    run_tags = {**str_tags(tags), STAGE_TAG: stage}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        log_contents(mlflow, params, metrics, json_artifacts)
        if series:
            log_series(mlflow, run.info.run_id, series)
        log_manifest_input(mlflow, run_tags.get("data_hash"), "training")  # the runs table's Dataset column
        for name, fig in (figures or {}).items():
            mlflow.log_figure(fig, name)
        if model is not None:
            info = log_model(model, flavor, input_example, requirements)
            mlflow.set_tag("model_uri", info.model_uri)
        return run.info.run_id
