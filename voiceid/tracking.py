"""MLflow tracking for voiceid: the only module that imports mlflow.

Layout of the tracking store (see README "Experiment tracking"):

* one experiment per dataset/feature-set grid, named ``voiceid/<dataset>/<feature_set>``
  (:func:`experiment_name`);
* one *study* run per Optuna study (tag ``stage=study``), with one nested *trial* run per
  trial (tag ``stage=trial``, ``mlflow.parentRunId`` = the study run);
* one *final* run per study (tag ``stage=final``): the best configuration refitted, with
  validation and test metrics, the model, a confusion-matrix figure and the tags
  ``family``, ``feature_set``, ``git_commit``, ``data_hash``, ``seed``.

Other stages find final runs with :func:`search_best_run` / :func:`search_runs` and load
their models with :func:`load_model`.

The tracking URI is ``$MLFLOW_TRACKING_URI`` when set, else the ``uri`` given to
:func:`configure` (``tracking.uri`` in params.yaml), else ``sqlite:///mlflow.db``
(relative to the working directory, which is the repo root under ``dvc repro``).
mlflow is imported lazily, after telemetry has been switched off, because its
telemetry client starts at import time and the import costs seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
STAGE_TAG = "stage"
Stage = Literal["study", "trial", "final"]
Flavor = Literal["sklearn", "pytorch"]

# Pinned requirements written into every logged model: MLflow's own inference imports
# the model in a subprocess and costs 5-8 s per model.
SKLEARN_REQUIREMENTS = ("scikit-learn", "numpy", "scipy", "cloudpickle", "pandas")
PYTORCH_REQUIREMENTS = ("torch", "numpy")

# Trial states as Optuna names them; kept here as strings so tracking needs no optuna.
TRIAL_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass(frozen=True)
class TrackingParams:
    """``tracking`` section of params.yaml."""

    uri: str = DEFAULT_TRACKING_URI  # $MLFLOW_TRACKING_URI overrides it


def _mlflow() -> ModuleType:
    """Import mlflow with telemetry off (it reads the switch at import time)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    import mlflow

    return mlflow


def configure(uri: str | None = None) -> str:
    """Point MLflow at the tracking store and return its URI.

    ``$MLFLOW_TRACKING_URI`` wins over ``uri`` so a test or a shared server can redirect
    every stage without editing params.yaml.
    """
    resolved = os.environ.get("MLFLOW_TRACKING_URI") or uri or DEFAULT_TRACKING_URI
    _mlflow().set_tracking_uri(resolved)
    return resolved


def experiment_name(dataset: str, feature_set: str) -> str:
    """Experiment holding one dataset/feature-set grid."""
    return f"voiceid/{dataset}/{feature_set}"


def set_experiment(name: str) -> str:
    """Create the experiment if needed, make it current, return its id."""
    return _mlflow().set_experiment(name).experiment_id


def git_commit(repo: str | Path = ".") -> str:
    """HEAD commit of the repository at ``repo`` (``+dirty`` if the tree has changes), or "unknown"."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


# Columns that define what the experiment was run on; paths and durations are left out so
# the hash survives moving the data or re-decoding it identically.
_MANIFEST_IDENTITY = ("utt_id", "speaker", "role", "split", "content_hash")


def data_hash(manifest_path: str | Path) -> str:
    """sha256 of the prepared manifest's identity columns (rows sorted by utt_id).

    Non-parquet files are hashed byte for byte.
    """
    path = Path(manifest_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (needed for the data_hash tag)")
    if path.suffix != ".parquet":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    import pandas as pd

    frame = pd.read_parquet(path)
    missing = [c for c in _MANIFEST_IDENTITY if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: manifest lacks column(s) {', '.join(missing)}")
    rows = frame.loc[:, list(_MANIFEST_IDENTITY)].astype(str).sort_values("utt_id")
    text = rows.to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pip_requirements(*distributions: str) -> list[str]:
    """``name==version`` for each installed distribution, for a model's explicit requirements."""
    out = []
    for dist in distributions:
        try:
            out.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError as exc:
            raise ValueError(f"cannot pin requirement {dist!r}: it is not installed") from exc
    return out


def _str_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in tags.items()}


@dataclass(frozen=True)
class StudyRun:
    """Handle on an open study (parent) run."""

    run_id: str
    experiment_id: str
    resumed: bool
    logged_trials: frozenset[int] = field(default_factory=frozenset)


