"""What the served model accepts in a request row, and which server-side files a request may name.

A row gives its audio in exactly one of three columns:

* ``waveform`` (a flat list of mono float samples) with ``sample_rate`` (Hz; resampled to the
  pipeline rate exactly as a decoded file is);
* ``audio_b64``: the bytes of an audio file, base64 -- whatever libsndfile decodes (wav, flac,
  ogg/vorbis/opus, mp3), decoded by the same :func:`voiceid.data.audio.load_audio` as a file;
* ``path``: a file on the server, **off by default**.  A server started with
  ``VOICEID_AUDIO_ROOT=DIR`` (:data:`AUDIO_ROOT_ENV`) reads files under ``DIR`` only: a relative
  path is taken under ``DIR``, symlinks and ``..`` are resolved (:meth:`Path.resolve`) first,
  and a path that resolves outside ``DIR`` is refused without being opened.  The same rule
  applies to the ``gallery`` request param.  A ``path`` row's file is then opened without
  following a symlink and checked again once open (:func:`open_confined`), so a symlink
  swapped in after the check cannot lead the read outside ``DIR``.

Every row is then checked as ``voiceid identify`` checks a file (:class:`RowRules`, the CLI's
defaults): unreadable, empty, NaN/inf samples, too short, silent -- plus bounds on what a
client may send (wrong shape, too long, too many bytes).  A row that fails gets an error
``"<reason>: <what was expected and found>"`` (the ``--json`` rows' format) and the other rows
are answered.

Server-side configuration (environment of ``mlflow models serve``; :class:`ServeConfig`):
``VOICEID_AUDIO_ROOT`` as above, and ``VOICEID_STORE=DIR``: an enrollment store whose speakers
every request includes, re-read when ``DIR/store.npz`` changes (:class:`LiveGallery`).
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import tempfile
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import soxr

from voiceid.data.audio import (
    AudioError,
    Clip,
    EmptyAudioError,
    InvalidSamplesError,
    UnreadableAudioError,
    load_audio,
    load_audio_file,
    validate_clip,
)
from voiceid.scoring.centroids import Centroids
from voiceid.serve.gallery import load_gallery
from voiceid.serve.store import DATA_FILE, EnrollmentStore

AUDIO_ROOT_ENV = "VOICEID_AUDIO_ROOT"


STORE_ENV = "VOICEID_STORE"


# (name, MLflow column type, required): the served model's input signature.  ``waveform`` and
# ``sample_rate`` are "any" so that MLflow passes a malformed value through to the per-row
# checks here (a typed column would fail the whole request, and could not mix waveform rows
# with other rows: a missing array cell is NaN to pandas).
INPUT_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("path", "string", False),
    ("waveform", "any", False),
    ("sample_rate", "any", False),
    ("audio_b64", "string", False),
)


SOURCES = ("path", "waveform", "audio_b64")  # one per row


MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384_000


@dataclass(frozen=True)
class RowRules:
    """What a row's audio must be: ``voiceid identify``'s checks (same defaults) plus request bounds."""

    min_duration: float = 0.25  # seconds (identify --min-duration)
    silence_db: float = -50.0  # dBFS (identify --silence-db)
    max_duration: float = 600.0  # seconds: longer rows are refused (a client cannot make the server chew for minutes)
    max_bytes: int = 50 * 2**20  # decoded size of an ``audio_b64`` value


class RowError(ValueError):
    """A row that cannot be answered, with a short ``reason`` tag (``forbidden``, ``wrong_shape``, ``bad_row``...)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {message}")


def describe(exc: Exception, label: str = "") -> str:
    """The row's ``error``: ``reason: expected ..., found ...`` (no server-side path in it)."""
    if isinstance(exc, AudioError):
        text = f"{exc.reason}: expected {exc.expected}, found {exc.found}"
        return text.replace(exc.path, label) if exc.path and label else text
    if isinstance(exc, RowError):
        return str(exc)
    return f"invalid: {exc}"  # e.g. a clip the front end cannot frame


def resolve_root(root: str | os.PathLike[str] | None) -> Path | None:
    """The audio root as an absolute, symlink-free directory (None: server-side paths off)."""
    if root is None or str(root) == "":
        return None
    resolved = Path(root).expanduser().resolve()
    if not resolved.is_dir():
        raise ValueError(f"audio root {root} is not a directory")
    return resolved


