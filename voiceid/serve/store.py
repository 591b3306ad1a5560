"""The enrollment store: speakers added after training, without retraining anything.

A speaker is enrolled by embedding a few of their recordings with the champion's *embedding*
model (ECAPA, or the cosine baseline's standardised statistics, whichever the selection
kept) and storing the unit embeddings; identification then compares a probe with the
centroids of the champion's own speakers *and* the store's (:meth:`Champion.identify` with a
``gallery``), at the embedding model's validation threshold.

Location and format -- a directory, ``data/enrollment/`` by default:

* ``store.npz`` -- the whole store in one file, the only one voiceid reads: the gallery in
  :func:`voiceid.serve.gallery.save_gallery`'s layout (``speakers`` (k,), ``vectors`` (k, d)
  unit centroids, ``embedder_id``), so the served model takes it as is
  (``VOICEID_STORE=data/enrollment``, or ``load_gallery("data/enrollment/store.npz")``), plus
  every utterance embedding (``utt_vectors`` (m, d), ``utt_owner`` (m,) row of ``speakers``)
  so a speaker can be extended later, the store ``version`` and ``index`` -- UTF-8 JSON bytes
  (uint8) ``{"format", "version", "embedder_id", "model", "updated", "speakers": {name:
  {"n_utterances", "created", "updated", "files": [{"path", "content_hash", "duration"}]}}}``.
  ``version`` counts changes; ``model`` says which registered model version made the
  embeddings;
* ``index.json`` -- a readable copy of that index, rewritten after each change and never read
  back (except from a format-1 store, where it was the index; the next change migrates it);
* ``.lock`` -- the writers' lock file.

Concurrency: every change (enroll, re-enroll, append, remove) is one read-modify-write under
an exclusive ``fcntl.flock`` on ``.lock``, so concurrent writers never lose each other's
change, and it ends by replacing ``store.npz`` atomically (written beside, fsynced, then
``os.replace``; the directory is fsynced too).  Readers take no lock: they open
``store.npz`` once and see the old version or the new one, never half a change -- so
``identify`` (and the served model) keep answering while speakers are enrolled or removed, and
a crash mid-write leaves the previous version.  Embeddings of another embedding model are
refused (``embedder_id`` differs): they live in another vector space, and mixing them would
make every cosine meaningless.  No audio is copied into the store.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from voiceid.atomic import atomic_write
from voiceid.scoring.centroids import Centroids, speaker_centroids
from voiceid.scoring.openset import UNKNOWN

FORMAT = 2  # the index inside store.npz


LEGACY_FORMAT = 1  # the index in index.json only (read; migrated by the next change)


DEFAULT_STORE = Path("data/enrollment")


INDEX_FILE = "index.json"


DATA_FILE = "store.npz"


MAX_NAME_LENGTH = 100


class EnrollmentError(ValueError):
    """An enrollment that cannot be done: unusable recordings, a bad name, a store of another model."""


@dataclass(frozen=True)
class SpeakerInfo:
    name: str
    n_utterances: int
    created: str
    updated: str
    files: tuple[dict[str, Any], ...] = ()
    version: int = 0  # the store version that enroll wrote (0 in listings)


@dataclass
class StoreState:
    """The whole store in memory (what :meth:`EnrollmentStore.load` returns)."""

    version: int = 0
    embedder_id: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    speakers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> index entry
    utt_vectors: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))  # (m, d)
    utt_names: list[str] = field(default_factory=list)  # (m,) owner of each utterance row
    updated: str = ""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def check_name(name: str) -> str:
    """A usable speaker name (stripped), or EnrollmentError saying why not."""
    clean = name.strip()
    if not clean:
        raise EnrollmentError("speaker name is empty")
    if clean.lower() == UNKNOWN:
        raise EnrollmentError(f"speaker name {clean!r} is reserved: identify prints it for unrecognised voices")
    if len(clean) > MAX_NAME_LENGTH or any(not c.isprintable() for c in clean):
        raise EnrollmentError(f"speaker name {clean[:40]!r}: expected at most {MAX_NAME_LENGTH} printable characters")
    return clean


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One writer at a time: two concurrent enrolls would otherwise lose one change."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as f:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, single writer assumed
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class EnrollmentStore:
    """A directory holding ``store.npz`` + ``index.json`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_STORE) -> None:
        self.root = Path(root)

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_FILE

    @property
    def data_path(self) -> Path:
        """The npz that doubles as a gallery file for the served model."""
        return self.root / DATA_FILE

    def exists(self) -> bool:
        return self.data_path.is_file()

    def load(self) -> StoreState:
        """The store's content, one consistent version (no lock needed); an empty state when there is no store yet."""
        if not self.data_path.exists():
            if not self.index_path.exists():
                return StoreState()
            # save() commits store.npz before it writes index.json: an index with no data *now* is damage,
            # while data that appeared since the first look is a concurrent first save (read it)
            if not self.data_path.exists():
                raise EnrollmentError(f"{self.root}: {INDEX_FILE} without {DATA_FILE}: the store is damaged")
        try:
            # One open file: a concurrent change replaces the name, not what this handle reads.
            with np.load(self.data_path, allow_pickle=False) as data:
                version = int(data["version"])
                names = [str(s) for s in data["speakers"]]
                owner = np.asarray(data["utt_owner"], dtype=np.int64)
                vectors = np.asarray(data["utt_vectors"], dtype=np.float64)
                packed = np.asarray(data["index"], dtype=np.uint8).tobytes().decode("utf-8") if "index" in data.files else None
            index = json.loads(packed) if packed is not None else self._legacy_index(version)
            if not isinstance(index, dict) or index.get("format") not in (FORMAT, LEGACY_FORMAT):
                found = index.get("format") if isinstance(index, dict) else type(index).__name__
                raise EnrollmentError(f"{self.data_path}: store format {found!r}, this voiceid reads {FORMAT}")
        except EnrollmentError:
            raise
        except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:  # torn or foreign bytes
            raise EnrollmentError(f"{self.root}: enrollment store not readable ({exc})") from exc
        if version != index.get("version"):
            raise EnrollmentError(
                f"{self.root}: {DATA_FILE} is damaged (version {version}, index version {index.get('version')})"
            )
        if sorted(names) != sorted(index.get("speakers", {})) or len(owner) != len(vectors):
            raise EnrollmentError(f"{self.root}: {DATA_FILE} lists different speakers in its arrays and its index")
        return StoreState(
            version,
            index.get("embedder_id"),
            index.get("model", {}),
            index.get("speakers", {}),
            vectors,
            [names[i] for i in owner],
            index.get("updated", ""),
        )

    def _legacy_index(self, version: int) -> dict[str, Any]:
        """The index of a format-1 store (``index.json`` beside an npz without ``index``)."""
        index = json.loads(self.index_path.read_text(encoding="utf-8"))
        if index.get("format") != LEGACY_FORMAT:
            raise EnrollmentError(f"{self.index_path}: store format {index.get('format')!r}, this voiceid reads {FORMAT}")
        if version != index.get("version"):
            raise EnrollmentError(
                f"{self.root}: {DATA_FILE} is version {version} but {INDEX_FILE} is version "
                f"{index.get('version')} (an interrupted write of a format-1 store); re-enroll or restore the store"
            )
        return dict(index)

    def save(self, state: StoreState) -> None:
        """Write ``state`` as the next version: one atomic replace of ``store.npz``, then the readable ``index.json``.

        Callers hold the write lock (:meth:`add` and :meth:`remove` do): a save outside it can lose
        a concurrent change.
        """
        state.version += 1
        state.updated = _now()
        names = sorted(state.speakers)
        dim = state.utt_vectors.shape[1] if state.utt_vectors.size else 0
        cents = speaker_centroids(state.utt_vectors, state.utt_names) if state.utt_names else Centroids([], np.zeros((0, dim)))
        assert cents.speakers == names, (cents.speakers, names)
        owner = np.asarray([names.index(n) for n in state.utt_names], dtype=np.int64)
        # Any: mypy would otherwise match the dict against savez's allow_pickle: bool.
        arrays: dict[str, Any] = {
            "speakers": np.asarray(names, dtype=str),
            "vectors": np.asarray(cents.vectors, dtype=np.float64),
            "embedder_id": np.asarray(state.embedder_id or ""),
            "utt_vectors": np.asarray(state.utt_vectors, dtype=np.float64).reshape(len(owner), dim),
            "utt_owner": owner,
            "version": np.asarray(state.version),
        }
        index: dict[str, Any] = {
            "format": FORMAT,
            "version": state.version,
            "embedder_id": state.embedder_id,
            "model": state.model,
            "updated": state.updated,
            "speakers": {n: state.speakers[n] for n in names},
        }
        arrays["index"] = np.frombuffer(json.dumps(index, sort_keys=True).encode("utf-8"), dtype=np.uint8)  # UTF-8 JSON
        atomic_write(self.data_path, lambda f: np.savez(f, **arrays), fsync=True)  # the commit point
        _fsync_dir(self.root)
        copy = {**index, "note": f"a readable copy of the index inside {DATA_FILE}; voiceid reads only {DATA_FILE}"}
        try:
            atomic_write(self.index_path, lambda f: f.write(json.dumps(copy, indent=2) + "\n"), binary=False)
        except OSError as exc:  # the change is already committed: a stale copy is harmless
            warnings.warn(f"{self.index_path}: readable copy not updated ({exc})", stacklevel=2)

    def speakers(self, state: StoreState | None = None) -> list[SpeakerInfo]:
        """The enrolled speakers, sorted (of ``state``, a :meth:`load` result, when given)."""
        state = self.load() if state is None else state
        return [
            SpeakerInfo(n, int(e["n_utterances"]), e["created"], e["updated"], tuple(e.get("files", ())))
            for n, e in sorted(state.speakers.items())
        ]

    def gallery(self, embedder_id: str | None, state: StoreState | None = None) -> Centroids | None:
        """Centroids of the enrolled speakers for :meth:`Champion.identify`; None when empty.

        ``state``: a :meth:`load` result to use instead of reading the store again (so a caller
        that also reports the version sees one version).  Raises EnrollmentError when the store
        was made by another embedding model.
        """
        state = self.load() if state is None else state
        if not state.speakers:
            return None
        _check_same_model(self.root, state, embedder_id)
        return speaker_centroids(state.utt_vectors, state.utt_names)

    def add(
        self,
        name: str,
        embeddings: NDArray[np.float64],
        files: Sequence[dict[str, Any]],
        embedder_id: str,
        model: dict[str, Any] | None = None,
        append: bool = False,
    ) -> SpeakerInfo:
        """Enroll ``name`` with ``embeddings`` (n, d), replacing its recordings unless ``append``."""
        name = check_name(name)
        emb = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        if len(emb) != len(files) or len(emb) == 0:
            raise ValueError(f"{len(emb)} embeddings for {len(files)} files")
        with _locked(self.root):
            return self._add(name, emb, files, embedder_id, model, append)

    def _add(
        self,
        name: str,
        emb: NDArray[np.float64],
        files: Sequence[dict[str, Any]],
        embedder_id: str,
        model: dict[str, Any] | None,
        append: bool,
    ) -> SpeakerInfo:
        state = self.load()
        if state.speakers:
            _check_same_model(self.root, state, embedder_id)
            if emb.shape[1] != state.utt_vectors.shape[1]:
                raise EnrollmentError(
                    f"{self.root}: embeddings have {emb.shape[1]} dims, the store holds {state.utt_vectors.shape[1]}"
                )
        else:  # an empty store adopts the current model
            state.utt_vectors, state.utt_names = np.zeros((0, emb.shape[1])), []
        state.embedder_id = embedder_id
        state.model = dict(model or {})
        now = _now()
        old = state.speakers.get(name)
        keep = [i for i, n in enumerate(state.utt_names) if n != name or append]
        old_files = list(old.get("files", [])) if (old and append) else []
        known = {f.get("content_hash") for f in old_files}
        fresh = [i for i, f in enumerate(files) if f.get("content_hash") not in known or f.get("content_hash") is None]
        if not fresh:
            raise EnrollmentError(f"{name!r}: every recording is already enrolled")
        emb, files = emb[fresh], [files[i] for i in fresh]
        state.utt_vectors = np.concatenate([state.utt_vectors[keep], emb])
        state.utt_names = [state.utt_names[i] for i in keep] + [name] * len(emb)
        all_files = old_files + [dict(f) for f in files]
        state.speakers[name] = {
            "n_utterances": len(all_files),
            "created": old["created"] if old else now,
            "updated": now,
            "files": all_files,
        }
        self.save(state)
        return SpeakerInfo(name, len(all_files), state.speakers[name]["created"], now, tuple(all_files), state.version)

    def remove(self, name: str) -> int:
        """Remove ``name`` (one atomic change); returns the store version written."""
        with _locked(self.root):
            return self._remove(name)

    def _remove(self, name: str) -> int:
        state = self.load()
        if name not in state.speakers:
            have = ", ".join(sorted(state.speakers)) or "none"
            raise EnrollmentError(f"{self.root}: no enrolled speaker {name!r} (enrolled: {have})")
        keep = [i for i, n in enumerate(state.utt_names) if n != name]
        state.utt_vectors = state.utt_vectors[keep]
        state.utt_names = [state.utt_names[i] for i in keep]
        del state.speakers[name]
        self.save(state)
        return state.version


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_same_model(root: Path, state: StoreState, embedder_id: str | None) -> None:
    if embedder_id is None:
        raise EnrollmentError("the model has no embedding model, so it cannot use enrolled speakers")
    if state.embedder_id != embedder_id:
        made = state.model.get("uri", "?") + (f" v{state.model['version']}" if state.model.get("version") else "")
        raise EnrollmentError(
            f"{root}: speakers were enrolled with embedding model {state.embedder_id!r} ({made}), the current model uses "
            f"{embedder_id!r}; embeddings of different models cannot be mixed: re-enroll them into a new store "
            f"(--store DIR) or remove them (voiceid enroll --remove NAME)"
        )
