"""Classifier families: factories, search spaces, staged fitting with pruning, metrics."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from voiceid.grid import classifiers
from voiceid.scoring import classification

N_SPK, DIM = 8, 20


def blobs(per: int, seed: int, spread: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Seeded speaker blobs: same centres for every seed, fresh noise."""
    centres = np.random.default_rng(123).normal(size=(N_SPK, DIM)) * 3.0 + 5.0  # offset: the scaler matters
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + spread * rng.normal(size=(per, DIM)) for c in centres]).astype(np.float32)
    y = np.repeat([f"spk{i}" for i in range(N_SPK)], per)
    return X, y


def ctx(**kw: object) -> classifiers.FitContext:
    limits = classifiers.CatBoostLimits(iterations_min=20, iterations_max=40, thread_count=1)
    return classifiers.FitContext(seed=0, n_features=DIM, min_class_count=5, catboost=limits, **kw)


@pytest.mark.parametrize("name", sorted(classifiers.FAMILIES))
def test_every_family_learns_separable_speakers(name: str) -> None:
    family = classifiers.get_family(name)
    X, y = blobs(5, seed=1)
    Xt, yt = blobs(3, seed=2)
    pipe = classifiers.fit_classifier(family, family.defaults(ctx()), X, y, ctx())
    proba = pipe.predict_proba(Xt)
    assert proba.shape == (len(yt), N_SPK)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    scores = classification.classification_metrics(yt, proba, pipe.classes_)
    assert scores["f1_weighted"] > 0.9, scores
    # the scaler is fitted on the training rows only and lives in the pipeline
    np.testing.assert_allclose(pipe.named_steps["scale"].mean_, X.mean(axis=0), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(classifiers.FAMILIES))
def test_search_space_samples_build_and_fit(name: str) -> None:
    family = classifiers.get_family(name)
    X, y = blobs(5, seed=3)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    for _ in range(2):
        trial = study.ask()
        params = family.space(trial, ctx())
        pipe = classifiers.fit_classifier(family, params, X, y, ctx())
        assert pipe.predict_proba(X[:3]).shape == (3, N_SPK)
        study.tell(trial, 0.0)


def test_svc_default_is_the_seed_recipe() -> None:
    svc_params = classifiers.get_family("svc").defaults(ctx())
    assert svc_params["C"] == 5.0 and svc_params["kernel"] == "rbf"


def test_knn_caps_neighbours_at_training_size() -> None:
    X, y = blobs(1, seed=4)  # 8 rows
    family = classifiers.get_family("knn")
    pipe = classifiers.fit_classifier(family, {"n_neighbors": 15, "weights": "uniform", "metric": "euclidean"}, X, y, ctx())
    assert pipe.named_steps["clf"].n_neighbors == len(y)


class Stop(Exception):
    pass


@pytest.mark.parametrize("name", ["mlp", "catboost"])
def test_iterative_families_report_and_stop_on_request(name: str) -> None:
    family = classifiers.get_family(name)
    X, y = blobs(5, seed=5)
    Xv, yv = blobs(2, seed=6)
    seen: list[tuple[int, float]] = []

    def report(step: int, value: float) -> None:
        seen.append((step, value))
        if len(seen) == 2:
            raise Stop

    params = {**family.defaults(ctx()), "epochs": 200}
    with pytest.raises(Stop):
        classifiers.fit_classifier(family, params, X, y, ctx(), classifiers.Monitor(Xv, yv, report, every=10))
    assert [s for s, _ in seen] == [10, 20]  # stopped at the second report, not at the end
    assert all(0.0 <= v <= 1.0 for _, v in seen)


def test_classification_metrics_by_hand() -> None:
    classes = np.array(["a", "b", "c"])
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    y = np.array(["a", "b", "b", "c"])
    m = classification.classification_metrics(y, proba, classes)
    assert m["accuracy"] == pytest.approx(0.75)
    # per class F1: a 2/3, b 2/3, c 1 -> macro 7/9; weights 1,2,1 -> weighted (2/3 + 4/3 + 1)/4
    assert m["f1_macro"] == pytest.approx(7 / 9)
    assert m["f1_weighted"] == pytest.approx(0.75)
    assert m["top5_accuracy"] == 1.0


def test_top5_counts_rank_and_unknown_labels() -> None:
    classes = np.array([f"s{i}" for i in range(7)])
    proba = np.tile(np.arange(7, 0, -1, dtype=float), (3, 1))  # ranking s0 > s1 > ... > s6
    y = np.array(["s4", "s6", "ghost"])  # rank 5 (hit), rank 7 (miss), not a class (miss)
    m = classification.classification_metrics(y, proba / proba.sum(axis=1, keepdims=True), classes)
    assert m["top5_accuracy"] == pytest.approx(1 / 3)
    assert m["accuracy"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        classification.classification_metrics(y, proba[:, :3], classes)


def test_unknown_family_lists_known() -> None:
    with pytest.raises(ValueError, match="svc"):
        classifiers.get_family("xgboost")


def quiet_unit_rows(per: int, seed: int, quiet: float) -> tuple[np.ndarray, np.ndarray]:
    """Encoder-like rows: 16 dims carry the voice, 16 ReLU units near silent (sd 1e-3) unless ``quiet`` is set."""
    centres = np.random.default_rng(7).normal(size=(N_SPK, 16))
    rng = np.random.default_rng(seed)
    voice = np.concatenate([c + 0.3 * rng.normal(size=(per, 16)) for c in centres])
    units = quiet + 1e-3 * np.abs(rng.normal(size=(len(voice), 16)))
    return np.hstack([voice, units]).astype(np.float32), np.repeat([f"spk{i}" for i in range(N_SPK)], per)


@pytest.mark.parametrize("name", ["knn", "logreg", "svc"])
def test_encoder_rows_are_scaled_as_a_whole_so_quiet_units_cannot_decide(name: str) -> None:
    # probes whose near-silent units wake up (another microphone, another session): scaled per
    # dimension those units are ~300x the voice and every answer is noise; scaled as a whole
    # (FitContext.encoder) they shift every speaker alike
    family = classifiers.get_family(name)
    X, y = quiet_unit_rows(5, seed=1, quiet=0.0)
    Xt, yt = quiet_unit_rows(3, seed=2, quiet=0.3)
    encoder = classifiers.FitContext(seed=0, n_features=32, min_class_count=5, encoder=True)
    pipe = classifiers.fit_classifier(family, family.defaults(encoder), X, y, encoder)
    assert (pipe.predict(Xt) == yt).mean() > 0.9
    stats = classifiers.FitContext(seed=0, n_features=32, min_class_count=5)  # the statistics' scaler on the same rows: the quiet units decide
    per_dim = classifiers.fit_classifier(family, family.defaults(stats), X, y, stats)
    assert (per_dim.predict(Xt) == yt).mean() < 0.6
