"""Logging and loading models: sklearn / pytorch flavours and custom pyfunc models.

Every model is logged under the artifact name ``model`` with a signature and explicit,
pinned pip requirements (MLflow's own inference imports the model in a subprocess and
costs 5-8 s per model); the run's ``model_uri`` tag holds the URI for :func:`load_model`.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voiceid.tracking._common import (
    STAGE_TAG,
    Flavor,
    log_contents,
    str_tags,
    trusted_unpickling,
)
from voiceid.tracking.config import import_mlflow, pip_requirements, set_experiment
from voiceid.tracking.datasets import log_manifest_input

SKLEARN_REQUIREMENTS = ("scikit-learn", "numpy", "scipy", "cloudpickle", "pandas")
PYTORCH_REQUIREMENTS = ("torch", "numpy")


def _pins(requirements: Sequence[str] | None, defaults: Sequence[str]) -> list[str]:
    return list(requirements) if requirements is not None else pip_requirements(*defaults)


def _torch_output(model: Any, example: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(example)).detach().cpu().numpy()


def _unknown_flavor(flavor: str) -> ValueError:
    return ValueError(f"unknown model flavor {flavor!r} (known: sklearn, pytorch)")


def log_model(
    model: Any,
    flavor: Flavor,
    input_example: np.ndarray | None,
    requirements: Sequence[str] | None,
) -> Any:
    """Log ``model`` into the active run as ``model``; return MLflow's ModelInfo.

    The signature is inferred from ``input_example`` and the model's ``predict`` output;
    pip requirements are ``requirements`` or the flavour's pinned defaults. sklearn models
    are stored with cloudpickle so any estimator (CatBoost inside a Pipeline) loads back
    with ``predict_proba``.
    """
    mlflow = import_mlflow()
    from mlflow.models import infer_signature

    signature = None
    if flavor == "sklearn" and not hasattr(model, "predict"):
        # No pyfunc flavour (e.g. DBSCAN): MLflow could not validate an example against it.
        input_example = None
    if input_example is not None:
        if flavor == "pytorch":
            output = _torch_output(model, input_example)
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
        return mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=input_example,
            pip_requirements=_pins(requirements, SKLEARN_REQUIREMENTS),
            serialization_format="cloudpickle",
        )
    if flavor == "pytorch":
        import mlflow.pytorch

        return mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=input_example,
            pip_requirements=_pins(requirements, PYTORCH_REQUIREMENTS),
        )
    raise _unknown_flavor(flavor)


def log_pytorch_model(
    run_id: str,
    model: Any,
    input_example: np.ndarray,
    *,
    variable_axes: Sequence[int] = (0,),
    requirements: Sequence[str] | None = None,
) -> str:
    """Log a torch module into the finished run ``run_id`` as ``model``; return its URI.

    Unlike :func:`voiceid.tracking.runs.log_final_run`, whose inferred signature fixes every
    axis but the batch, the signature here marks ``variable_axes`` of the input as -1 (for a
    speaker embedder: batch and frames, so clips of any length are valid input).  The output
    spec comes from running the model on ``input_example``.  The run's ``model_uri`` tag is
    set as ``log_final_run`` does.

    The model is stored as a ``torch.export`` graph ("pt2"): it loads without this package
    and without unpickling code.  Export traces ``input_example`` and treats any axis of
    size 1 as a constant, so the example needs a batch of at least 2 and more than one frame.
    """
    if min(input_example.shape[i] for i in variable_axes) < 2:
        raise ValueError(f"input_example {input_example.shape}: variable axes {tuple(variable_axes)} need size >= 2")
    mlflow = import_mlflow()
    # importlib, not ``import mlflow.pytorch``: that statement would rebind the local ``mlflow``.
    mlflow_pytorch = importlib.import_module("mlflow.pytorch")
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    model.eval()
    output = _torch_output(model, input_example)
    in_shape = tuple(-1 if i in variable_axes else n for i, n in enumerate(input_example.shape))
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(input_example.dtype), in_shape)]),
        outputs=Schema([TensorSpec(np.dtype(output.dtype), (-1, *output.shape[1:]))]),
    )
    with mlflow.start_run(run_id=run_id):
        info = mlflow_pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=input_example,
            pip_requirements=_pins(requirements, PYTORCH_REQUIREMENTS),
            serialization_format="pt2",
        )
        mlflow.set_tag("model_uri", info.model_uri)
    return info.model_uri


def _pyfunc_signature(
    inputs: Sequence[tuple[str, str, bool]],
    outputs: Sequence[tuple[str, str]],
    params: Mapping[str, str] | None,
) -> Any:
    """ModelSignature from ``(name, type, required)`` column specs; type "double[]" is an array column, "any" any value."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, ParamSchema, ParamSpec, Schema

    def col(name: str, kind: str, required: bool = True) -> Any:
        dtype = AnyType() if kind == "any" else Array(kind[:-2]) if kind.endswith("[]") else kind
        return ColSpec(dtype, name, required=required)

    input_schema = Schema([col(n, k, r) for n, k, r in inputs])
    output_schema = Schema([col(n, k) for n, k in outputs])
    if not params:
        return ModelSignature(inputs=input_schema, outputs=output_schema)
    param_schema = ParamSchema([ParamSpec(k, "string", v) for k, v in params.items()])
    return ModelSignature(inputs=input_schema, outputs=output_schema, params=param_schema)


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
    """Log a run (tag ``stage=select``) holding a custom pyfunc model ``python_model``; return (run_id, model_uri).

    ``python_model``: the path of a models-from-code script (it calls ``mlflow.models.set_model``)
    or a PythonModel instance (cloudpickled; MLflow warns).  ``requirements`` are explicit
    (MLflow's inference would import and run the model in a subprocess); ``code_paths`` ship the
    source the model refers to, so it loads where that source is not installed.
    ``inputs``/``outputs`` give the signature's columns; ``predict_params`` the string params
    ``predict`` accepts, with defaults.
    """
    mlflow = import_mlflow()
    mlflow_pyfunc = importlib.import_module("mlflow.pyfunc")

    experiment_id = set_experiment(experiment)
    run_tags = {**str_tags(tags or {}), STAGE_TAG: "select"}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        log_contents(mlflow, params, metrics, json_artifacts)
        log_manifest_input(mlflow, run_tags.get("data_hash"), "evaluation")
        for path in files:
            mlflow.log_artifact(str(path))
        with warnings.catch_warnings():
            # The signature is explicit; an input example would be an audio file.
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            info = mlflow_pyfunc.log_model(
                name="model",
                python_model=python_model,
                artifacts=dict(artifacts),
                code_paths=list(code_paths),
                pip_requirements=list(requirements),
                signature=_pyfunc_signature(inputs, outputs, predict_params),
            )
        mlflow.set_tag("model_uri", info.model_uri)
        return run.info.run_id, info.model_uri


def load_model(uri: str, flavor: Flavor = "sklearn") -> Any:
    """Load a model logged by ``log_final_run`` / :func:`log_pytorch_model` in its native flavour.

    Trusted stores only: it unpickles (:func:`voiceid.tracking._common.trusted_unpickling`).
    """
    if flavor not in ("sklearn", "pytorch"):
        raise _unknown_flavor(flavor)
    import_mlflow()
    with trusted_unpickling():
        if flavor == "sklearn":
            import mlflow.sklearn

            return mlflow.sklearn.load_model(uri)
        import mlflow.pytorch

        return mlflow.pytorch.load_model(uri)
