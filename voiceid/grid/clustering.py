"""Clustering families of the grid and their scores (pure functions).

Protocol (see README "Experiment grid"): the number of enrolled speakers ``k`` is known.
A preprocessing pipeline (a scaler: ``StandardScaler``, or one sd for an encoder's embedding;
optional PCA, optional L2 normalisation) is
fitted on the enrolled *train* rows only; the clusterer then groups a set of utterances
transductively. Studies tune on the enrolled train+val rows; the final run clusters the
enrolled test rows. Labels are used only to score: ARI, NMI, and F1/accuracy after
Hungarian matching of clusters to speakers.

Families:
* ``kmeans``: KMeans with k-means++ initialisation;
* ``kmeans_seeded``: KMeans started from one known training utterance per speaker
  (the seed work found this better than k-means++);
* ``dbscan``: DBSCAN (it picks the number of clusters itself); ``min_samples`` is a fraction
  of the mean utterances per speaker and ``eps`` a quantile of the distances to the
  ``min_samples``-th neighbour, so one search range fits any set size and feature scale;
* ``agglomerative``: agglomerative clustering into ``k`` clusters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import DBSCAN, AgglomerativeClustering, KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import (
    accuracy_score,
    adjusted_rand_score,
    f1_score,
    normalized_mutual_info_score,
)
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from voiceid.scoring.scaling import vector_scaler

if TYPE_CHECKING:
    import optuna


Params = dict[str, Any]


UNMATCHED = "<unmatched>"  # predicted label of noise points and clusters left without a speaker


def hungarian_match(y_true: np.ndarray, clusters: np.ndarray) -> dict[Any, Any]:
    """Cluster -> speaker mapping maximising the number of agreeing points.

    Each speaker gets at most one cluster; extra clusters and DBSCAN noise (-1) stay unmatched.
    """
    y_true, clusters = np.asarray(y_true), np.asarray(clusters)
    speakers = np.unique(y_true)
    ids = np.unique(clusters[clusters != -1])
    if len(ids) == 0:
        return {}
    overlap = np.zeros((len(ids), len(speakers)), dtype=np.int64)
    row = {c: i for i, c in enumerate(ids)}
    col = {s: j for j, s in enumerate(speakers)}
    for c, s in zip(clusters, y_true, strict=True):
        if c != -1:
            overlap[row[c], col[s]] += 1
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return {ids[r].item(): speakers[c] for r, c in zip(rows, cols, strict=True)}


def matched_labels(y_true: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Speaker label per point after Hungarian matching; unmatched points get ``UNMATCHED``."""
    mapping = hungarian_match(y_true, clusters)
    return np.array([mapping.get(np.asarray(c).item(), UNMATCHED) for c in clusters], dtype=object)


