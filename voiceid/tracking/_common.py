"""Small helpers shared by the tracking modules (tag/metric hygiene, trusted unpickling)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any, Literal

import numpy as np

STAGE_TAG = "stage"
MAX_METRICS_PER_BATCH = 1000  # MLflow refuses larger log_batch calls
Stage = Literal["study", "trial", "final", "adapt"]
Flavor = Literal["sklearn", "pytorch"]


def str_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in tags.items()}


def quote(value: str) -> str:
    """Escape a value for a single-quoted MLflow filter string."""
    return value.replace("'", "\\'")


def finite(value: Any) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def jsonable(obj: Any) -> Any:
    """Round-trip through json so numpy scalars and tuples are accepted by log_dict."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else list(o)))


def log_contents(
    mlflow: ModuleType,
    params: Mapping[str, Any] | None,
    metrics: Mapping[str, float] | None,
    json_artifacts: Mapping[str, Any] | None,
) -> None:
    """Log params, finite metrics and JSON artifacts into the active run.

    Non-finite metrics are skipped: MLflow rejects NaN in some stores.
    """
    if params:
        mlflow.log_params({str(k): v for k, v in params.items()})
    kept = {k: float(v) for k, v in (metrics or {}).items() if finite(v)}
    if kept:
        mlflow.log_metrics(kept)
    for name, obj in (json_artifacts or {}).items():
        mlflow.log_dict(jsonable(obj), name)


def log_series(mlflow: ModuleType, run_id: str, series: Mapping[str, Sequence[float]]) -> None:
    """Log each value list as one metric's history (step = position), batched, non-finite values skipped."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(str(k), float(v), now, i) for k, values in series.items() for i, v in enumerate(values) if finite(v)]
    client = mlflow.MlflowClient()
    for start in range(0, len(batch), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch[start : start + MAX_METRICS_PER_BATCH])


@contextlib.contextmanager
def scoped_env(name: str, value: str | None) -> Iterator[None]:
    """``$name`` = ``value`` inside the block, restored after; ``value`` None changes nothing."""
    if value is None:
        yield
        return
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def trusted_unpickling() -> contextlib.AbstractContextManager[None]:
    """Let MLflow 3 unpickle models for the duration of a load.

    MLflow refuses unless MLFLOW_ALLOW_PICKLE_DESERIALIZATION is true; the models here come
    from this project's own store, so the switch is set for the call and then restored.
    """
    return scoped_env("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
