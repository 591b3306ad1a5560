"""Numba cache warm-up: compile librosa's kernels once, serially, before any worker process."""

from __future__ import annotations

import librosa
import numpy as np

from voiceid.features.signal import CLIP_SR


def warm_jit_caches() -> None:
    """Compile librosa's numba kernels (``cache=True``) once, in this process, before any workers.

    Several processes compiling the same kernel at once corrupt numba's on-disk cache, and a
    later load of it crashes the interpreter (seen on a fresh venv: a segfault in
    ``piptrack``).  ``make`` calls this right after installing; the feature stage calls it
    before starting its workers, so they only ever read the cache.
    """
    t = np.arange(CLIP_SR // 2) / CLIP_SR
    for dtype in (np.float32, np.float64):
        y = np.sin(2 * np.pi * 220.0 * t).astype(dtype)
        librosa.feature.zero_crossing_rate(y)
        librosa.estimate_tuning(S=np.abs(librosa.stft(y)) ** 2, sr=CLIP_SR)
        librosa.feature.chroma_stft(y=y, sr=CLIP_SR)
