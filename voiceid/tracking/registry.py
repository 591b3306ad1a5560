"""The model registry: register a logged model, point an alias at it, load it back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voiceid.tracking._common import str_tags, trusted_unpickling
from voiceid.tracking.config import import_mlflow


def register_model(
    model_uri: str,
    name: str,
    *,
    alias: str | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    model_description: str | None = None,
    model_tags: Mapping[str, Any] | None = None,
) -> str:
    """Register ``model_uri`` as a new version of ``name`` (with ``tags`` and ``description``); point ``alias`` at it.

    Returns the version. ``description`` is what the registry's version page shows first;
    ``model_description`` / ``model_tags`` describe the registered model itself (its page
    in the registry list), whatever version is current.
    """
    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    version = mlflow.register_model(model_uri, name, tags=str_tags(tags or {}) or None).version
    if model_description:
        client.update_registered_model(name, description=model_description)
    for key, value in str_tags(model_tags or {}).items():
        client.set_registered_model_tag(name, key, value)
    if description:
        client.update_model_version(name, version, description=description)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return str(version)


def aliased_version(name: str, alias: str) -> dict[str, Any] | None:
    """``{"version", "run_id", "source", "tags", "description"}`` of the version ``name@alias``; None if unset."""
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    try:
        mv = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return {
        "version": str(mv.version),
        "run_id": mv.run_id,
        "source": mv.source,
        "tags": dict(mv.tags),
        "description": mv.description or "",
    }


def load_pyfunc(uri: str) -> Any:
    """Load a pyfunc model (e.g. ``models:/voiceid@champion``); trusted stores only (it unpickles)."""
    import_mlflow()
    import mlflow.pyfunc

    with trusted_unpickling():
        return mlflow.pyfunc.load_model(uri)
