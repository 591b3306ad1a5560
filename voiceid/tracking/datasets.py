"""The data a run used, as an MLflow dataset input: the runs table's *Dataset* column.

Every stage hashes the prepared manifest with :func:`voiceid.tracking.config.data_hash` for the
``data_hash`` tag; that call also remembers which file it hashed (:func:`remember_manifest`, per
process). A run logged with a ``data_hash`` tag this process computed then gets the manifest as
its dataset input (:func:`log_manifest_input`): name ``manifest``, digest the first
:data:`DIGEST_CHARS` characters of the data hash (MLflow caps a digest at 36 characters; the
full hash stays in the ``data_hash`` tag), source the manifest's absolute path, the manifest's
schema and row count as its schema and profile (nothing is uploaded), and a context
(``training`` for final runs, ``evaluation`` for the select stage's run).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

MANIFEST_DATASET = "manifest"
DIGEST_CHARS = 12

_manifests: dict[str, Path] = {}


def remember_manifest(data_hash: str, path: str | Path) -> None:
    """Record that ``data_hash`` is the hash of the manifest at ``path`` (this process only)."""
    _manifests[data_hash] = Path(path).resolve()


def manifest_path(data_hash: str) -> Path | None:
    """The manifest this process hashed to ``data_hash``, if any and still present."""
    path = _manifests.get(data_hash)
    return path if path is not None and path.is_file() else None


def manifest_dataset(data_hash: str) -> Any | None:
    """The MLflow dataset of the manifest hashed to ``data_hash``; None when this process did not hash it."""
    path = manifest_path(data_hash)
    if path is None:
        return None
    from voiceid.tracking.config import import_mlflow

    import_mlflow()  # telemetry off before mlflow's first import
    mlflow_data = importlib.import_module("mlflow.data")
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():
        # MLflow registers two local-file source classes and warns that it picked one of them
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
        source = resolve_dataset_source(str(path))
    digest = data_hash[:DIGEST_CHARS]
    if path.suffix == ".parquet":
        import pandas as pd

        with warnings.catch_warnings():
            # its hint about integer columns and missing values concerns model inputs, not this record
            warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column.*")
            dataset = mlflow_data.from_pandas(pd.read_parquet(path), source=source, name=MANIFEST_DATASET, digest=digest)
            _ = dataset.schema  # inferred (and cached) here, inside the filter
        return dataset
    # mlflow's stubs leave Dataset.profile abstract; MetaDataset works (its profile is None)
    return MetaDataset(source, name=MANIFEST_DATASET, digest=digest)  # type: ignore[abstract]


def log_manifest_input(mlflow: ModuleType, data_hash: str | None, context: str) -> bool:
    """Log the manifest as a dataset input of the active run; False when there is none to log."""
    dataset = manifest_dataset(data_hash) if data_hash else None
    if dataset is None:
        return False
    mlflow.log_input(dataset, context=context)
    return True
