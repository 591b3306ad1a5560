"""The ``adapt`` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SET_NAME = "dvector_ft"  # the feature set (data/features/dvector_ft.parquet) and its weights (dvector_ft.pt)


@dataclass(frozen=True)
class AdaptParams:
    """How the pretrained encoder is fine-tuned (:func:`voiceid.adapt.finetune.fine_tune`)."""

    speakers: Literal["enrolled", "background", "both"] = "both"  # whose *train* clips it learns from
    min_utts_per_speaker: int = 2  # speakers with fewer training clips are left out (a 1-clip class is noise)
    steps: int = 120  # optimiser steps (batches); 0 keeps the pretrained weights
    batch_size: int = 64
    crop_frames: int = 80  # 10 ms mel frames per training crop; shorter clips are repeated to fill it
    lr: float = 1e-4  # encoder learning rate (Adam); small, so the pretrained knowledge is kept
    head_lr: float = 1e-2  # the new speaker head starts from random weights
    margin: float = 0.2  # AAM-softmax angular margin (radians)
    scale: float = 30.0  # AAM-softmax logit scale
    threads: int = 2  # torch CPU threads while training (0: torch's default)
    seed: int = 42

    def check(self) -> None:
        if self.min_utts_per_speaker < 1:
            raise ValueError(f"min_utts_per_speaker must be >= 1, found {self.min_utts_per_speaker}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, found {self.steps}")
        if self.batch_size < 2 or self.crop_frames < 10:
            raise ValueError(f"batch_size must be >= 2 and crop_frames >= 10, found {self.batch_size} and {self.crop_frames}")
        if self.lr <= 0 or self.head_lr <= 0:
            raise ValueError(f"lr and head_lr must be > 0, found {self.lr} and {self.head_lr}")
        if not 0 <= self.margin < 1 or self.scale <= 0:
            raise ValueError(f"margin must be in [0, 1) and scale > 0, found {self.margin} and {self.scale}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, found {self.threads}")
