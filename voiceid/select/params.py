"""The ``select`` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SelectParams:
    """The ``select`` section of params.yaml."""

    families: tuple[str, ...] = ("svc", "mlp", "catboost", "knn", "logreg", "ecapa", "cosine")
    val_metric: str = "val_f1_weighted"  # picks each classifier family's final run (higher is better)
    ecapa_val_metric: str = "val_eer"  # picks the ECAPA final run (lower is better)
    cosine_feature_set: str = "mfcc60"
    calibration_methods: tuple[Literal["isotonic", "sigmoid"], ...] = ("isotonic", "sigmoid")
    calibration_metric: Literal["log_loss", "brier", "open_brier"] = "open_brier"
    beta: float = 1.0
    target_fpr: float = 0.05
    threshold_rule: Literal["fbeta", "fpr", "eer"] = "fpr"
    champion_metric: Literal["dir_far_1", "dir_far_5", "eer", "min_dcf", "open_set_accuracy"] = "dir_far_1"
    p_target: float = 0.01
    registered_model: str = "voiceid"
    experiment: str = "voiceid/select"
    n_bootstrap: int = 1000
    seed: int = 42

    def check(self) -> None:
        if not self.families:
            raise ValueError("families must name at least one candidate family")
        if not self.calibration_methods:
            raise ValueError("calibration_methods must name at least one method")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, found {self.beta}")
        if not 0.0 <= self.target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in [0, 1), found {self.target_fpr}")
        if not 0.0 < self.p_target < 1.0:
            raise ValueError(f"p_target must be in (0, 1), found {self.p_target}")
        if self.n_bootstrap < 0:
            raise ValueError(f"n_bootstrap must be >= 0, found {self.n_bootstrap}")