def confine(name: Any, root: Path | None, what: str = "path") -> Path:
    """The file ``name`` under ``root`` -- resolved, never opened here -- or a ``forbidden`` RowError."""
    if root is None:
        instead = "send the audio as 'waveform' + 'sample_rate' or 'audio_b64', or " if what == "path" else ""
        raise RowError(
            "forbidden",
            f"server-side files are off on this server ({what} {str(name)[:200]!r}): {instead}start the server with {AUDIO_ROOT_ENV}=DIR "
            "to allow files under DIR",
        )
    if not isinstance(name, str) or not name or "\x00" in name:
        raise RowError("bad_row", f"{what} must be a non-empty string")
    candidate = Path(name)  # no ~ expansion: "~/x" is a name under the root like any other
    try:
        resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise RowError("forbidden", f"{what} {_shown(name)} cannot be resolved ({type(exc).__name__})") from exc
    if not resolved.is_relative_to(root):
        raise _outside(name, what)
    return resolved


def _shown(name: str) -> str:
    return repr(name if len(name) <= 200 else name[:200] + "...")


def _outside(name: str, what: str) -> RowError:
    return RowError("forbidden", f"{what} {_shown(name)} is outside the server's audio root")


def open_confined(name: str, resolved: Path, root: Path) -> BinaryIO:
    """Open :func:`confine`'s ``resolved`` for reading, refusing anything that is not, once open, a file under ``root``.

    The name may have changed since it was resolved.  ``O_NOFOLLOW`` refuses a symlink swapped
    in for the file itself before anything is opened (a FIFO or device behind it is never
    touched); a swapped-in directory symlink is followed by ``open``, so the open file is then
    checked by what the kernel says it is.  ``O_NONBLOCK``: a FIFO must not hang the request.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(resolved, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a symlink now
            raise _outside(name, "path") from None
        missing = exc.errno in (errno.ENOENT, errno.ENOTDIR)  # worded as load_audio words it
        raise UnreadableAudioError(
            resolved, "an existing file", "no such file" if missing else str(exc.strerror).lower()
        ) from None
    try:
        if not _opened_under(fd, resolved, root):
            raise _outside(name, "path")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _opened_under(fd: int, resolved: Path, root: Path) -> bool:
    """Whether the file open on ``fd`` lies under ``root``, whatever its name points at by now."""
    proc = f"/proc/self/fd/{fd}"
    if os.path.islink(proc):  # Linux: the kernel's symlink-free path of the open file, never re-resolved
        return Path(os.readlink(proc)).is_relative_to(root)
    # elsewhere: the name must still resolve, symlink-free and under root, to this very file
    try:
        now = resolved.resolve(strict=True)
        same = os.path.samestat(os.fstat(fd), os.stat(now))
    except (OSError, RuntimeError):
        return False
    return now == resolved and same


def read_confined(name: Any, root: Path | None, target_sr: int) -> Clip:
    """A ``path`` row's clip: :func:`confine`, then decode from :func:`open_confined`'s file, never by name."""
    resolved = confine(name, root)
    assert root is not None  # confine refuses every name without a root
    with open_confined(name, resolved, root) as f:
        return load_audio_file(f, resolved, target_sr)


def _missing(value: Any) -> bool:
    """None, NaN, pandas' NA or "" -- how a frame spells an absent cell."""
    if value is None or (isinstance(value, str) and value == ""):
        return True
    return bool(pd.api.types.is_scalar(value) and pd.isna(value))


def _sample_rate(value: Any) -> int:
    if _missing(value):
        raise RowError("bad_row", "a 'waveform' needs a 'sample_rate'")
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise RowError("bad_row", f"sample_rate must be a number, found {type(value).__name__}") from None
    if not rate.is_integer() or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise RowError("bad_row", f"sample_rate must be an integer in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz, found {value!r}")
    return int(rate)


def waveform_clip(wave: Any, sample_rate: Any, target_sr: int, rules: RowRules, label: str) -> Clip:
    """A waveform row as :func:`load_audio` would have made it from a file (float32, mono, resampled)."""
    sr = _sample_rate(sample_rate)
    try:
        arr = np.asarray(wave, dtype=np.float64)
    except (TypeError, ValueError):
        raise RowError("wrong_shape", "waveform must be a flat list of numbers (mono samples)") from None
    if arr.ndim != 1:
        raise RowError("wrong_shape", f"waveform must be a flat list of mono samples, found an array of shape {arr.shape}")
    if arr.size == 0:
        raise EmptyAudioError(label, "audio samples", "0 samples")
    if arr.size > rules.max_duration * sr:
        raise RowError("too_long", f"expected <= {rules.max_duration:.0f} s, found {arr.size / sr:.1f} s")
    with np.errstate(over="ignore"):  # beyond float32: inf, refused just below
        wave32 = arr.astype(np.float32)
    if not np.isfinite(wave32).all():
        raise InvalidSamplesError(label, "finite samples", "NaN or inf values")
    if sr != target_sr:
        wave32 = soxr.resample(wave32, sr, target_sr, quality="HQ")
    return Clip(np.ascontiguousarray(wave32, dtype=np.float32), target_sr, sr, 1)


