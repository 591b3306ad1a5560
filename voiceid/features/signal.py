"""Feature sets computed from one decoded waveform: pure math plus the table formats.

Every set is a pure function of the pipeline waveform (``load_audio(path, sample_rate)``,
16 kHz by default), so the feature stage, the ECAPA embedder and ``voiceid identify`` get
identical numbers for identical audio.  The named sets:

``seed498``  the seed work's 498-d clip vector: mean/min/max over time of chroma (12),
             mel power (128), MFCC (20) and tonnetz (6), in that order (36+384+60+18).
``mfcc60``   the MFCC block of ``seed498`` alone (the seed's best SVC input).
``extended`` MFCC, delta and delta-delta (mean/std/min/max each: 240) plus RMS, spectral
             centroid, bandwidth, roll-off and zero-crossing rate (mean/std/min/max: 20).
``logmel``   frame-level log-mel matrix (n_frames, n_mels) for the ECAPA stage.
``dvector``  256-d embedding from Resemblyzer's pretrained GE2E encoder (:mod:`voiceid.features.dvector`;
             torch is imported only when this set is asked for).

How this differs from the seed recipe (see :mod:`voiceid.features.seed_recipe`, the reference):
the seed called ``librosa.load`` four times and ran a separate STFT per feature plus a CQT
for tonnetz.  Here the clip-level sets share one resample to 22050 Hz (the seed's rate,
librosa's soxr_hq = soxr "HQ", the same resampler) and one 2048/512 STFT (float32, see
:func:`stft_magnitude`); chroma reuses its power spectrum and the same tuning estimate, so
chroma, mel and MFCC equal the seed's to float32 rounding (relative error < 1e-6 measured,
< 1e-4 tested on real speech).  Tonnetz is the one
real difference: by default it is projected from that STFT chroma instead of librosa's
CQT chroma (``tonnetz_chroma: stft``).  Over 78 real files (LibriSpeech + az_digits) the
18 tonnetz values (range [-1, 1]) then differ from the seed's by 0.06 on average per file
(worst file 0.11) and by at most 0.51 for a single min/max entry; speech is barely tonal,
so tonnetz is noise-like either way.  ``tonnetz_chroma: cqt`` reproduces the seed's
tonnetz too (relative error < 1e-6) at about 10x the cost.  Sources that are not 16 kHz
are resampled twice (source -> 16 kHz -> 22050 Hz) where the seed resampled once; all
bundled data is 16 kHz.  ``logmel`` is a second STFT by necessity: it has its own frame
grid (25 ms / 10 ms at the 16 kHz pipeline rate).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import librosa
import numpy as np
import scipy.fft
import soxr
from scipy import sparse
from threadpoolctl import ThreadpoolController

from voiceid.features import dvector as dvec
from voiceid.features.params import SET_NAMES, VECTOR_SETS, FeatureParams, LogmelParams

# The seed recipe's librosa defaults; fixed because seed498/mfcc60 are defined by them.
CLIP_SR = 22050


N_FFT = 2048


HOP = 512


N_MELS = 128


N_MFCC = 20


N_CHROMA = 12


_PIP_FMIN, _PIP_FMAX, _PIP_THRESHOLD = 150.0, 4000.0, 0.1  # librosa.piptrack defaults


@functools.lru_cache(maxsize=1)
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()  # discovering the BLAS libraries costs ~1 ms; do it once


def one_blas_thread() -> AbstractContextManager[object]:
    # Per-file matrices are small: a second BLAS thread buys nothing and, on a busy
    # machine, its spin-waiting made the products ~10x slower (measured).  Parallelism is
    # across files (joblib workers) instead.
    return _threadpools().limit(limits=1, user_api="blas")


# -- filterbanks: built once per process (pure memo; bases cost more than a file's features) --
@functools.cache
def _mel_basis() -> sparse.csr_matrix:
    # each triangle covers a few bins: the sparse product is ~4x faster than the dense one
    return sparse.csr_matrix(librosa.filters.mel(sr=CLIP_SR, n_fft=N_FFT, n_mels=N_MELS))  # (128, 1025)


@functools.cache
def _window(n_fft: int, win_length: int) -> np.ndarray:
    window = librosa.filters.get_window("hann", win_length, fftbins=True)
    return librosa.util.pad_center(window, size=n_fft).astype(np.float32)  # (n_fft,)


def stft_magnitude(y: np.ndarray, n_fft: int, hop: int, win_length: int | None = None) -> np.ndarray:
    """|STFT| (n_fft // 2 + 1, 1 + len(y) // hop) float32, framed like ``librosa.stft``.

    Same centring (zero padding), Hann window and frame count as librosa, but one float32
    FFT over contiguous frames instead of librosa's float64 FFT along strided columns:
    ~2x faster, relative differences ~1e-7 (no tuning estimate changed over 778 real files).
    """
    padded = np.pad(y.astype(np.float32, copy=False), n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]  # (T, n_fft) view
    spec = scipy.fft.rfft(frames * _window(n_fft, win_length or n_fft), axis=-1, workers=1)  # (T, F)
    return np.ascontiguousarray(np.abs(spec).T)


@functools.cache
def _chroma_basis(tuning: float) -> np.ndarray:
    # tuning is quantised to 0.01 bins, so at most 101 distinct bases per process
    return librosa.filters.chroma(sr=CLIP_SR, n_fft=N_FFT, tuning=tuning, n_chroma=N_CHROMA)  # (12, 1025)


@functools.cache
def _logmel_basis(sample_rate: int, p: LogmelParams) -> sparse.csr_matrix:
    return sparse.csr_matrix(librosa.filters.mel(sr=sample_rate, n_fft=p.n_fft, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax))


def estimate_tuning(S: np.ndarray) -> float:
    """``librosa.estimate_tuning(S=S, sr=22050, bins_per_octave=12)`` on the piptrack band only.

    librosa interpolates every bin of the spectrogram; only bins in [150, 4000) Hz can be
    peaks, so this evaluates the same float32 arithmetic on that band (about 3x faster,
    identical estimate; tests compare it with librosa on real files).
    """
    freqs = librosa.fft_frequencies(sr=CLIP_SR, n_fft=N_FFT)
    lo = int(np.searchsorted(freqs, _PIP_FMIN))
    hi = int(np.searchsorted(freqs, min(_PIP_FMAX, CLIP_SR / 2)))
    band = S[lo - 1 : hi + 1]  # one neighbour bin each side for the local-max stencil
    ref = _PIP_THRESHOLD * S.max(axis=0)
    gated = band * (band > ref)
    centre = gated[1:-1]
    f_idx, t_idx = np.nonzero((centre > gated[:-2]) & (centre >= gated[2:]))
    x_lo, x_c, x_hi = band[f_idx, t_idx], band[f_idx + 1, t_idx], band[f_idx + 2, t_idx]
    # librosa's numba stencil mixes float32 sums with float64 constants; mirror it
    a = (x_hi + x_lo).astype(np.float64) - 2 * x_c.astype(np.float64)
    b = (x_hi - x_lo).astype(np.float64) / 2
    safe = np.abs(b) < np.abs(a)
    shift = np.where(safe, -b / np.where(safe, a, 1.0), 0.0).astype(np.float32)
    pitch = ((f_idx + lo + shift.astype(np.float64)) * float(CLIP_SR) / N_FFT).astype(np.float32)
    mag = x_c + 0.5 * ((x_hi - x_lo) / 2.0) * shift
    keep = pitch > 0
    if not keep.any():
        return 0.0
    threshold = np.median(mag[keep])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "empty frequency set" on silence: tuning 0 is right
        return float(librosa.pitch_tuning(pitch[(mag >= threshold) & keep], resolution=0.01, bins_per_octave=12))


@dataclass(frozen=True)
class ClipSpectra:
    """The shared 22050 Hz analysis of one clip; every clip-level set reads from it."""

    y: np.ndarray  # (n,) float32 at 22050 Hz
    mag: np.ndarray  # (1025, T) |STFT|
    power: np.ndarray  # (1025, T) |STFT|^2
    mel: np.ndarray  # (128, T) mel power
    mfcc: np.ndarray  # (20, T)


def clip_spectra(wave: np.ndarray, sample_rate: int) -> ClipSpectra:
    """Resample once to 22050 Hz and take the one STFT the clip-level sets share."""
    y = wave
    if sample_rate != CLIP_SR:
        # librosa.load pads soxr's output to ceil(n * ratio) samples; so do we, for parity
        n_out = int(np.ceil(wave.shape[0] * CLIP_SR / sample_rate))
        y = librosa.util.fix_length(soxr.resample(wave, sample_rate, CLIP_SR, quality="HQ"), size=n_out)
    y = np.ascontiguousarray(y, dtype=np.float32)
    mag = stft_magnitude(y, N_FFT, HOP)
    power = mag**2
    mel = _mel_basis() @ power
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=N_MFCC)
    return ClipSpectra(y, mag, power, mel, mfcc)


def _stats(x: np.ndarray, which: tuple[str, ...]) -> np.ndarray:
    ops: dict[str, Callable[..., np.ndarray]] = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max}
    return np.concatenate([ops[w](x, axis=1) for w in which])


_SEED_STATS = ("mean", "min", "max")


_EXT_STATS = ("mean", "std", "min", "max")


def _seed498(sp: ClipSpectra, tonnetz_chroma: str) -> np.ndarray:
    chroma = librosa.util.normalize(_chroma_basis(estimate_tuning(sp.power)) @ sp.power, norm=np.inf, axis=0)
    if tonnetz_chroma == "cqt":
        tonnetz = librosa.feature.tonnetz(y=sp.y, sr=CLIP_SR)  # the seed's CQT chroma, exact
    else:
        tonnetz = librosa.feature.tonnetz(chroma=chroma)
    blocks = (chroma, sp.mel, sp.mfcc, tonnetz)
    return np.concatenate([_stats(b, _SEED_STATS) for b in blocks])


def spectral_descriptors(sp: ClipSpectra, roll_percent: float = 0.85) -> np.ndarray:
    """(5, T): RMS, centroid, bandwidth (p=2), roll-off and zero-crossing rate per frame.

    Same definitions as librosa's ``rms(S=mag)``, ``spectral_centroid``,
    ``spectral_bandwidth``, ``spectral_rolloff`` and ``zero_crossing_rate`` (tests compare),
    but from three mat-vec products over the shared magnitude instead of one full
    normalisation of the spectrogram per descriptor (~10x less work).
    """
    freqs = librosa.fft_frequencies(sr=CLIP_SR, n_fft=N_FFT)  # (F,)
    mag = sp.mag.astype(np.float64)
    total = mag.sum(axis=0)
    first = freqs @ mag
    second = (freqs**2) @ mag
    voiced = total > np.finfo(np.float32).tiny  # silent frames: 0, as librosa's normalize leaves them
    denom = np.where(voiced, total, 1.0)
    centroid = np.where(voiced, first / denom, 0.0)
    # sum(p * (f - c)^2) expanded, with p = mag / total
    variance = np.where(voiced, second / denom - centroid**2, 0.0)
    bandwidth = np.sqrt(np.maximum(variance, 0.0))
    cumulative = np.cumsum(sp.mag, axis=0)
    rolloff = freqs[np.argmax(cumulative >= roll_percent * cumulative[-1], axis=0)]
    edge = sp.power.copy()  # rms(S=): halve DC and Nyquist, as a real frame's energy counts them once
    edge[0] *= 0.5
    edge[-1] *= 0.5
    rms = np.sqrt(2 * edge.sum(axis=0) / N_FFT**2)
    return np.stack([rms, centroid, bandwidth, rolloff, zero_crossing_rate(sp.y, rms.shape[0])])


def zero_crossing_rate(y: np.ndarray, n_frames: int) -> np.ndarray:
    """``librosa.feature.zero_crossing_rate(y)`` (2048/512, centred, edge padding) in O(n).

    librosa tests every sample pair of every overlapping frame; a running count of sign
    changes gives each frame's count by one subtraction (integers, so exactly equal).
    """
    padded = np.pad(y, N_FFT // 2, mode="edge")
    padded = np.where(np.abs(padded) <= 1e-10, 0.0, padded)  # librosa's threshold: tiny values count as 0 (+)
    changes = np.signbit(padded[1:]) != np.signbit(padded[:-1])  # change between samples j and j+1
    running = np.concatenate([[0], np.cumsum(changes)])
    starts = np.arange(n_frames) * HOP
    return (running[starts + N_FFT - 1] - running[starts]) / N_FFT


def _extended(sp: ClipSpectra, delta_width: int) -> np.ndarray:
    d1 = librosa.feature.delta(sp.mfcc, width=delta_width, order=1)
    d2 = librosa.feature.delta(sp.mfcc, width=delta_width, order=2)
    descriptors = spectral_descriptors(sp)  # (5, T)
    per_track = [_stats(x, _EXT_STATS) for x in (sp.mfcc, d1, d2)]
    per_descriptor = [_stats(row[None, :], _EXT_STATS) for row in descriptors]
    return np.concatenate(per_track + per_descriptor)


def to_pipeline_rate(wave: np.ndarray, sample_rate: int, params: FeatureParams) -> np.ndarray:
    """A float32 waveform at the pipeline rate: what the stage's ``load_audio`` gives (soxr HQ)."""
    if sample_rate != params.sample_rate:
        wave = soxr.resample(wave, sample_rate, params.sample_rate, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)


def logmel(wave: np.ndarray, sample_rate: int, params: FeatureParams) -> np.ndarray:
    """Log-mel matrix (n_frames, n_mels) float32 of a mono waveform at ``sample_rate``.

    The single definition of the ECAPA front end: the stage, the embedder and the CLI all
    call this.  Frames are centred (``1 + n // hop`` frames); no mean normalisation.
    """
    wave = to_pipeline_rate(wave, sample_rate, params)
    p = params.logmel
    win = round(p.win_ms * params.sample_rate / 1000)
    hop = round(p.hop_ms * params.sample_rate / 1000)
    if win > p.n_fft:
        raise ValueError(f"logmel window {win} samples exceeds n_fft {p.n_fft}")
    spec = stft_magnitude(wave, p.n_fft, hop, win) ** 2
    mel = _logmel_basis(params.sample_rate, p) @ spec  # (n_mels, n_frames)
    return np.ascontiguousarray(np.log(mel + p.log_floor).T, dtype=np.float32)


def compute_sets(wave: np.ndarray, sample_rate: int, sets: tuple[str, ...], params: FeatureParams) -> dict[str, np.ndarray]:
    """Every requested set for one waveform, sharing one resample and one STFT."""
    unknown = set(sets) - set(SET_NAMES)
    if unknown:
        raise ValueError(f"unknown feature set(s) {sorted(unknown)} (known: {', '.join(SET_NAMES)})")
    wave = to_pipeline_rate(wave, sample_rate, params)
    out: dict[str, np.ndarray] = {}
    clip_sets = [s for s in sets if s in VECTOR_SETS and s != "dvector"]
    with one_blas_thread():
        if clip_sets:
            sp = clip_spectra(wave, params.sample_rate)
            for name in clip_sets:
                if name == "seed498":
                    out[name] = _seed498(sp, params.tonnetz_chroma)
                elif name == "mfcc60":
                    out[name] = _stats(sp.mfcc, _SEED_STATS)
                else:
                    out[name] = _extended(sp, params.delta_width)
        if "logmel" in sets:
            out["logmel"] = logmel(wave, params.sample_rate, params)
    if "dvector" in sets:  # torch keeps its own thread count (one, see voiceid.features.dvector)
        out["dvector"] = dvec.dvector(wave, params.sample_rate, params.dvector)
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def feature_vector(name: str, wave: np.ndarray, sample_rate: int, params: FeatureParams) -> np.ndarray:
    """The (dim,) float32 vector of clip-level set ``name`` for a waveform (inference path)."""
    if name not in VECTOR_SETS:
        raise ValueError(f"{name!r} is not a vector feature set (choose from {', '.join(VECTOR_SETS)})")
    return compute_sets(wave, sample_rate, (name,), params)[name]


def feature_names(name: str) -> list[str]:
    """Column names of vector set ``name``, in vector order."""

    def block(prefix: str, n: int, stats: tuple[str, ...]) -> list[str]:
        return [f"{prefix}_{s}_{i}" for s in stats for i in range(n)]

    if name == "seed498":
        return [
            c
            for pre, n in (("chroma", N_CHROMA), ("mel", N_MELS), ("mfcc", N_MFCC), ("tonnetz", 6))
            for c in block(pre, n, _SEED_STATS)
        ]
    if name == "mfcc60":
        return block("mfcc", N_MFCC, _SEED_STATS)
    if name == "extended":
        tracks = [c for pre in ("mfcc", "dmfcc", "ddmfcc") for c in block(pre, N_MFCC, _EXT_STATS)]
        return tracks + [f"{d}_{s}" for d in ("rms", "centroid", "bandwidth", "rolloff", "zcr") for s in _EXT_STATS]
    if name == "dvector":
        return dvec.feature_names()
    raise ValueError(f"{name!r} is not a vector feature set (choose from {', '.join(VECTOR_SETS)})")
