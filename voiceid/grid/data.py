"""The grid's input rows: one feature table split into enrolled train / val / test."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from voiceid.grid.params import GridError

METADATA_COLUMNS = ("utt_id", "speaker", "role", "split", "content_hash", "path", "duration", "text")


@dataclass(frozen=True)
class Rows:
    X: np.ndarray  # (n, d) float32
    y: np.ndarray  # (n,) speaker labels
    utt_id: np.ndarray


@dataclass(frozen=True)
class GridData:
    """Enrolled rows of one feature table, by split."""

    feature_set: str
    feature_names: tuple[str, ...]
    train: Rows
    val: Rows
    test: Rows

    @property
    def fingerprint(self) -> str:
        """Hash of features, labels and splits: a study resumes only on identical inputs."""
        h = hashlib.sha256()
        for rows in (self.train, self.val, self.test):
            h.update(np.ascontiguousarray(rows.X).tobytes())
            h.update("\n".join(map(str, rows.y)).encode())
            h.update("\n".join(map(str, rows.utt_id)).encode())
        return h.hexdigest()


def read_table(path: str) -> tuple[pd.DataFrame, np.ndarray, tuple[str, ...]]:
    """Feature parquet -> (metadata, X float32, feature names); every non-metadata column is a feature."""
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise GridError(f"{path}: cannot read feature table: {exc}") from exc
    missing = [c for c in ("utt_id", "speaker", "role", "split") if c not in table.columns]
    if missing:
        raise GridError(f"{path}: feature table lacks column(s) {', '.join(missing)}")
    names = tuple(c for c in table.columns if c not in METADATA_COLUMNS)
    if not names:
        raise GridError(f"{path}: feature table has no feature columns")
    meta = table.loc[:, [c for c in table.columns if c in METADATA_COLUMNS]]
    return meta, table.loc[:, list(names)].to_numpy(dtype=np.float32), names


def grid_data(meta: pd.DataFrame, X: np.ndarray, feature_set: str, names: tuple[str, ...]) -> GridData:
    """Split the enrolled rows; errors name the feature set and the problem."""
    enrolled = (meta["role"] == "enrolled").to_numpy()
    bad = enrolled & ~np.isfinite(X).all(axis=1)
    if bad.any():
        ids = ", ".join(meta.loc[bad, "utt_id"].astype(str).head(5))
        raise GridError(f"{feature_set}: {int(bad.sum())} enrolled rows have non-finite features (e.g. {ids})")
    parts = {}
    for split in ("train", "val", "test"):
        mask = enrolled & (meta["split"] == split).to_numpy()
        if not mask.any():
            raise GridError(f"{feature_set}: no enrolled rows in split {split!r}")
        parts[split] = Rows(
            X[mask], meta.loc[mask, "speaker"].astype(str).to_numpy(), meta.loc[mask, "utt_id"].astype(str).to_numpy()
        )
    unseen = set(parts["val"].y) | set(parts["test"].y)
    unseen -= set(parts["train"].y)
    if unseen:
        raise GridError(f"{feature_set}: speakers {sorted(unseen)[:5]} have val/test rows but no train rows")
    return GridData(feature_set, names, parts["train"], parts["val"], parts["test"])
