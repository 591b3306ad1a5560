"""The ``grid`` section of params.yaml and the family names it may use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from voiceid.config import as_dict
from voiceid.grid import classifiers, clustering
from voiceid.study import StudyError

CLASSIFIER_OBJECTIVES = ("f1_weighted", "f1_macro", "accuracy", "top5_accuracy")


CLUSTERING_OBJECTIVES = ("ari", "nmi", "f1_weighted", "accuracy")


class GridError(StudyError):
    """The grid cannot run on these inputs (empty split, no completed trial, ...)."""


@dataclass(frozen=True)
class GridParams:
    """``grid`` section of params.yaml."""

    dataset_name: str  # MLflow experiment: voiceid/<dataset_name>/<feature_set>
    feature_sets: tuple[str, ...]
    families: tuple[str, ...]
    objective: Literal["f1_weighted", "f1_macro", "accuracy", "top5_accuracy"]
    clustering_objective: Literal["ari", "nmi", "f1_weighted", "accuracy"]
    n_trials: int
    timeout_s: float | None
    seed: int
    storage: str
    tpe_startup_trials: int
    pruner_startup_trials: int
    report_every: int
    catboost: classifiers.CatBoostLimits = field(default_factory=classifiers.CatBoostLimits)

    def check(self) -> None:
        known = {*classifiers.FAMILIES, *clustering.FAMILIES}
        for name in self.families:
            if name not in known:
                raise ValueError(f"unknown family {name!r} in 'families' (known: {', '.join(sorted(known))})")
        if self.n_trials < 1:
            raise ValueError("'n_trials' must be >= 1")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("'timeout_s' must be > 0 or null")


def family_kind(name: str) -> Literal["classifier", "clustering"]:
    if name in classifiers.FAMILIES:
        return "classifier"
    if name in clustering.FAMILIES:
        return "clustering"
    raise ValueError(f"unknown family {name!r} (known: {', '.join([*classifiers.FAMILIES, *clustering.FAMILIES])})")


def grid_run_params(params: GridParams) -> dict[str, Any]:
    """Grid settings logged on study runs (``grid.*``)."""
    return {f"grid.{k}": v for k, v in as_dict(params).items() if k not in ("families", "feature_sets")}
