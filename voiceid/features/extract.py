"""Running feature extraction over a manifest: content-hash cache, parallel workers, rejects.

Each file is decoded once (``load_audio`` at the pipeline rate) in a worker and every
requested set is computed from that one waveform (:func:`voiceid.features.signal.compute_sets`).
Results are cached per (set, content hash, hash of that set's params), so adding files
computes only the new ones and changing a set's params recomputes only that set.  The
main process writes each cache entry atomically (temp file + ``os.replace``) as soon as
its file finishes, so a killed run loses at most the files in flight.

Example:
    >>> import tempfile
    >>> from voiceid.features.params import FeatureParams
    >>> cache = FeatureCache(tempfile.mkdtemp(), FeatureParams())
    >>> cache.get("mfcc60", "ab" * 32) is None
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, effective_n_jobs
from librosa.version import version as LIBROSA_VERSION  # = librosa.__version__, which librosa's stub omits
from tqdm import tqdm

from voiceid.atomic import atomic_write
from voiceid.data.audio import AudioError, content_hash, load_audio
from voiceid.features import dvector
from voiceid.features.jit import warm_jit_caches
from voiceid.features.params import FEATURE_VERSION, VECTOR_SETS, FeatureParams
from voiceid.features.signal import compute_sets, feature_names
from voiceid.features.tables import (
    META_COLUMNS,
    write_feature_table,
    write_logmel_table,
)

REQUIRED_COLUMNS = (*META_COLUMNS, "path")


def set_params_key(name: str, params: FeatureParams) -> str:
    """Short hash of everything that determines set ``name``'s numbers (not n_jobs)."""
    relevant: dict[str, object] = {
        "set": name,
        "version": FEATURE_VERSION,
        "librosa": LIBROSA_VERSION,
        "sample_rate": params.sample_rate,
    }
    if name == "seed498":
        relevant["tonnetz_chroma"] = params.tonnetz_chroma
    elif name == "extended":
        relevant["delta_width"] = params.delta_width
    elif name == "logmel":
        relevant["logmel"] = asdict(params.logmel)
    elif name == "dvector":  # the pretrained encoder's package versions (and its weights) are part of the numbers
        relevant.update(dvector=asdict(params.dvector), dvector_version=dvector.DVECTOR_VERSION, **dvector.versions())
    blob = json.dumps(relevant, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class FeatureCache:
    """One ``.npy`` per (set, file): ``<root>/<set>/<hash[:2]>/<content_hash>-<params key>.npy``."""

    def __init__(self, root: str | os.PathLike[str], params: FeatureParams) -> None:
        self.root = Path(root)
        self._keys: dict[str, str] = {name: set_params_key(name, params) for name in params.sets}

    def path(self, name: str, chash: str) -> Path:
        return self.root / name / chash[:2] / f"{chash}-{self._keys[name]}.npy"

    def get(self, name: str, chash: str) -> np.ndarray | None:
        path = self.path(name, chash)
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # Writes are atomic, so this is outside damage; recomputing heals it.
            return None

    def put(self, name: str, chash: str, array: np.ndarray) -> None:
        atomic_write(self.path(name, chash), lambda fh: np.save(fh, array, allow_pickle=False))


@dataclass(frozen=True)
class Reject:
    path: str
    utt_id: str
    reason: str


@dataclass
class Extraction:
    """What one extraction run produced; rows of ``meta`` align with each list in ``arrays``."""

    meta: pd.DataFrame
    arrays: dict[str, list[np.ndarray]]
    rejects: list[Reject] = field(default_factory=list)
    n_computed: int = 0  # files decoded and computed (cache misses)
    n_cached: int = 0  # files served entirely from the cache
    seconds: float = 0.0


def compute_file(
    path: str, expected_hash: str | None, sets: tuple[str, ...], params: FeatureParams
) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """(arrays, None) for a good file, (None, reason) for one this stage rejects."""
    try:
        clip = load_audio(path, params.sample_rate)
    except AudioError as exc:
        return None, f"{exc.reason}: expected {exc.expected}, found {exc.found}"
    if expected_hash:
        found = content_hash(clip.wave)
        if found != expected_hash:
            return None, (
                f"content_changed: manifest hash {expected_hash[:12]}..., decoded audio {found[:12]}... "
                "(re-run prepare, or features.sample_rate differs from prepare.sample_rate)"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa warns on near-silent frames; NaN/inf is checked below
            arrays = compute_sets(clip.wave, clip.sample_rate, sets, params)
    except Exception as exc:  # librosa/numpy raise many types; one bad file must not stop the run
        return None, f"feature_error: {type(exc).__name__}: {exc}"
    bad = [name for name, arr in arrays.items() if not np.isfinite(arr).all()]
    if bad:
        return None, f"non_finite_features: NaN/inf values in {', '.join(bad)}"
    return arrays, None


Job = tuple[int, str, str | None, tuple[str, ...]]  # (row, path, expected hash, sets to compute)


Result = tuple[int, dict[str, np.ndarray] | None, str | None]  # (row, arrays, reject reason)


def _run_chunk(jobs: list[Job], params: FeatureParams) -> list[Result]:
    return [(i, *compute_file(path, chash, sets, params)) for i, path, chash, sets in jobs]


def _chunks(jobs: list[Job], n_workers: int) -> list[list[Job]]:
    # A file takes a few ms, about what one joblib dispatch costs, so ship several per
    # task; ~8 tasks per worker keeps the load balanced and the progress bar moving.
    size = max(1, min(32, len(jobs) // (8 * n_workers)))
    return [jobs[k : k + size] for k in range(0, len(jobs), size)]


class ManifestError(ValueError):
    """The manifest handed to the stage is unusable as a whole (not one bad file)."""


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ValueError otherwise.

    >>> parse_shard("1/4")
    (1, 4)
    """
    try:
        index, count = (int(part) for part in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be i/n (e.g. 0/4), found {spec!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard i/n needs 0 <= i < n, found {spec!r}")
    return index, count


def in_shard(manifest: pd.DataFrame, index: int, count: int) -> pd.Series:
    """Rows of shard ``index`` of ``count``: assigned by content hash, so every machine given the
    same manifest splits it the same way and duplicate audio lands in one shard.

    >>> rows = pd.DataFrame({"content_hash": ["00" * 32, "01" + "00" * 31, "ff" * 32]})
    >>> [in_shard(rows, i, 2).tolist() for i in (0, 1)]
    [[False, True, True], [True, False, False]]
    """
    if "content_hash" not in manifest.columns:
        raise ManifestError("manifest lacks column content_hash (needed to shard it)")
    digest = manifest["content_hash"].astype(str).map(lambda h: int(hashlib.sha256(h.encode()).hexdigest()[:8], 16))
    return (digest % count) == index


def check_manifest(manifest: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise ManifestError(f"manifest lacks column(s) {missing} (has: {', '.join(manifest.columns)})")
    dupes = manifest["utt_id"][manifest["utt_id"].duplicated()].tolist()
    if dupes:
        raise ManifestError(f"manifest has duplicate utt_id(s): {dupes[:5]}")
    no_hash = manifest["utt_id"][manifest["content_hash"].isna() | (manifest["content_hash"].astype(str) == "")]
    if len(no_hash):
        raise ManifestError(f"manifest rows without content_hash: {no_hash.tolist()[:5]}")


def extract_features(
    manifest: pd.DataFrame,
    params: FeatureParams,
    cache_dir: str | os.PathLike[str] | None,
    n_jobs: int | None = None,
    progress: bool = True,
) -> Extraction:
    """Compute ``params.sets`` for every manifest row, reusing cached entries.

    ``cache_dir=None`` computes everything and stores nothing (benchmarks).  A rejected
    file is dropped from every set so all tables hold the same utterances.
    """
    check_manifest(manifest)
    start = time.perf_counter()
    sets = tuple(params.sets)
    if "dvector" in sets:
        dvector.require_resemblyzer()  # DvectorUnavailable now, not every file rejected later
    cache = FeatureCache(cache_dir, params) if cache_dir is not None else None
    manifest = manifest.reset_index(drop=True)
    paths = manifest["path"].astype(str).tolist()
    hashes = manifest["content_hash"].tolist()

    found: list[dict[str, np.ndarray]] = [{} for _ in paths]
    todo: list[tuple[int, tuple[str, ...]]] = []
    for i, chash in enumerate(hashes):
        if cache is not None:
            for name in sets:
                arr = cache.get(name, chash)
                if arr is not None:
                    found[i][name] = arr
        missing = tuple(s for s in sets if s not in found[i])
        if missing:
            todo.append((i, missing))

    reasons: dict[int, str] = {}
    if todo:
        n_workers = effective_n_jobs(params.n_jobs if n_jobs is None else n_jobs)
        if n_workers > 1:
            warm_jit_caches()  # workers must only read numba's cache, never write it at once
        chunks = _chunks([(i, paths[i], hashes[i], missing) for i, missing in todo], n_workers)
        runner = Parallel(n_jobs=n_workers, return_as="generator_unordered")
        with tqdm(total=len(todo), desc="features", unit="file", disable=not progress) as bar:
            for chunk in runner(delayed(_run_chunk)(chunk, params) for chunk in chunks):
                for i, arrays, reason in chunk:
                    if arrays is None:
                        reasons[i] = str(reason)
                        continue
                    for name, arr in arrays.items():
                        if cache is not None:
                            cache.put(name, hashes[i], arr)
                        found[i][name] = arr
                bar.update(len(chunk))

    ok = [i for i in range(len(paths)) if i not in reasons]
    rejects = [Reject(paths[i], str(manifest.at[i, "utt_id"]), reasons[i]) for i in sorted(reasons)]
    return Extraction(
        meta=manifest.loc[ok].reset_index(drop=True),
        arrays={name: [found[i][name] for i in ok] for name in sets},
        rejects=rejects,
        n_computed=len(todo),
        n_cached=len(paths) - len(todo),
        seconds=time.perf_counter() - start,
    )


def write_tables(extraction: Extraction, out_dir: str | os.PathLike[str]) -> list[Path]:
    """``<out_dir>/<set>.parquet`` for every extracted set; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, arrays in extraction.arrays.items():
        path = out_dir / f"{name}.parquet"
        if name in VECTOR_SETS:
            names = feature_names(name)
            X = np.stack(arrays) if arrays else np.zeros((0, len(names)), np.float32)
            write_feature_table(path, extraction.meta, X, names)
        else:
            write_logmel_table(path, extraction.meta, arrays)
        written.append(path)
    return written


def write_rejects(rejects: list[Reject], path: str | os.PathLike[str]) -> None:
    """CSV with columns path, utt_id, reason (header only when nothing was rejected)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([asdict(r) for r in rejects], columns=["path", "utt_id", "reason"]).to_csv(path, index=False)