@contextlib.contextmanager
def start_study_run(
    experiment: str,
    run_name: str,
    tags: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
) -> Iterator[StudyRun]:
    """Open the parent run of a study, reopening it when a run of that name exists.

    Reopening lets an interrupted study continue under the same parent; the trial
    numbers already logged below it are returned so they are not logged twice.
    Two workers starting the same study at the same moment may each create a parent;
    their trials are still all in the shared Optuna storage.
    """
    mlflow = _mlflow()
    experiment_id = set_experiment(experiment)
    client = mlflow.MlflowClient()
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{STAGE_TAG} = 'study' and tags.mlflow.runName = '{_quote(run_name)}'",
        max_results=1,
    )
    all_tags = {**_str_tags(tags), STAGE_TAG: "study"}
    if found:
        run_id = found[0].info.run_id
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


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


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
    mlflow = _mlflow()
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient()
    run_tags = {
        **_str_tags(tags or {}),
        "mlflow.parentRunId": study.run_id,
        STAGE_TAG: "trial",
        "trial_number": str(number),
        "trial_state": state,
    }
    run = client.create_run(study.experiment_id, run_name=f"trial-{number:03d}", tags=run_tags)
    stamp = int(run.info.start_time)
    metric_rows = [Metric(k, float(v), stamp, 0) for k, v in (metrics or {}).items() if _finite(v)]
    if value is not None and _finite(value):
        metric_rows.append(Metric("objective", float(value), stamp, 0))
    metric_rows += [
        Metric("intermediate_objective", float(v), stamp, int(step))
        for step, v in sorted((intermediate or {}).items())
        if _finite(v)
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


def annotate_run(run_id: str, *, tags: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None) -> None:
    """Add tags/metrics to an existing (possibly finished) run, e.g. a study's best value."""
    client = _mlflow().MlflowClient()
    for key, value in (tags or {}).items():
        client.set_tag(run_id, str(key), str(value))
    for key, value in (metrics or {}).items():
        if _finite(value):
            client.log_metric(run_id, str(key), float(value))


def _finite(value: Any) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def confusion_figure(cm: np.ndarray, labels: Sequence[str], title: str = "") -> Figure:
    """Heat map of a confusion matrix (rows: true, columns: predicted)."""
    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    n = max(len(labels), 1)
    size = min(4 + 0.25 * n, 20)
    fig = Figure(figsize=(size, size * 0.9))
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ticks = np.arange(len(labels))
    font = max(4, 10 - n // 10)
    ax.set_xticks(ticks, labels=list(labels), rotation=90, fontsize=font)
    ax.set_yticks(ticks, labels=list(labels), fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


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
    stage: Stage = "final",
) -> str:
    """Log a refitted model as a top-level run and return its run id.

    ``model`` (optional) is logged under the artifact name ``model`` with a signature
    inferred from ``input_example`` and the model's ``predict`` output, and with explicit
    pip requirements (``requirements`` or the flavour's pinned defaults). sklearn models
    are stored with cloudpickle so any estimator (CatBoost inside a Pipeline) loads back
    with ``predict_proba``. Non-finite metrics are skipped (MLflow rejects NaN in some stores).
    The run's tag ``model_uri`` holds the URI for :func:`load_model`.
    """
    mlflow = _mlflow()
    experiment_id = set_experiment(experiment)
    run_tags = {**_str_tags(tags), STAGE_TAG: stage}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        if params:
            mlflow.log_params({str(k): v for k, v in params.items()})
        finite = {k: float(v) for k, v in metrics.items() if _finite(v)}
        if finite:
            mlflow.log_metrics(finite)
        for name, fig in (figures or {}).items():
            mlflow.log_figure(fig, name)
        for name, obj in (json_artifacts or {}).items():
            mlflow.log_dict(_jsonable(obj), name)
        if model is not None:
            info = _log_model(mlflow, model, flavor, input_example, requirements)
            mlflow.set_tag("model_uri", info.model_uri)
        return run.info.run_id


def _log_model(
    mlflow: ModuleType,
    model: Any,
    flavor: Flavor,
    input_example: np.ndarray | None,
    requirements: Sequence[str] | None,
) -> Any:
    from mlflow.models import infer_signature

    signature = None
    if flavor == "sklearn" and not hasattr(model, "predict"):
        # No pyfunc flavour (e.g. DBSCAN): MLflow could not validate an example against it.
        input_example = None
    if input_example is not None:
        if flavor == "pytorch":
            import torch

            with torch.no_grad():
                output = model(torch.as_tensor(input_example)).detach().cpu().numpy()
        elif hasattr(model, "predict"):
            output = model.predict(input_example)
        else:
            output = None
        signature = infer_signature(input_example, output)
    if flavor == "sklearn":
        import logging

        import mlflow.sklearn

        # cloudpickle is chosen on purpose (CatBoost and custom steps are not skops-safe);
        # MLflow's warning about it would repeat for every final run.
        logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
        pins = list(requirements) if requirements is not None else pip_requirements(*SKLEARN_REQUIREMENTS)
        return mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=input_example,
            pip_requirements=pins,
            serialization_format="cloudpickle",
        )
    if flavor == "pytorch":
        import mlflow.pytorch

        pins = list(requirements) if requirements is not None else pip_requirements(*PYTORCH_REQUIREMENTS)
        return mlflow.pytorch.log_model(
            model, name="model", signature=signature, input_example=input_example, pip_requirements=pins
        )
    raise ValueError(f"unknown model flavor {flavor!r} (known: sklearn, pytorch)")


def _jsonable(obj: Any) -> Any:
    """Round-trip through json so numpy scalars and tuples are accepted by log_dict."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else list(o)))


@dataclass(frozen=True)
class RunRecord:
    """What other stages need to know about a logged run."""

    run_id: str
    experiment: str
    run_name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]

    @property
    def model_uri(self) -> str | None:
        return self.tags.get("model_uri")

    @property
    def family(self) -> str:
        return self.tags.get("family", "")


def _records(runs: Sequence[Any], experiment_names: Mapping[str, str]) -> list[RunRecord]:
    return [
        RunRecord(
            run_id=r.info.run_id,
            experiment=experiment_names.get(r.info.experiment_id, r.info.experiment_id),
            run_name=r.info.run_name or "",
            params=dict(r.data.params),
            metrics=dict(r.data.metrics),
            tags=dict(r.data.tags),
        )
        for r in runs
    ]


def _filter(stage: str | None, family: str | None, tags: Mapping[str, str] | None, extra: str | None) -> str:
    clauses = [f"tags.{STAGE_TAG} = '{stage}'"] if stage is not None else []
    if family is not None:
        clauses.append(f"tags.family = '{_quote(family)}'")
    clauses += [f"tags.`{_quote(k)}` = '{_quote(str(v))}'" for k, v in (tags or {}).items()]
    if extra:
        clauses.append(extra)
    return " and ".join(clauses)


def search_runs(
    experiment: str,
    *,
    stage: Stage | None = "final",
    family: str | None = None,
    tags: Mapping[str, str] | None = None,
    extra_filter: str | None = None,
) -> list[RunRecord]:
    """Runs of ``experiment`` (newest first) with the given stage/family/tags; [] if it does not exist."""
    client = _mlflow().MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id], filter_string=_filter(stage, family, tags, extra_filter),
        order_by=["attributes.start_time DESC"], max_results=50000,
    )
    return _records(runs, {exp.experiment_id: experiment})


def search_best_run(
    experiment: str,
    family: str | None = None,
    metric: str = "val_f1_weighted",
    *,
    maximize: bool = True,
    stage: Stage = "final",
) -> RunRecord | None:
    """The ``stage`` run of ``experiment`` (optionally one ``family``) with the best ``metric``.

    Runs lacking the metric are ignored; ties go to the newest run. None when nothing matches.
    """
    return best_of(search_runs(experiment, stage=stage, family=family), metric, maximize=maximize)


def load_model(uri: str, flavor: Flavor = "sklearn") -> Any:
    """Load a model logged by :func:`log_final_run` in its native flavour.

    MLflow 3 refuses to unpickle unless MLFLOW_ALLOW_PICKLE_DESERIALIZATION is true; the
    models here come from this project's own store, so the switch is set for this call.
    """
    mlflow = _mlflow()
    previous = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    try:
        if flavor == "sklearn":
            import mlflow.sklearn

            return mlflow.sklearn.load_model(uri)
        if flavor == "pytorch":
            import mlflow.pytorch

            return mlflow.pytorch.load_model(uri)
        raise ValueError(f"unknown model flavor {flavor!r} (known: sklearn, pytorch)")
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", None)
        else:
            os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = previous


# --- selection stage: cross-experiment search, pyfunc models, the model registry -------------
# (appended by the selection stage, issue 6)


def search_final_runs(
    *,
    family: str | None = None,
    tags: Mapping[str, str] | None = None,
    experiment_prefix: str = "voiceid/",
) -> list[RunRecord]:
    """Final runs (newest first) of every experiment named ``experiment_prefix*``, filtered by tags.

    The grid logs one experiment per feature set, so "the best svc" has to be looked for
    across experiments; ``tags`` (e.g. ``{"data_hash": ...}``) keeps runs of other data out.
    """
    client = _mlflow().MlflowClient()
    names = {e.experiment_id: e.name for e in client.search_experiments(max_results=50000)
             if e.name.startswith(experiment_prefix)}
    if not names:
        return []
    runs = client.search_runs(
        list(names), filter_string=_filter("final", family, tags, None),
        order_by=["attributes.start_time DESC"], max_results=50000,
    )
    return _records(runs, names)


def best_of(runs: Sequence[RunRecord], metric: str, *, maximize: bool = True) -> RunRecord | None:
    """The run with the best finite ``metric`` (ties: the first, i.e. newest); None if none has it."""
    usable = [r for r in runs if _finite(r.metrics.get(metric))]
    if not usable:
        return None
    sign = 1.0 if maximize else -1.0
    return max(usable, key=lambda r: sign * r.metrics[metric])


def load_run_json(run_id: str, artifact: str) -> Any:
    """A JSON artifact of a run (e.g. ``classes.json``), parsed; FileNotFoundError if absent."""
    mlflow = _mlflow()
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact}")
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing file
        raise FileNotFoundError(f"run {run_id}: artifact {artifact!r} not readable ({exc})") from exc


def _pyfunc_signature(
    inputs: Sequence[tuple[str, str, bool]],
    outputs: Sequence[tuple[str, str]],
    params: Mapping[str, str] | None,
) -> Any:
    """ModelSignature from ``(name, type, required)`` column specs; type "double[]" is an array column."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    def col(name: str, kind: str, required: bool = True) -> Any:
        dtype = Array(kind[:-2]) if kind.endswith("[]") else kind
        return ColSpec(dtype, name, required=required)

    param_schema = ParamSchema([ParamSpec(k, "string", v) for k, v in params.items()]) if params else None
    return ModelSignature(
        inputs=Schema([col(n, k, r) for n, k, r in inputs]),
        outputs=Schema([col(n, k) for n, k in outputs]),
        params=param_schema,
    )


def log_pyfunc_run(
    experiment: str,
    run_name: str,
    *,
    python_model: Any,
    artifacts: Mapping[str, str],
    code_paths: Sequence[str],
    requirements: Sequence[str],
    inputs: Sequence[tuple[str, str, bool]],
    outputs: Sequence[tuple[str, str]],
    predict_params: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, Any] | None = None,
    json_artifacts: Mapping[str, Any] | None = None,
    files: Sequence[str | Path] = (),
) -> tuple[str, str]:
    """Log a run holding a custom pyfunc model (artifact name ``model``); return (run_id, model_uri).

    ``requirements`` are explicit (MLflow's inference would import and run the model in a
    subprocess); ``code_paths`` ship the source the pickled model refers to, so the model
    loads where that source is not installed.  ``inputs``/``outputs`` give the signature's
    columns; ``predict_params`` the string params ``predict`` accepts, with defaults.
    """
    import warnings

    mlflow = _mlflow()
    import mlflow.pyfunc

    experiment_id = set_experiment(experiment)
    run_tags = {**_str_tags(tags or {}), STAGE_TAG: "select"}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        if params:
            mlflow.log_params({str(k): v for k, v in params.items()})
        finite = {k: float(v) for k, v in (metrics or {}).items() if _finite(v)}
        if finite:
            mlflow.log_metrics(finite)
        for name, obj in (json_artifacts or {}).items():
            mlflow.log_dict(_jsonable(obj), name)
        for path in files:
            mlflow.log_artifact(str(path))
        with warnings.catch_warnings():
            # The signature is explicit; an input example would be an audio file.
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=python_model,
                artifacts=dict(artifacts),
                code_paths=list(code_paths),
                pip_requirements=list(requirements),
                signature=_pyfunc_signature(inputs, outputs, predict_params),
            )
        mlflow.set_tag("model_uri", info.model_uri)
        return run.info.run_id, info.model_uri


