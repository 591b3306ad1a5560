"""``dvector``: 256-d utterance embeddings from Resemblyzer's pretrained GE2E speaker encoder.

Resemblyzer 0.1.4 ships its weights (``pretrained.pt``, 17 MB: a 3-layer LSTM, 256 hidden
units, trained with the GE2E loss on LibriSpeech train-other, VoxCeleb1 and VoxCeleb2) inside
its wheel, so nothing is downloaded at run time.  It is installed without its dependencies
(``make setup``: ``pip install --no-deps resemblyzer==0.1.4``): its metadata names ``webrtcvad``
(a C source build; ``webrtcvad-wheels`` provides the same module prebuilt) and the ``typing``
backport (breaks Python 3.11).

What one file goes through (:func:`dvector`), from the pipeline waveform (``load_audio`` at
``features.sample_rate``, 16 kHz by default, the encoder's rate; any other pipeline rate is
brought to 16 kHz with soxr HQ first):

1. ``resemblyzer.normalize_volume(wave, -30, increase_only=True)``: the encoder reads mel
   *power* (not log-mel) frames, so its input depends on level; quiet clips are raised to
   -30 dBFS RMS, as in training.
2. ``resemblyzer.trim_long_silences`` (``features.dvector.vad``, default on): webrtcvad
   (mode 3, 30 ms windows, smoothed and dilated) cuts pauses longer than ~0.2 s, as
   ``resemblyzer.preprocess_wav`` does.  Steps 1-2 are exactly ``preprocess_wav(wave)`` for
   16 kHz input (its own loading/resampling path is not used: the pipeline has decoded the
   file already).  One deviation: when the VAD finds no voiced window at all (tones, noise,
   synthetic test audio) the untrimmed clip is embedded instead of an empty one.  On the 198
   embedded LibriSpeech files the VAD changes little (same-speaker pair EER 0.9% with and
   without) and costs ~30 ms per file; it matters for recordings with long pauses.
3. ``VoiceEncoder.embed_utterance(wave, rate, min_coverage)``: 1.6 s partial windows
   (``features.dvector.rate`` per second; a last window at least ``min_coverage`` full is
   zero-padded), each embedded, averaged and L2-normalised: unit-norm, non-negative, 256-d.

The encoder is loaded once per process (:func:`encoder`, cached) on the CPU and always runs
with one torch thread (:func:`torch_threads`): the feature stage's parallelism is across
files (one joblib worker per core), a second torch thread made the small LSTM batches
slower on a busy 2-core machine (61 vs 563 ms per file measured), and a fixed thread count
keeps the numbers identical whatever ``n_jobs`` is.  torch and resemblyzer are imported only
when a dvector is computed.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import soxr

from voiceid.features.params import DvectorParams

DVECTOR_DIM = 256


ENCODER_RATE = 16000  # resemblyzer.hparams.sampling_rate


NORM_TARGET_DBFS = -30.0  # resemblyzer.hparams.audio_norm_target_dBFS


# Bumped whenever the preprocessing above changes, so cached dvectors from older code are not reused.
DVECTOR_VERSION = 1


INSTALL_HINT = "pip install --no-deps resemblyzer==0.1.4 webrtcvad-wheels (make setup does this)"


class DvectorUnavailable(RuntimeError):
    """Resemblyzer (or the webrtcvad module it imports) is not installed."""


def versions() -> dict[str, str]:
    """Versions of the packages that determine a dvector's numbers (for the cache key), without importing them."""
    out = {}
    for dist in ("resemblyzer", "torch", "webrtcvad-wheels"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def _import_resemblyzer() -> Any:
    try:
        with warnings.catch_warnings():
            # resemblyzer imports scipy.ndimage.morphology, deprecated since SciPy 1.8
            warnings.simplefilter("ignore", DeprecationWarning)
            import resemblyzer
    except ImportError as exc:
        raise DvectorUnavailable(f"the dvector feature set needs resemblyzer: {exc} ({INSTALL_HINT})") from exc
    return resemblyzer


def require_resemblyzer() -> None:
    """Raise :class:`DvectorUnavailable` now (a clear stage error) rather than rejecting every file later."""
    _import_resemblyzer()


@functools.cache
def encoder() -> Any:
    """This process's ``resemblyzer.VoiceEncoder`` on the CPU, loaded on first use (~0.1 s) and kept."""
    resemblyzer = _import_resemblyzer()
    model = resemblyzer.VoiceEncoder(device="cpu", verbose=False)
    model.eval()
    return model


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch intra-op threads set to ``n`` for the block and restored after (0 leaves torch's count; costs < 1 us).

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def preprocess(wave: np.ndarray, vad: bool) -> np.ndarray:
    """Steps 1-2 of the module docstring on a 16 kHz waveform: ``resemblyzer.preprocess_wav`` without resampling."""
    audio = _import_resemblyzer().audio
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if not np.any(wave):
        raise ValueError("dvector: silent audio (every sample is 0), nothing to embed")
    wave = audio.normalize_volume(wave, NORM_TARGET_DBFS, increase_only=True)
    if vad:
        voiced = audio.trim_long_silences(wave)
        if voiced.size:  # no voiced window at all: embed the whole clip rather than nothing
            wave = voiced
    return np.asarray(wave, dtype=np.float32)


def encoder_input(wave: np.ndarray, sample_rate: int, params: DvectorParams) -> np.ndarray:
    """The 16 kHz waveform the encoder reads: resampled when needed, then :func:`preprocess`."""
    wave = np.asarray(wave, dtype=np.float32)
    if sample_rate != ENCODER_RATE:
        wave = soxr.resample(wave, sample_rate, ENCODER_RATE, quality="HQ")
    return preprocess(wave, params.vad)


def mel_frames(wave: np.ndarray) -> np.ndarray:
    """(n_frames, 40) float32 mel power frames (25 ms / 10 ms) of an :func:`encoder_input` waveform."""
    return np.asarray(_import_resemblyzer().audio.wav_to_mel_spectrogram(wave), dtype=np.float32)


def dvector(wave: np.ndarray, sample_rate: int, params: DvectorParams, model: Any = None) -> np.ndarray:
    """The (256,) float32 unit-norm GE2E embedding of a mono waveform at ``sample_rate``.

    ``model``: another ``VoiceEncoder`` (e.g. fine-tuned by :mod:`voiceid.adapt`); default the
    pretrained one.
    """
    from voiceid.features.signal import one_blas_thread  # signal imports this module

    model = encoder() if model is None else model
    # one BLAS thread too (the mel filterbank product): a worker process and the main one
    # must give bit-identical vectors, and a second thread changes the summation order
    with one_blas_thread(), torch_threads(1):
        wave = encoder_input(wave, sample_rate, params)
        embed = model.embed_utterance(wave, rate=params.rate, min_coverage=params.min_coverage)
    return np.asarray(embed, dtype=np.float32)


def feature_names() -> list[str]:
    """Column names of the dvector table: ``dvector_0`` .. ``dvector_255``."""
    return [f"dvector_{i}" for i in range(DVECTOR_DIM)]
