"""The seed work's feature recipe, kept verbatim as the parity and benchmark reference.

Not used by the pipeline.  ``tests/test_seed_recipe.py`` checks that ``seed498`` in
:mod:`voiceid.features` reproduces it, and ``benchmarks/features_vs_seed.py`` times both.
It is deliberately slow in the seed's ways: four ``librosa.load`` calls per file (each
resampling to librosa's default 22050 Hz), a separate STFT per feature, and tonnetz
from librosa's default CQT chroma.  Each feature is aggregated as mean, min and max
over time; blocks are concatenated chroma (36), mel (384), MFCC (60), tonnetz (18).
"""

from __future__ import annotations

import os

import librosa
import numpy as np

SEED_BLOCKS: dict[str, slice] = {
    "chroma": slice(0, 36),
    "mel": slice(36, 420),
    "mfcc": slice(420, 480),
    "tonnetz": slice(480, 498),
}


def _mean_min_max(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x.mean(axis=1), x.min(axis=1), x.max(axis=1)])


def seed_features(path: str | os.PathLike[str]) -> np.ndarray:
    """The seed's 498-d vector for one file, librosa defaults throughout."""
    y, sr = librosa.load(path)
    chroma = librosa.feature.chroma_stft(y=y, sr=sr)
    y, sr = librosa.load(path)
    mel = librosa.feature.melspectrogram(y=y, sr=sr)
    y, sr = librosa.load(path)
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
    y, sr = librosa.load(path)
    tonnetz = librosa.feature.tonnetz(y=y, sr=sr)
    return np.concatenate([_mean_min_max(b) for b in (chroma, mel, mfcc, tonnetz)])