def encoded_clip(text: Any, target_sr: int, rules: RowRules, label: str) -> Clip:
    """An ``audio_b64`` row: base64 of a file's bytes, decoded exactly as that file would be."""
    if not isinstance(text, str):
        raise RowError("bad_row", f"audio_b64 must be a base64 string, found {type(text).__name__}")
    if len(text) > 4 * (rules.max_bytes // 3 + 1) + 1024:  # before decoding anything
        raise RowError("too_large", f"expected at most {rules.max_bytes} bytes of audio, found ~{len(text) * 3 // 4}")
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RowError("bad_row", "audio_b64 is not valid base64") from None
    if not raw:
        raise EmptyAudioError(label, "audio bytes", "0 bytes")
    # load_audio itself, on a private temporary: the decoder sniffs the format from the bytes, and
    # the .wav name keeps it on libsndfile (no fallback decoders run on a client's bytes).
    with tempfile.NamedTemporaryFile(prefix="voiceid-row-", suffix=".wav") as f:
        f.write(raw)
        f.flush()
        return load_audio(f.name, target_sr)  # an AudioError names the temporary: describe() puts the label there


def row_label(rec: Mapping[str, Any], i: int) -> str:
    """How errors name row ``i``: the client's own path, else the row number and column."""
    path = rec.get("path")
    if isinstance(path, str) and path:
        return path
    return f"row {i} " + ("audio_b64" if not _missing(rec.get("audio_b64")) else "waveform")


def row_clip(rec: Mapping[str, Any], i: int, target_sr: int, root: Path | None, rules: RowRules) -> Clip:
    """The validated clip of request row ``i``; raises RowError or AudioError (format with :func:`describe`)."""
    given = [c for c in SOURCES if not _missing(rec.get(c))]
    if len(given) != 1:
        found = ", ".join(given) if given else "none"
        raise RowError("bad_row", f"expected exactly one of 'path', 'waveform' (+ 'sample_rate'), 'audio_b64', found {found}")
    label = row_label(rec, i)
    if given[0] == "path":
        clip = read_confined(rec["path"], root, target_sr)
    elif given[0] == "waveform":
        clip = waveform_clip(rec["waveform"], rec.get("sample_rate"), target_sr, rules, label)
    else:
        clip = encoded_clip(rec["audio_b64"], target_sr, rules, label)
    validate_clip(clip, label, rules.min_duration, rules.max_duration, rules.silence_db)
    return clip


@dataclass
class LiveGallery:
    """An enrollment store's speakers, re-read whenever its ``store.npz`` is replaced (cheap ``stat`` per call)."""

    root: Path
    embedder_id: str | None
    _key: tuple[int, int, int] | None = None
    _gallery: Centroids | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self) -> Centroids | None:
        """The current gallery (None while the store is empty or absent); EnrollmentError for another model's store."""
        try:
            st = (self.root / DATA_FILE).stat()
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key != self._key:
                store = EnrollmentStore(self.root)
                self._gallery = store.gallery(self.embedder_id, store.load())
                self._key = key
            return self._gallery


@dataclass(frozen=True)
class ServeConfig:
    """The server's settings (never the client's): where ``path`` rows may point, which store is served."""

    audio_root: Path | None = None
    store: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeConfig:
        env = os.environ if environ is None else environ
        store = env.get(STORE_ENV, "")
        return cls(resolve_root(env.get(AUDIO_ROOT_ENV) or None), Path(store).expanduser().resolve() if store else None)


def request_gallery(param: Any, config: ServeConfig, live: LiveGallery | None, embedder_id: str | None) -> Centroids | None:
    """The gallery of one request: ``params.gallery`` (a file or store under the audio root), else the served store."""
    if _missing(param):
        return live.get() if live is not None else None
    path = confine(param, config.audio_root, what="gallery")
    if path.is_dir():
        path = path / DATA_FILE
    try:
        return load_gallery(path, embedder_id)
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:  # a torn or foreign file too
        raise RowError("bad_gallery", str(exc).replace(str(path), str(param))) from None
