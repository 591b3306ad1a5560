"""The enrollment store: speakers added after training, without retraining anything.

A speaker is enrolled by embedding a few of their recordings with the champion's *embedding*
model (ECAPA, or the cosine baseline's standardised statistics, whichever the selection
kept) and storing the unit embeddings; identification then compares a probe with the
centroids of the champion's own speakers *and* the store's (:meth:`Champion.identify` with a
``gallery``), at the embedding model's validation threshold.

Location and format -- a directory, ``data/enrollment/`` by default:

* ``store.npz`` -- the gallery in :func:`voiceid.serve.gallery.save_gallery`'s layout
  (``speakers`` (k,), ``vectors`` (k, d) unit centroids, ``embedder_id``), so the served model
  takes it as is (``params={"gallery": "data/enrollment/store.npz"}``), plus every
  utterance embedding (``utt_vectors`` (m, d), ``utt_owner`` (m,) row of ``speakers``) so a
  speaker can be extended later, and the store ``version``;
* ``index.json`` -- ``{"format", "version", "embedder_id", "model", "updated", "speakers":
  {name: {"n_utterances", "created", "updated", "files": [{"path", "content_hash",
  "duration"}]}}}``.  ``version`` counts changes; ``model`` says which registered model
  version made the embeddings.

Both files are replaced atomically (written beside, then ``os.replace``), the npz first: an
interrupted write leaves versions that disagree, which :meth:`EnrollmentStore.load`
reports instead of serving half a change.  Embeddings of another embedding model are refused
(``embedder_id`` differs): they live in another vector space, and mixing them would make
every cosine meaningless.  No audio is copied into the store.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from voiceid.atomic import atomic_write
from voiceid.scoring.centroids import Centroids, speaker_centroids
from voiceid.scoring.openset import UNKNOWN

FORMAT = 1


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
        return self.index_path.is_file()

    def load(self) -> StoreState:
        """The store's content; an empty state when it does not exist yet."""
        if not self.exists():
            if self.data_path.exists():
                raise EnrollmentError(f"{self.root}: {DATA_FILE} without {INDEX_FILE}: the store is damaged")
            return StoreState()
        try:
            index = json.loads(self.index_path.read_text(encoding="utf-8"))
            if index.get("format") != FORMAT:
                raise EnrollmentError(f"{self.index_path}: store format {index.get('format')!r}, this voiceid reads {FORMAT}")
            with np.load(self.data_path, allow_pickle=False) as data:
                version = int(data["version"])
                names = [str(s) for s in data["speakers"]]
                owner = np.asarray(data["utt_owner"], dtype=np.int64)
                vectors = np.asarray(data["utt_vectors"], dtype=np.float64)
        except EnrollmentError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise EnrollmentError(f"{self.root}: enrollment store not readable ({exc})") from exc
        if version != index.get("version"):
            raise EnrollmentError(
                f"{self.root}: {DATA_FILE} is version {version} but {INDEX_FILE} is version "
                f"{index.get('version')} (an interrupted write?); re-enroll or restore the store"
            )
        if sorted(names) != sorted(index.get("speakers", {})) or len(owner) != len(vectors):
            raise EnrollmentError(f"{self.root}: {DATA_FILE} and {INDEX_FILE} list different speakers")
        return StoreState(
            version,
            index.get("embedder_id"),
            index.get("model", {}),
            index.get("speakers", {}),
            vectors,
            [names[i] for i in owner],
            index.get("updated", ""),
        )

    def save(self, state: StoreState) -> None:
        """Write ``state`` as the next version (npz first, then the index)."""
        state.version += 1
        state.updated = _now()
        names = sorted(state.speakers)
        dim = state.utt_vectors.shape[1] if state.utt_vectors.size else 0
        cents = speaker_centroids(state.utt_vectors, state.utt_names) if state.utt_names else Centroids([], np.zeros((0, dim)))
        assert cents.speakers == names, (cents.speakers, names)
        owner = np.asarray([names.index(n) for n in state.utt_names], dtype=np.int64)
        arrays = {
            "speakers": np.asarray(names, dtype=str),
            "vectors": np.asarray(cents.vectors, dtype=np.float64),
            "embedder_id": np.asarray(state.embedder_id or ""),
            "utt_vectors": np.asarray(state.utt_vectors, dtype=np.float64).reshape(len(owner), dim),
            "utt_owner": owner,
            "version": np.asarray(state.version),
        }
        index = {
            "format": FORMAT,
            "version": state.version,
            "embedder_id": state.embedder_id,
            "model": state.model,
            "updated": state.updated,
            "speakers": {n: state.speakers[n] for n in names},
        }
        atomic_write(self.data_path, lambda f: np.savez(f, **arrays), fsync=True)
        atomic_write(self.index_path, lambda f: f.write(json.dumps(index, indent=2) + "\n"), binary=False, fsync=True)

    def speakers(self) -> list[SpeakerInfo]:
        state = self.load()
        return [
            SpeakerInfo(n, int(e["n_utterances"]), e["created"], e["updated"], tuple(e.get("files", ())))
            for n, e in sorted(state.speakers.items())
        ]

    def gallery(self, embedder_id: str | None) -> Centroids | None:
        """Centroids of the enrolled speakers for :meth:`Champion.identify`; None when empty.

        Raises EnrollmentError when the store was made by another embedding model.
        """
        state = self.load()
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
        return SpeakerInfo(name, len(all_files), state.speakers[name]["created"], now, tuple(all_files))

    def remove(self, name: str) -> None:
        with _locked(self.root):
            self._remove(name)

    def _remove(self, name: str) -> None:
        state = self.load()
        if name not in state.speakers:
            have = ", ".join(sorted(state.speakers)) or "none"
            raise EnrollmentError(f"{self.root}: no enrolled speaker {name!r} (enrolled: {have})")
        keep = [i for i, n in enumerate(state.utt_names) if n != name]
        state.utt_vectors = state.utt_vectors[keep]
        state.utt_names = [state.utt_names[i] for i in keep]
        del state.speakers[name]
        self.save(state)


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
