"""The ``grid`` section of params.yaml and the family names it may use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from voiceid.config import as_dict
from voiceid.grid import classifiers, clustering
from voiceid.study import StudyError

CLASSIFIER_OBJECTIVES = ("f1_weighted", "f1_macro", "accuracy", "top5_accuracy")


CLUSTERING_OBJECTIVES = ("ari", "nmi", "f1_weighted", "accuracy")


class GridError(StudyError):
    """The grid cannot run on these inputs (empty split, no completed trial, ...)."""


# dvector_ft is the adapt stage's table (the encoder fine-tuned on the train clips), the others the features stage's
GridSet = Literal["mfcc60", "seed498", "extended", "dvector", "dvector_ft"]


GridFamily = Literal["kmeans", "kmeans_seeded", "dbscan", "agglomerative", "svc", "mlp", "catboost", "knn", "logreg"]


@dataclass(frozen=True)
class GridParams:
    """``grid`` section of params.yaml."""

    dataset_name: str  # MLflow experiment: voiceid/<dataset_name>/<feature_set>
    feature_sets: tuple[GridSet, ...]
    families: tuple[GridFamily, ...]
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
        if not self.families or not self.feature_sets:
            raise ValueError("families and feature_sets must each name at least one entry")
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"families has duplicates: {list(self.families)}")
        if self.n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, found {self.n_trials}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 or null, found {self.timeout_s}")


def family_kind(name: str) -> Literal["classifier", "clustering"]:
    if name in classifiers.FAMILIES:
        return "classifier"
    if name in clustering.FAMILIES:
        return "clustering"
    raise ValueError(f"unknown family {name!r} (known: {', '.join([*classifiers.FAMILIES, *clustering.FAMILIES])})")


def grid_run_params(params: GridParams) -> dict[str, Any]:
    """Grid settings logged on study runs (``grid.*``)."""
    return {f"grid.{k}": v for k, v in as_dict(params).items() if k not in ("families", "feature_sets")}


if set(get_args(GridFamily)) != {*classifiers.FAMILIES, *clustering.FAMILIES}:  # one list of names, checked at import
    raise ImportError("grid.params.GridFamily must name exactly the classifier and clustering families")
