"""Clustering families and their scores (ARI, NMI, Hungarian-matched F1/accuracy)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from voiceid.grid import clustering

N_SPK, DIM = 6, 12


def blobs(per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(7).normal(size=(N_SPK, DIM)) * 4.0
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + 0.5 * rng.normal(size=(per, DIM)) for c in centres]).astype(np.float32)
    return X, np.repeat([f"spk{i}" for i in range(N_SPK)], per)


def test_relabelled_perfect_clustering_scores_one() -> None:
    y = np.array(["a", "a", "b", "b", "c", "c"])
    clusters = np.array([2, 2, 0, 0, 1, 1])
    assert clustering.hungarian_match(y, clusters) == {2: "a", 0: "b", 1: "c"}
    m = clustering.clustering_metrics(y, clusters)
    assert m["ari"] == pytest.approx(1.0) and m["nmi"] == pytest.approx(1.0)
    assert m["accuracy"] == 1.0 and m["f1_weighted"] == 1.0 and m["n_clusters"] == 3


def test_hungarian_leaves_extra_clusters_and_noise_unmatched() -> None:
    y = np.array(["a", "a", "a", "b", "b", "b"])
    clusters = np.array([0, 0, 5, 1, 1, -1])  # cluster 5 is a third cluster, -1 is noise
    pred = clustering.matched_labels(y, clusters)
    assert list(pred) == ["a", "a", clustering.UNMATCHED, "b", "b", clustering.UNMATCHED]
    m = clustering.clustering_metrics(y, clusters)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["noise_fraction"] == pytest.approx(1 / 6) and m["n_clusters"] == 3


def test_all_noise_scores_zero() -> None:
    y = np.array(["a", "a", "b", "b"])
    m = clustering.clustering_metrics(y, np.full(4, -1))
    assert m["accuracy"] == 0.0 and m["ari"] == pytest.approx(0.0) and m["n_clusters"] == 0


@pytest.mark.parametrize("name", sorted(clustering.FAMILIES))
def test_each_family_recovers_separated_speakers(name: str) -> None:
    X_train, y_train = blobs(5, seed=1)
    X_test, y_test = blobs(3, seed=2)
    data = clustering.ClusterData(X_train, y_train, X_test, N_SPK)
    pipe, labels = clustering.fit_clusterer(name, dict(clustering.get_family(name).defaults), data, seed=0)
    assert labels.shape == (len(y_test),)
    assert clustering.clustering_metrics(y_test, labels)["ari"] > 0.9
    # the preprocessing was fitted on the training rows, not on the clustered ones
    np.testing.assert_allclose(pipe.named_steps["scale"].mean_, X_train.mean(axis=0), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(clustering.FAMILIES))
def test_search_space_samples_run(name: str) -> None:
    X_train, y_train = blobs(5, seed=3)
    data = clustering.ClusterData(X_train, y_train, X_train, N_SPK)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1), direction="maximize")
    for _ in range(3):
        trial = study.ask()
        _, labels = clustering.fit_clusterer(name, clustering.get_family(name).space(trial), data, seed=0)
        study.tell(trial, clustering.clustering_metrics(y_train, labels)["ari"])
    assert study.best_value > 0.5


def test_seed_points_one_per_speaker() -> None:
    Z = np.array([[0.0], [10.0], [1.0], [2.0], [20.0], [21.0]])
    y = np.array(["a", "a", "a", "b", "b", "b"])
    np.testing.assert_array_equal(clustering.seed_points(Z, y, "first"), [[0.0], [2.0]])
    # a's mean is 11/3: the nearest of its rows is 1.0; b's mean 43/3: nearest is 20
    np.testing.assert_array_equal(clustering.seed_points(Z, y, "medoid"), [[1.0], [20.0]])
    with pytest.raises(ValueError, match="seed_point"):
        clustering.seed_points(Z, y, "random")


def test_seeded_kmeans_starts_at_the_known_points() -> None:
    X_train, y_train = blobs(5, seed=4)
    data = clustering.ClusterData(X_train, y_train, X_train, N_SPK)
    _, labels = clustering.fit_clusterer("kmeans_seeded", {**clustering.get_family("kmeans_seeded").defaults}, data, 0)
    # cluster i is initialised from speaker i's first row, so on clean blobs label i == speaker i
    np.testing.assert_array_equal(labels, np.repeat(np.arange(N_SPK), 5))


def test_dbscan_min_samples_scales_with_speaker_size() -> None:
    assert clustering.dbscan_min_samples(70, 10, 0.3) == 2
    assert clustering.dbscan_min_samples(300, 10, 0.3) == 9
    assert clustering.dbscan_min_samples(3, 10, 0.6) == 2


def test_unknown_family_is_named() -> None:
    X, y = blobs(2, seed=0)
    with pytest.raises(ValueError, match="spectral"):
        clustering.fit_clusterer("spectral", {"pca_variance": 1.0, "l2_normalize": False}, clustering.ClusterData(X, y, X, N_SPK), 0)


def test_encoder_rows_are_clustered_on_the_voice_not_on_their_quiet_units() -> None:
    # an encoder's near-silent units (sd 1e-3 in training) wake up on the clustered rows, by
    # recording rather than by speaker: scaled per dimension they decide the clusters
    rng = np.random.default_rng(4)
    centres = np.random.default_rng(7).normal(size=(N_SPK, DIM)) * 4.0

    def rows(per: int) -> tuple[np.ndarray, np.ndarray]:
        voice = np.concatenate([c + 0.5 * rng.normal(size=(per, DIM)) for c in centres])
        units = 1e-3 * rng.normal(size=(len(voice), DIM))
        return np.hstack([voice, units]), np.repeat([f"spk{i}" for i in range(N_SPK)], per)

    X_train, y_train = rows(5)
    X_test, y_test = rows(4)
    X_test[:, DIM:] += rng.choice([0.0, 0.5], size=(len(X_test), 1))  # half the recordings wake the units
    hp = dict(clustering.get_family("kmeans").defaults)
    ari = {
        encoder: clustering.clustering_metrics(
            y_test, clustering.fit_clusterer("kmeans", hp, clustering.ClusterData(X_train, y_train, X_test, N_SPK, encoder), 0)[1]
        )["ari"]
        for encoder in (True, False)
    }
    assert ari[True] > 0.9 and ari[False] < 0.5, ari
