"""MLflow tracking for voiceid: the only package that imports mlflow.

Layout of the tracking store (see README "Experiment tracking"):

* one experiment per dataset/feature-set grid, named ``voiceid/<dataset>/<feature_set>``
  (:func:`experiment_name`), tagged ``mlflow.experimentKind=custom_model_development``
  (a model-training experiment; MLflow 3.17's UI picks its view from the ``workflowType`` link
  parameter instead, which :mod:`~voiceid.tracking.ui` -- ``voiceid ui`` -- puts in its links);
* one *study* run per Optuna study (tag ``stage=study``), with one nested *trial* run per
  trial (tag ``stage=trial``, ``mlflow.parentRunId`` = the study run);
* one *final* run per study (tag ``stage=final``): the best configuration refitted, with
  validation and test metrics, the model, a confusion-matrix figure and the tags
  ``family``, ``feature_set``, ``git_commit``, ``data_hash``, ``seed``, and the prepared
  manifest as its dataset input (:mod:`~voiceid.tracking.datasets`);
* the select stage's run (tag ``stage=select``) holding the champion as a pyfunc model,
  registered as ``<name>@champion``.

Modules: :mod:`~voiceid.tracking.config` (URI, telemetry, run identity),
:mod:`~voiceid.tracking.runs` (writing study/trial/final runs),
:mod:`~voiceid.tracking.models` (logging/loading models),
:mod:`~voiceid.tracking.registry` (model registry), :mod:`~voiceid.tracking.datasets`
(the manifest as a run's dataset input), :mod:`~voiceid.tracking.query`
(finding runs), :mod:`~voiceid.tracking.ui` (``voiceid ui``: ``mlflow ui`` and its links),
:mod:`~voiceid.tracking.pyfunc` (the champion's pyfunc class; imported on demand because it
imports mlflow). Callers use the names re-exported here:
``from voiceid import tracking; tracking.get_runs(...)``.
"""

from voiceid.tracking._common import STAGE_TAG, Flavor, Stage
from voiceid.tracking.config import (
    DEFAULT_TRACKING_URI,
    TrackingParams,
    configure,
    data_hash,
    experiment_name,
    git_commit,
    pip_requirements,
    set_experiment,
    uri_override,
)
from voiceid.tracking.models import (
    PYTORCH_REQUIREMENTS,
    SKLEARN_REQUIREMENTS,
    load_model,
    log_pyfunc_run,
    log_pytorch_model,
)
from voiceid.tracking.query import (
    RunRecord,
    best_of,
    experiment_ids,
    get_runs,
    load_run_json,
    runs_frame,
    search_best_run,
    search_final_runs,
    search_runs,
)
from voiceid.tracking.registry import aliased_version, load_pyfunc, register_model
from voiceid.tracking.runs import (
    TRIAL_STATES,
    StudyRun,
    annotate_run,
    create_study_run,
    log_final_run,
    log_trial,
    run_exists,
    start_study_run,
)

__all__ = [
    "DEFAULT_TRACKING_URI",
    "PYTORCH_REQUIREMENTS",
    "SKLEARN_REQUIREMENTS",
    "STAGE_TAG",
    "TRIAL_STATES",
    "Flavor",
    "RunRecord",
    "Stage",
    "StudyRun",
    "TrackingParams",
    "aliased_version",
    "annotate_run",
    "best_of",
    "get_runs",
    "configure",
    "create_study_run",
    "data_hash",
    "experiment_ids",
    "experiment_name",
    "git_commit",
    "load_model",
    "load_pyfunc",
    "load_run_json",
    "log_final_run",
    "log_pyfunc_run",
    "log_pytorch_model",
    "log_trial",
    "pip_requirements",
    "register_model",
    "run_exists",
    "runs_frame",
    "search_best_run",
    "search_final_runs",
    "search_runs",
    "set_experiment",
    "start_study_run",
    "uri_override",
]
