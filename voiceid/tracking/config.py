"""Where runs go and what identifies them: the tracking URI, telemetry, git/data/pip identity.

The tracking URI is ``$MLFLOW_TRACKING_URI`` when set, else the ``uri`` given to
:func:`configure` (``tracking.uri`` in params.yaml), else ``sqlite:///mlflow.db``
(relative to the working directory, which is the repo root under ``dvc repro``).
mlflow is imported lazily (:func:`import_mlflow`), after telemetry has been switched off,
because its telemetry client starts at import time and the import costs seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import subprocess
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from voiceid.tracking._common import scoped_env
from voiceid.tracking.datasets import remember_manifest

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


@dataclass(frozen=True)
class TrackingParams:
    """``tracking`` section of params.yaml."""

    uri: str = DEFAULT_TRACKING_URI  # $MLFLOW_TRACKING_URI overrides it


def import_mlflow() -> ModuleType:
    """Import mlflow with telemetry and artifact progress bars off (unless the environment says otherwise)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    # a progress bar per local artifact copy (each model the select stage loads) is noise in a stage log
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    return mlflow


def configure(uri: str | None = None) -> str:
    """Point MLflow at the tracking store and return its URI.

    ``$MLFLOW_TRACKING_URI`` wins over ``uri`` so a test or a shared server can redirect
    every stage without editing params.yaml.
    """
    resolved = os.environ.get("MLFLOW_TRACKING_URI") or uri or DEFAULT_TRACKING_URI
    import_mlflow().set_tracking_uri(resolved)
    return resolved


def uri_override(uri: str | None) -> AbstractContextManager[None]:
    """Inside the block an explicit ``uri`` beats ``$MLFLOW_TRACKING_URI`` (None or "": no change)."""
    return scoped_env("MLFLOW_TRACKING_URI", uri or None)


def experiment_name(dataset: str, feature_set: str) -> str:
    """Experiment holding one dataset/feature-set grid."""
    return f"voiceid/{dataset}/{feature_set}"


# MLflow 3's UI opens an experiment on the view its kind names: without this tag every voiceid
# experiment opened on the GenAI "Overview" (traces) page; "custom_model_development" is the UI's
# "Model training" kind, which opens on the training-runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def set_experiment(name: str) -> str:
    """Create the experiment if needed, make it current, return its id.

    voiceid's experiments are model-training experiments (:data:`EXPERIMENT_KIND`); one
    without a kind (made by an older voiceid) gets it, one with a kind keeps it.
    """
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        # another worker may create it meanwhile (team mode): then set_experiment below uses theirs
        with contextlib.suppress(MlflowException):
            client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    elif exp.lifecycle_stage == "active" and EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return str(mlflow.set_experiment(name).experiment_id)


def git_commit(repo: str | Path = ".") -> str:
    """HEAD commit of the repository at ``repo`` (``+dirty`` if the tree has changes), or "unknown"."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
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
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        remember_manifest(digest, path)
        return digest
    import pandas as pd

    frame = pd.read_parquet(path)
    missing = [c for c in _MANIFEST_IDENTITY if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: manifest lacks column(s) {', '.join(missing)}")
    rows = frame.loc[:, list(_MANIFEST_IDENTITY)].astype(str).sort_values("utt_id")
    text = rows.to_csv(index=False, lineterminator="\n")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    remember_manifest(digest, path)  # runs tagged with this hash get the manifest as their dataset
    return digest


def pip_requirements(*distributions: str) -> list[str]:
    """``name==version`` for each installed distribution, for a model's explicit requirements."""
    out = []
    for dist in distributions:
        try:
            out.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError as exc:
            raise ValueError(f"cannot pin requirement {dist!r}: it is not installed") from exc
    return out
