"""Audio input: decode, down-mix, resample, validate and fingerprint one file.

All decoding in voiceid goes through :func:`load_audio`, so every stage sees the same
waveform for the same file: float32 mono at the pipeline sample rate.  Problems are
raised as :class:`AudioError` subclasses that carry the path, what was expected and
what was found; stages catch them, record the file as rejected and carry on.

Example:
    >>> import numpy as np, soundfile as sf, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "tone.wav")
    >>> t = np.arange(8000) / 8000
    >>> sf.write(path, 0.5 * np.sin(2 * np.pi * 220 * t), 8000)
    >>> clip = load_audio(path, target_sr=16000)
    >>> clip.wave.shape, clip.sample_rate, clip.orig_sample_rate
    ((16000,), 16000, 8000)
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a")


class AudioError(Exception):
    """A file that cannot be used as speech input.

    Attributes:
        path: the offending file.
        reason: a short machine-friendly tag (``corrupt``, ``empty``, ``too_short``, ...).
        expected / found: human-readable descriptions of the mismatch.
    """

    reason = "bad_audio"

    def __init__(self, path: str | os.PathLike[str], expected: str, found: str) -> None:
        self.path = str(path)
        self.expected = expected
        self.found = found
        super().__init__(f"{self.path}: {self.reason}: expected {expected}, found {found}")


class UnreadableAudioError(AudioError):
    """The bytes do not decode as audio (corrupt container, text file, unknown codec)."""

    reason = "unreadable"


class EmptyAudioError(AudioError):
    """The file exists but holds no samples (zero bytes or a header only)."""

    reason = "empty"


class TooShortAudioError(AudioError):
    """Fewer seconds of audio than the configured minimum."""

    reason = "too_short"


class TooLongAudioError(AudioError):
    """More seconds of audio than the configured maximum."""

    reason = "too_long"


class SilentAudioError(AudioError):
    """No frame rises above the silence threshold (digital silence or pure hiss)."""

    reason = "silent"


class InvalidSamplesError(AudioError):
    """The decoded samples contain NaN or infinity."""

    reason = "invalid_samples"


@dataclass(frozen=True)
class Clip:
    """A decoded, mono, resampled waveform and what the file originally held."""

    wave: np.ndarray  # (n_samples,) float32 in [-1, 1]
    sample_rate: int
    orig_sample_rate: int
    orig_channels: int

    @property
    def duration(self) -> float:
        return self.wave.shape[0] / self.sample_rate


def _decode(path: Path, file: BinaryIO | None = None) -> tuple[np.ndarray, int]:
    """Decode to (n_samples, channels) float32; soundfile first, librosa's fallbacks second.

    With ``file`` (already open) the bytes come from it alone; ``path`` then only names it.
    """
    try:
        data, sr = sf.read(str(path) if file is None else file, dtype="float32", always_2d=True)
        return data, int(sr)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as sf_exc:
        # soundfile names an open file by its repr; say the name, as for a path
        sf_error = str(sf_exc) if file is None else str(sf_exc).replace(repr(file), repr(str(path)))
        if path.suffix.lower() in (".wav", ".flac", ".ogg"):
            # libsndfile owns these containers; a failure there means the bytes are bad.
            raise UnreadableAudioError(path, "a decodable audio file", f"decoder error: {sf_error}") from sf_exc
        try:
            import librosa  # deferred: heavy import, needed only for mp3/m4a fallbacks

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data, sr = librosa.load(str(path) if file is None else _reopenable(file), sr=None, mono=False)
        except Exception as exc:  # audioread raises a zoo of types, some with empty messages
            found = f"libsndfile: {sf_error}; audioread: {type(exc).__name__} {exc}".rstrip()
            raise UnreadableAudioError(path, "a decodable audio file", found) from exc
        data = np.atleast_2d(np.asarray(data, dtype=np.float32)).T
        return data, int(sr)


def load_audio(
    path: str | os.PathLike[str],
    target_sr: int = 16000,
) -> Clip:
    """Decode ``path`` once, average channels to mono and resample to ``target_sr``.

    Raises:
        UnreadableAudioError: missing file, non-audio bytes, or a corrupt container.
        EmptyAudioError: zero-length file or no samples.
        InvalidSamplesError: NaN/inf samples.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableAudioError(path, "an existing file", "no such file")
    if path.stat().st_size == 0:
        raise EmptyAudioError(path, "audio samples", "a 0-byte file")
    return _clip(*_decode(path), path, target_sr)


def load_audio_file(file: BinaryIO, name: str | os.PathLike[str], target_sr: int = 16000) -> Clip:
    """:func:`load_audio` on a file already open for reading, e.g. one opened without following symlinks.

    ``name`` is never opened: it labels errors and its suffix picks the decoders, as the
    path does for :func:`load_audio`.  Anything but a regular file is refused unread (a FIFO
    or a device would block or never end).
    """
    name = Path(name)
    st = os.fstat(file.fileno())
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableAudioError(name, "an existing file", "no such file")
    if st.st_size == 0:
        raise EmptyAudioError(name, "audio samples", "a 0-byte file")
    return _clip(*_decode(name, file), name, target_sr)


