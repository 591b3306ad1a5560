"""Feature tables on disk: parquet layouts of the clip-level sets and of the logmel frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from voiceid.atomic import atomic_write

META_COLUMNS: tuple[str, ...] = ("utt_id", "speaker", "role", "split", "content_hash")


# -- table formats (data/features/<set>.parquet) --
def write_feature_table(path: str | Path, meta: pd.DataFrame, X: np.ndarray, names: list[str]) -> None:
    """Metadata columns, then one float32 column per feature in vector order."""
    if X.shape != (len(meta), len(names)):
        raise ValueError(f"{path}: features {X.shape} do not match {len(meta)} rows x {len(names)} names")
    cols = {c: pa.array(meta[c].astype(str).to_numpy()) for c in META_COLUMNS}
    X = np.asarray(X, dtype=np.float32)
    cols.update({n: pa.array(X[:, j]) for j, n in enumerate(names)})
    table = pa.table(cols)
    atomic_write(path, lambda f: pq.write_table(table, f))  # readers see the old table or the new one


def read_feature_table(path: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """(metadata frame, X float32 (n_utts, dim)); every non-metadata column is a feature."""
    df = pd.read_parquet(path)
    missing = [c for c in META_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a feature table, missing column(s) {missing}")
    feats = [c for c in df.columns if c not in META_COLUMNS]
    X = np.ascontiguousarray(df[feats].to_numpy(dtype=np.float32)).reshape(len(df), len(feats))
    return df[list(META_COLUMNS)].reset_index(drop=True), X


def write_logmel_table(path: str | Path, meta: pd.DataFrame, mats: list[np.ndarray]) -> None:
    """Metadata, ``n_mels`` and each (n_frames, n_mels) matrix flattened row-major."""
    if len(mats) != len(meta):
        raise ValueError(f"{path}: {len(mats)} matrices for {len(meta)} rows")
    cols = {c: pa.array(meta[c].astype(str).to_numpy()) for c in META_COLUMNS}
    cols["n_mels"] = pa.array([m.shape[1] for m in mats], type=pa.int64())
    offsets = np.concatenate([[0], np.cumsum([m.size for m in mats], dtype=np.int64)])
    values = pa.array(np.concatenate([m.astype(np.float32).ravel() for m in mats]) if mats else [], type=pa.float32())
    if offsets[-1] < 2**31:
        cols["logmel"] = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    else:  # past 2^31 values (~75 h of 80-band, 10 ms frames) 32-bit list offsets overflow
        cols["logmel"] = pa.LargeListArray.from_arrays(pa.array(offsets), values)
    table = pa.table(cols)
    atomic_write(path, lambda f: pq.write_table(table, f))  # readers see the old table or the new one


def read_logmel(path: str | Path) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """(metadata frame, list of (n_frames, n_mels) float32 matrices) from a logmel table."""
    table = pq.read_table(str(path))
    missing = [c for c in (*META_COLUMNS, "n_mels", "logmel") if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: not a logmel table, missing column(s) {missing}")
    meta = table.select(list(META_COLUMNS)).to_pandas()
    col = table.column("logmel").combine_chunks()
    values = col.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    offsets = col.offsets.to_numpy()
    n_mels = table.column("n_mels").to_numpy()
    mats = [values[offsets[i] : offsets[i + 1]].reshape(-1, int(n_mels[i])) for i in range(len(meta))]
    return meta, mats
