"""The ``features`` section of params.yaml and the names of the feature sets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SetName = Literal["seed498", "mfcc60", "extended", "logmel", "dvector"]


SET_NAMES: tuple[str, ...] = ("seed498", "mfcc60", "extended", "logmel", "dvector")


# Clip-level sets: one float32 vector per file (feature tables); logmel is frame-level.
VECTOR_SETS: tuple[str, ...] = ("seed498", "mfcc60", "extended", "dvector")


# A speaker encoder's embeddings (one space made for cosine scoring), not statistics: scaled as a
# whole, never per dimension (voiceid.scoring.scaling). dvector_ft is the adapt stage's fine-tuned
# copy of dvector (voiceid.adapt.params.SET_NAME).
ENCODER_SETS: tuple[str, ...] = ("dvector", "dvector_ft")


# Bumped whenever a formula changes, so cached vectors from older code are not reused.
FEATURE_VERSION = 1


@dataclass(frozen=True)
class LogmelParams:
    """Frame-level log-mel front end shared by ECAPA training and inference."""

    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    fmin: float = 20.0
    fmax: float = 7600.0
    log_floor: float = 1e-6  # log(mel + floor): keeps digital silence finite

    def check(self) -> None:
        if self.n_mels < 1:
            raise ValueError(f"logmel.n_mels must be >= 1, found {self.n_mels}")
        if not 0 < self.hop_ms <= self.win_ms:
            raise ValueError(f"logmel needs 0 < hop_ms <= win_ms, found {self.hop_ms}/{self.win_ms}")
        if not 0 <= self.fmin < self.fmax:
            raise ValueError(f"logmel needs 0 <= fmin < fmax, found {self.fmin}/{self.fmax}")
        if self.log_floor <= 0:
            raise ValueError(f"logmel.log_floor must be > 0, found {self.log_floor}")


@dataclass(frozen=True)
class DvectorParams:
    """Resemblyzer's GE2E encoder (set ``dvector``, :mod:`voiceid.features.dvector`); defaults are resemblyzer's."""

    vad: bool = True  # trim pauses > ~0.2 s with webrtcvad first, as resemblyzer.preprocess_wav
    rate: float = 1.3  # 1.6 s partial windows per second of audio
    min_coverage: float = 0.75  # a last partial window at least this full is zero-padded and kept

    def check(self) -> None:
        # resemblyzer asserts 0 < frame step <= 160 frames: 16000 / (160 * 160) <= rate < 200
        if not 0.625 <= self.rate < 200:
            raise ValueError(f"rate must be in [0.625, 200), found {self.rate}")
        if not 0 < self.min_coverage <= 1:
            raise ValueError(f"min_coverage must be in (0, 1], found {self.min_coverage}")


@dataclass(frozen=True)
class FeatureParams:
    """The ``features`` section of params.yaml."""

    # params.yaml's default adds dvector; this in-code default (tests, benchmarks) stays torch-free
    sets: tuple[SetName, ...] = ("seed498", "mfcc60", "extended", "logmel")
    sample_rate: int = 16000  # pipeline rate: must equal prepare.sample_rate (content hashes use it)
    tonnetz_chroma: Literal["stft", "cqt"] = "stft"
    delta_width: int = 9
    logmel: LogmelParams = LogmelParams()
    dvector: DvectorParams = DvectorParams()
    n_jobs: int = -1

    def check(self) -> None:
        if not self.sets:
            raise ValueError("sets must name at least one feature set")
        if len(set(self.sets)) != len(self.sets):
            raise ValueError(f"sets has duplicates: {list(self.sets)}")
        if self.delta_width < 3 or self.delta_width % 2 == 0:
            raise ValueError(f"delta_width must be odd and >= 3, found {self.delta_width}")
        if self.logmel.fmax > self.sample_rate / 2:
            raise ValueError(f"logmel.fmax {self.logmel.fmax} exceeds Nyquist of {self.sample_rate} Hz")
        self.logmel.check()
        self.dvector.check()
