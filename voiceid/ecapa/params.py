"""The ``ecapa`` section of params.yaml: the search space and the training settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from voiceid.ecapa.model import EcapaConfig
from voiceid.ecapa.train import (
    TrainConfig,
)


class EcapaError(RuntimeError):
    """The experiment cannot run on these inputs (no training rows, mixed band counts, ...)."""


@dataclass(frozen=True)
class SearchSpace:
    """What Optuna varies; the first trial is always the configured ``model`` / ``train`` values."""

    n_trials: int = 3
    lr: tuple[float, float] = (3e-4, 3e-3)  # log-uniform
    margin: tuple[float, float] = (0.1, 0.3)
    channels: tuple[int, ...] = (64, 128)
    pruner_startup_trials: int = 1  # MedianPruner: complete trials before pruning starts
    pruner_warmup_epochs: int = 1  # epochs a trial always runs

    def check(self) -> None:
        if self.n_trials < 1 or not self.channels:
            raise ValueError("need n_trials >= 1 and at least one channels choice")
        for name in ("lr", "margin"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, found {(low, high)}")


@dataclass(frozen=True)
class EcapaParams:
    """``ecapa`` section of params.yaml (``model.n_mels`` always comes from the features)."""

    dataset_name: str = "default"  # MLflow experiment voiceid/<dataset_name>/logmel: keep = grid.dataset_name
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 2  # torch CPU threads (0: torch's default)
    p_target: float = 0.01
    max_nontarget: int | None = 50000  # cap on non-target trials per split (seeded subset)
    # who the network learns from: enrolled train rows, background speakers (prepare.n_background), or both
    train_speakers: Literal["enrolled", "background", "both"] = "both"
    # a speaker with fewer training clips teaches the margin loss nothing about its own
    # variability (a one-clip class is just noise to it): such speakers are left out of training
    min_utts_per_speaker: int = 2
    model: EcapaConfig = field(default_factory=EcapaConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchSpace = field(default_factory=SearchSpace)

    def check(self) -> None:
        if self.min_utts_per_speaker < 1:
            raise ValueError(f"min_utts_per_speaker must be >= 1, found {self.min_utts_per_speaker}")
        s, t = self.search, self.train
        if self.model.channels not in s.channels:
            raise ValueError(f"model.channels {self.model.channels} is not among search.channels {list(s.channels)}")
        if not (s.lr[0] <= t.lr <= s.lr[1] and s.margin[0] <= t.margin <= s.margin[1]):
            raise ValueError("train.lr and train.margin must lie inside search.lr and search.margin")
        if s.lr[0] < t.lr_min:
            raise ValueError(f"search.lr low {s.lr[0]} is below train.lr_min {t.lr_min}")
        bad = [c for c in s.channels if c % self.model.scale]
        if bad:
            raise ValueError(f"search.channels {bad} not divisible by model.scale {self.model.scale}")