def _reopenable(file: BinaryIO) -> str | BinaryIO:
    """A path that opens this very file (not whatever its name points at now), for decoders that need a path.

    ``/proc/<pid>/fd/N`` rather than ``/proc/self``: audioread hands the path to an ffmpeg child.
    """
    proc = f"/proc/{os.getpid()}/fd/{file.fileno()}"
    if os.path.exists(proc):
        return proc
    file.seek(0)  # no /proc: the open file itself, which soundfile (not audioread) can read
    return file


def _clip(data: np.ndarray, sr: int, path: Path, target_sr: int) -> Clip:
    """A decoded (n_samples, channels) array as the pipeline's mono clip at ``target_sr``."""
    if data.shape[0] == 0:
        raise EmptyAudioError(path, "audio samples", "0 samples")
    if not np.isfinite(data).all():
        raise InvalidSamplesError(path, "finite samples", "NaN or inf values")
    channels = data.shape[1]
    wave = data.mean(axis=1) if channels > 1 else data[:, 0]
    if sr != target_sr:
        wave = soxr.resample(wave, sr, target_sr, quality="HQ")
    return Clip(np.ascontiguousarray(wave, dtype=np.float32), target_sr, sr, channels)


def frame_rms_db(wave: np.ndarray, sample_rate: int, frame_s: float = 0.025) -> np.ndarray:
    """RMS level in dBFS of non-overlapping frames (the last partial frame is dropped)."""
    n = max(1, int(frame_s * sample_rate))
    usable = (wave.shape[0] // n) * n
    if usable == 0:
        frames = wave[None, :]
    else:
        frames = wave[:usable].reshape(-1, n)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return 20.0 * np.log10(np.maximum(rms, 1e-10))


def validate_clip(
    clip: Clip,
    path: str | os.PathLike[str],
    min_duration: float,
    max_duration: float | None = None,
    silence_db: float = -70.0,
    activity_db: float = 12.0,
) -> None:
    """Raise an :class:`AudioError` if ``clip`` is too short, too long or has no speech activity.

    Silence is judged by speech *activity*, not absolute level, so quiet but clean speech is
    kept (a -55 dBFS recording of a soft voice is a speaker; -50 dBFS used to be the bar):

    * after removing any DC offset, a clip whose loudest 25 ms frame is below ``silence_db``
      dBFS is digital silence (or a constant offset);
    * otherwise, speech rises well above its own noise floor (the 10th percentile of frame
      levels): a clip whose loudest frame is less than ``activity_db`` dB above that floor is
      stationary noise, hum or hiss alone.  Real speech measured 13-50 dB (LibriSpeech,
      az_digits); white noise ~1 dB, pink noise ~10 dB, mains hum < 1 dB.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> noise = Clip(rng.normal(0, 0.01, 16000).astype(np.float32), 16000, 16000, 1)
    >>> validate_clip(noise, "hiss.wav", 0.5)
    Traceback (most recent call last):
    ...
    voiceid.data.audio.SilentAudioError: hiss.wav: silent: expected a frame >= 12 dB above the noise floor, found ...
    """
    if clip.duration < min_duration:
        raise TooShortAudioError(path, f">= {min_duration:.2f} s", f"{clip.duration:.3f} s")
    if max_duration is not None and clip.duration > max_duration:
        raise TooLongAudioError(path, f"<= {max_duration:.2f} s", f"{clip.duration:.3f} s")
    levels = frame_rms_db(clip.wave - np.mean(clip.wave, dtype=np.float64), clip.sample_rate)
    loudest = float(levels.max())
    if loudest < silence_db:
        raise SilentAudioError(
            path, f"a frame louder than {silence_db:.0f} dBFS", f"loudest {loudest:.1f} dBFS after DC removal (digital silence)"
        )
    floor = float(np.percentile(levels, 10))
    if loudest - floor < activity_db:
        raise SilentAudioError(
            path,
            f"a frame >= {activity_db:.0f} dB above the noise floor",
            f"loudest {loudest - floor:.1f} dB above a {floor:.1f} dBFS floor (stationary noise, hum or DC alone)",
        )


def content_hash(wave: np.ndarray) -> str:
    """SHA-256 of the decoded samples: equal for the same audio in any container."""
    # libsndfile maps int16 to float by /32768, so this inverts it exactly for PCM input.
    pcm16 = np.clip(np.round(wave * 32768.0), -32768, 32767).astype("<i2")
    return hashlib.sha256(pcm16.tobytes()).hexdigest()
