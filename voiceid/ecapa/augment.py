"""Feature-domain augmentation for ECAPA training: random crops, gain ramps, coloured noise, SpecAugment masks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NEPER_PER_DB = math.log(10.0) / 10.0  # a gain of g dB adds g * NEPER_PER_DB to log(power)


@dataclass(frozen=True)
class AugmentConfig:
    """Feature-domain augmentation of each training crop (all drawn per crop).

    Attributes:
        gain_db: a level offset and a start-to-end loudness ramp, each uniform in +-gain_db.
        noise_prob: chance that a crop gets additive noise.
        snr_db: (low, high) range of the noise's signal-to-noise ratio.
        time_masks / time_mask_frames: number of time masks and their maximum width.
        freq_masks / freq_mask_bands: number of frequency masks and their maximum width.
    """

    gain_db: float = 6.0
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (5.0, 20.0)
    time_masks: int = 2
    time_mask_frames: int = 10
    freq_masks: int = 2
    freq_mask_bands: int = 8

    def check(self) -> None:
        if not 0.0 <= self.noise_prob <= 1.0:
            raise ValueError(f"noise_prob must be in [0, 1], found {self.noise_prob}")
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db must be (low, high) with low <= high, found {self.snr_db}")
        if min(self.gain_db, self.time_masks, self.time_mask_frames, self.freq_masks, self.freq_mask_bands) < 0:
            raise ValueError("gain_db and mask counts/widths must be >= 0")


def random_crop(frames: np.ndarray, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of ``n_frames`` frames; shorter inputs are tiled to length first."""
    if len(frames) < n_frames:
        frames = np.pad(frames, ((0, n_frames - len(frames)), (0, 0)), mode="wrap")
    start = int(rng.integers(0, len(frames) - n_frames + 1))
    return frames[start : start + n_frames]


def add_noise(frames: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Mix synthetic coloured noise into log-mel frames (log power) at ``snr_db``, in the power domain.

    The noise has a random spectral tilt (+-12 dB across the bands: from bass-heavy rumble to
    hiss) and per-bin gamma fluctuation like a real noise periodogram after mel smoothing.
    """
    n_frames, n_bands = frames.shape
    power = np.exp(frames.astype(np.float64))
    tilt = np.power(10.0, rng.uniform(-12.0, 12.0) * np.linspace(-0.5, 0.5, n_bands) / 10.0)  # (F,)
    noise = tilt[None, :] * rng.gamma(4.0, 0.25, size=(n_frames, n_bands))  # mean tilt per bin
    noise *= power.mean() / (tilt.mean() * 10.0 ** (snr_db / 10.0))
    return np.log(power + noise).astype(np.float32)


def augment(batch: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Gain ramp, additive noise, then time/frequency masks on a (B, T, F) batch of log-mel frames.

    Masks are filled with the crop's per-band mean (taken before masking), which the model's
    mean normalisation maps to about zero: the usual SpecAugment fill.
    """
    out = batch.astype(np.float32, copy=True)
    n, n_frames, n_bands = out.shape
    if cfg.gain_db > 0:
        offset = rng.uniform(-cfg.gain_db, cfg.gain_db, (n, 1, 1))
        ramp = rng.uniform(-cfg.gain_db, cfg.gain_db, (n, 1, 1)) * np.linspace(-0.5, 0.5, n_frames)[None, :, None]
        out += (NEPER_PER_DB * (offset + ramp)).astype(np.float32)
    for b in range(n):
        if rng.random() < cfg.noise_prob:
            out[b] = add_noise(out[b], float(rng.uniform(*cfg.snr_db)), rng)
        band_mean = out[b].mean(axis=0)  # (F,)
        for _ in range(cfg.time_masks):
            width = int(rng.integers(0, min(cfg.time_mask_frames, n_frames) + 1))
            start = int(rng.integers(0, n_frames - width + 1))
            out[b, start : start + width] = band_mean
        for _ in range(cfg.freq_masks):
            width = int(rng.integers(0, min(cfg.freq_mask_bands, n_bands) + 1))
            start = int(rng.integers(0, n_bands - width + 1))
            out[b, :, start : start + width] = band_mean[start : start + width]
    return out