def clustering_metrics(y_true: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """ARI, NMI, Hungarian-matched accuracy/F1, cluster count and noise share.

    DBSCAN noise points each count as their own singleton for ARI/NMI (they were not put
    with anyone) and as errors for the matched scores.
    """
    y_true, clusters = np.asarray(y_true).astype(str), np.asarray(clusters)
    if len(y_true) != len(clusters):
        raise ValueError(f"{len(y_true)} labels but {len(clusters)} cluster assignments")
    singletons = clusters.astype(np.int64).copy()
    noise = singletons == -1
    singletons[noise] = singletons.max(initial=0) + 1 + np.arange(noise.sum())
    pred = matched_labels(y_true, clusters).astype(str)
    speakers = np.unique(y_true)
    return {
        "ari": float(adjusted_rand_score(y_true, singletons)),
        "nmi": float(normalized_mutual_info_score(y_true, singletons)),
        "accuracy": float(accuracy_score(y_true, pred)),
        "f1_weighted": float(f1_score(y_true, pred, labels=speakers, average="weighted", zero_division=0)),
        "f1_macro": float(f1_score(y_true, pred, labels=speakers, average="macro", zero_division=0)),
        "n_clusters": float(len(np.unique(clusters[~noise]))),
        "noise_fraction": float(noise.mean()) if len(noise) else 0.0,
    }


@dataclass(frozen=True)
class ClusterData:
    """Inputs of one clustering run: training rows fit the preprocessing, ``X`` is clustered."""

    X_train: np.ndarray
    y_train: np.ndarray
    X: np.ndarray
    n_clusters: int
    encoder: bool = False  # the rows are a speaker encoder's embeddings: scaled as a whole (voiceid.scoring.scaling)


@dataclass(frozen=True)
class ClusteringFamily:
    name: str
    space: Callable[[optuna.Trial], Params]
    defaults: Params


def _prep_space(trial: optuna.Trial) -> Params:
    return {
        "pca_variance": trial.suggest_categorical("pca_variance", [1.0, 0.95, 0.8]),
        "l2_normalize": trial.suggest_categorical("l2_normalize", [False, True]),
    }


def _kmeans_space(trial: optuna.Trial) -> Params:
    return {**_prep_space(trial), "n_init": trial.suggest_int("n_init", 1, 20, log=True)}


def _seeded_space(trial: optuna.Trial) -> Params:
    return {**_prep_space(trial), "seed_point": trial.suggest_categorical("seed_point", ["first", "medoid"])}


def _dbscan_space(trial: optuna.Trial) -> Params:
    return {
        **_prep_space(trial),
        "min_samples_fraction": trial.suggest_float("min_samples_fraction", 0.1, 0.6),
        "eps_quantile": trial.suggest_float("eps_quantile", 0.05, 0.95),
        "metric": trial.suggest_categorical("metric", ["euclidean", "cosine"]),
    }


def _agglomerative_space(trial: optuna.Trial) -> Params:
    return {**_prep_space(trial), "linkage": trial.suggest_categorical("linkage", ["ward", "average", "complete"])}


_PREP_DEFAULTS: Params = {"pca_variance": 1.0, "l2_normalize": False}


FAMILIES: Mapping[str, ClusteringFamily] = {
    f.name: f
    for f in (
        ClusteringFamily("kmeans", _kmeans_space, {**_PREP_DEFAULTS, "n_init": 10}),
        ClusteringFamily("kmeans_seeded", _seeded_space, {**_PREP_DEFAULTS, "seed_point": "first"}),
        ClusteringFamily(
            "dbscan", _dbscan_space, {**_PREP_DEFAULTS, "min_samples_fraction": 0.3, "eps_quantile": 0.5, "metric": "cosine"}
        ),
        ClusteringFamily("agglomerative", _agglomerative_space, {**_PREP_DEFAULTS, "linkage": "ward"}),
    )
}


def get_family(name: str) -> ClusteringFamily:
    """The clustering family called ``name``; a clear error lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown clustering family {name!r} (known: {', '.join(FAMILIES)})") from None


def preprocessor(params: Params, seed: int, encoder: bool = False) -> Pipeline:
    """Unfitted scaler [-> PCA] [-> L2 normaliser]; fit it on training rows only."""
    steps: list[tuple[str, Any]] = [("scale", vector_scaler(encoder))]
    if params["pca_variance"] < 1.0:
        steps.append(("pca", PCA(n_components=params["pca_variance"], random_state=seed)))
    if params["l2_normalize"]:
        steps.append(("l2", Normalizer()))
    return Pipeline(steps)


def seed_points(Z_train: np.ndarray, y_train: np.ndarray, how: str) -> np.ndarray:
    """One known training point per speaker (sorted speaker order), in the transformed space.

    ``first``: the speaker's first training row; ``medoid``: its row nearest the speaker's mean.
    """
    y_train = np.asarray(y_train)
    out = []
    for speaker in np.unique(y_train):
        rows = Z_train[y_train == speaker]
        if how == "first":
            out.append(rows[0])
        elif how == "medoid":
            out.append(rows[np.argmin(((rows - rows.mean(axis=0)) ** 2).sum(axis=1))])
        else:
            raise ValueError(f"unknown seed_point {how!r} (known: first, medoid)")
    return np.stack(out)


def dbscan_min_samples(n_points: int, n_speakers: int, fraction: float) -> int:
    """``fraction`` of the mean utterances per speaker, at least 2 (sklearn counts the point itself).

    Relative, so a value tuned on 7 utterances per speaker still forms clusters of 3.
    """
    return max(2, round(fraction * n_points / max(n_speakers, 1)))


def dbscan_eps(Z: np.ndarray, min_samples: int, quantile: float, metric: str) -> float:
    """``quantile`` of each point's distance to its ``min_samples``-th neighbour (itself excluded)."""
    k = min(min_samples, len(Z) - 1)
    if k < 1:
        return 1.0
    dist, _ = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(Z).kneighbors(Z)
    return max(float(np.quantile(dist[:, k], quantile)), 1e-9)


def fit_clusterer(family: str, params: Params, data: ClusterData, seed: int) -> tuple[Pipeline, np.ndarray]:
    """Fit the preprocessing on training rows, cluster ``data.X``; return (pipeline, labels).

    The returned pipeline holds the fitted preprocessing and clusterer, for logging.
    """
    prep = preprocessor(params, seed, data.encoder).fit(data.X_train)
    Z = prep.transform(data.X)
    if family == "kmeans":
        est: Any = KMeans(n_clusters=data.n_clusters, init="k-means++", n_init=params["n_init"], random_state=seed)
    elif family == "kmeans_seeded":
        init = seed_points(prep.transform(data.X_train), data.y_train, params["seed_point"])
        if len(init) != data.n_clusters:
            raise ValueError(f"{len(init)} seed points for {data.n_clusters} clusters")
        est = KMeans(n_clusters=data.n_clusters, init=init, n_init=1, random_state=seed)
    elif family == "dbscan":
        min_samples = dbscan_min_samples(len(Z), data.n_clusters, params["min_samples_fraction"])
        eps = dbscan_eps(Z, min_samples, params["eps_quantile"], params["metric"])
        est = DBSCAN(eps=eps, min_samples=min_samples, metric=params["metric"])
    elif family == "agglomerative":
        est = AgglomerativeClustering(n_clusters=min(data.n_clusters, len(Z)), linkage=params["linkage"])
    else:
        get_family(family)  # raises with the list of known families
        raise AssertionError("unreachable")
    labels = est.fit_predict(Z)
    return Pipeline([*prep.steps, ("cluster", est)]), np.asarray(labels)