def register_model(model_uri: str, name: str, *, alias: str | None = None, tags: Mapping[str, Any] | None = None) -> str:
    """Register ``model_uri`` as a new version of ``name``; point ``alias`` at it; return the version."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    version = mlflow.register_model(model_uri, name, tags=_str_tags(tags or {}) or None).version
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return str(version)


def aliased_version(name: str, alias: str) -> dict[str, Any] | None:
    """``{"version", "run_id", "source", "tags"}`` of the version ``name@alias``; None if unset."""
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    try:
        mv = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return {"version": str(mv.version), "run_id": mv.run_id, "source": mv.source, "tags": dict(mv.tags)}


def load_pyfunc(uri: str) -> Any:
    """Load a pyfunc model (e.g. ``models:/voiceid@champion``); trusted stores only (it unpickles)."""
    mlflow = _mlflow()
    import mlflow.pyfunc

    previous = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", None)
        else:
            os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = previous


# --- ECAPA embedder (issue 5) -------------------------------------------------------------


def log_pytorch_model(
    run_id: str,
    model: Any,
    input_example: np.ndarray,
    *,
    variable_axes: Sequence[int] = (0,),
    requirements: Sequence[str] | None = None,
) -> str:
    """Log a torch module into the finished run ``run_id`` as ``model``; return its URI.

    Unlike :func:`log_final_run`, whose inferred signature fixes every axis but the batch,
    the signature here marks ``variable_axes`` of the input as -1 (for a speaker embedder:
    batch and frames, so clips of any length are valid input).  The output spec comes from
    running the model on ``input_example``.  The run's ``model_uri`` tag is set as
    :func:`log_final_run` does.

    The model is stored as a ``torch.export`` graph ("pt2"): it loads without this package
    and without unpickling code.  Export traces ``input_example`` and treats any axis of
    size 1 as a constant, so the example needs a batch of at least 2 and more than one frame.
    """
    if min(input_example.shape[i] for i in variable_axes) < 2:
        raise ValueError(f"input_example {input_example.shape}: variable axes {tuple(variable_axes)} need size >= 2")
    mlflow = _mlflow()
    import mlflow.pytorch
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    model.eval()
    with torch.no_grad():
        output = model(torch.as_tensor(input_example)).detach().cpu().numpy()
    in_shape = tuple(-1 if i in variable_axes else n for i, n in enumerate(input_example.shape))
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(input_example.dtype), in_shape)]),
        outputs=Schema([TensorSpec(np.dtype(output.dtype), (-1, *output.shape[1:]))]),
    )
    pins = list(requirements) if requirements is not None else pip_requirements(*PYTORCH_REQUIREMENTS)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model, name="model", signature=signature, input_example=input_example, pip_requirements=pins,
            serialization_format="pt2",
        )
        mlflow.set_tag("model_uri", info.model_uri)
    return info.model_uri


# --- analysis: every run as one table (appended by the analysis notebook, issue 8) -----------

if TYPE_CHECKING:
    import pandas as pd


def runs_frame(*, experiment_prefix: str = "voiceid/", stage: str | None = None) -> pd.DataFrame:
    """Runs of every experiment named ``experiment_prefix*`` as a pandas DataFrame (newest first).

    One row per run with MLflow's columns (``run_id``, ``experiment_id``, ``status``,
    ``start_time``, ``end_time``, ``metrics.*``, ``params.*``, ``tags.*``) plus ``experiment``
    (the name); ``stage`` keeps only runs with that ``stage`` tag. Empty (no columns) when
    nothing matches.
    """
    mlflow = _mlflow()
    import pandas as pd

    exps = [e for e in mlflow.MlflowClient().search_experiments(max_results=50000) if e.name.startswith(experiment_prefix)]
    if not exps:
        return pd.DataFrame()
    frame = mlflow.search_runs(
        experiment_ids=[e.experiment_id for e in exps],
        filter_string=f"tags.{STAGE_TAG} = '{_quote(stage)}'" if stage else "",
        order_by=["attributes.start_time DESC"],
        max_results=50000,
        output_format="pandas",
    )
    names = {e.experiment_id: e.name for e in exps}
    if not frame.empty:
        frame.insert(1, "experiment", frame["experiment_id"].map(names))
    return frame
