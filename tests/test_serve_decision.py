"""A classifier's own open-set statistic (voiceid.serve.decision) and selection's choice of it on val."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from synthetic_select import fit_logreg, gaussian_bank

from voiceid.features.params import FeatureParams
from voiceid.grid.classifiers import FAMILIES, FitContext
from voiceid.select.candidates import FeatureBank, Source, build_candidate, score_split
from voiceid.select.params import SelectParams
from voiceid.serve.decision import open_set_statistic


def _train(bank: FeatureBank) -> tuple[np.ndarray, np.ndarray]:
    X, y = bank.rows("mfcc60", "enrolled", "train")
    return np.asarray(X), np.asarray(y)


def _grid_model(family: str, bank: FeatureBank, **params: object) -> Pipeline:
    """A model as the grid stage builds it (the SVC inside its temperature-scaling wrapper)."""
    X, y = _train(bank)
    ctx = FitContext(seed=0, n_features=X.shape[1], min_class_count=int(np.unique(y, return_counts=True)[1].min()))
    fam = FAMILIES[family]
    return fam.build({**fam.defaults(ctx), **params}, ctx).fit(X, y)


def test_statistic_is_what_each_family_decides_on() -> None:
    bank = gaussian_bank(seed=1)
    X, y = _train(bank)
    probes = np.asarray(bank.rows("mfcc60", "unknown", "test")[0])
    svc = _grid_model("svc", bank)
    inner = svc[-1].calibrated_classifiers_[0].estimator
    assert np.allclose(open_set_statistic(svc, probes), inner.decision_function(svc[0].transform(probes)).max(axis=1))
    knn = _grid_model("knn", bank, n_neighbors=3, weights="uniform", metric="euclidean")
    nearest = np.linalg.norm(knn[0].transform(probes)[:, None, :] - knn[0].transform(X)[None, :, :], axis=2).min(axis=1)
    assert np.allclose(open_set_statistic(knn, probes), -nearest)
    logreg = fit_logreg(bank)
    assert np.allclose(open_set_statistic(logreg, probes), np.log(logreg.predict_proba(probes).max(axis=1)))
    bare = Pipeline([("s", StandardScaler()), ("svc", SVC())]).fit(X, y)  # no probabilities: its decision values
    assert np.allclose(open_set_statistic(bare, probes), bare.decision_function(probes).max(axis=1))
    mlp = Pipeline([("s", StandardScaler()), ("m", MLPClassifier((16,), max_iter=300, random_state=0))]).fit(X, y)
    assert np.allclose(open_set_statistic(mlp, probes), np.log(mlp.predict_proba(probes).max(axis=1)))
    binary = Pipeline([("s", StandardScaler()), ("svc", SVC())]).fit(X[:10], (y[:10] == y[0]).astype(int))
    assert np.allclose(open_set_statistic(binary, probes), np.abs(binary.decision_function(probes)))


@pytest.mark.parametrize("family", ["knn", "svc"])
def test_a_saturated_classifier_gets_its_own_statistic_and_separates_strangers(family: str) -> None:
    # well-separated voices: the 1-NN vote and the steep temperature scaling say 1.000 for
    # strangers too, while distance / decision value tell them apart
    bank = gaussian_bank(seed=5, spread=0.3, n_enrolled=8, n_unknown_val=6, n_unknown_test=6, unknown_utts=3)
    extra = {"n_neighbors": 1, "weights": "uniform", "metric": "euclidean"} if family == "knn" else {"C": 100.0}
    model = _grid_model(family, bank, **extra)
    params = SelectParams(n_bootstrap=0, classifier_scores=("calibrated", "decision"))
    features = FeatureParams(sets=("mfcc60",))
    source = Source(family, "classifier", "mfcc60")
    cand = build_candidate(source, model, bank.without_test(), params, features)
    tried = cand.calibration["losses"]["val_eer"]
    assert cand.calibration["score"] == "decision" and tried["decision"] < tried["calibrated"]
    test = score_split(cand, bank, "test")
    assert roc_auc_score(test.known, test.score) > 0.95  # strangers score low on data the choice never saw
    only = build_candidate(
        source, model, bank.without_test(), SelectParams(n_bootstrap=0, classifier_scores=("calibrated",)), features
    )
    old = score_split(only, bank, "test")
    assert only.calibration["score"] == "calibrated" and roc_auc_score(old.known, old.score) < 0.9
    assert np.array_equal(old.pred, test.pred)  # the score changed, not who is named
    default = build_candidate(source, model, bank.without_test(), SelectParams(n_bootstrap=0), features)
    assert default.calibration["score"] == "decision" and list(default.calibration["losses"]["val_eer"]) == ["decision"]


def test_decision_score_is_calibrated_on_val_and_served_the_same_way() -> None:
    bank = gaussian_bank(seed=6, spread=0.3, n_enrolled=8, n_unknown_val=6, n_unknown_test=6, unknown_utts=3)
    model = _grid_model("knn", bank, n_neighbors=1, weights="uniform", metric="euclidean")
    cand = build_candidate(
        Source("knn", "classifier", "mfcc60"),
        model,
        bank.without_test(),
        SelectParams(n_bootstrap=0),
        FeatureParams(sets=("mfcc60",)),
    )
    scorer = cand.scorer
    assert scorer.decision is not None  # type: ignore[union-attr]
    # the val scores thresholds were fitted on are what the deployed scorer gives the same probes
    inputs, *_ = bank.without_test().probes("mfcc60", "val")
    assert np.allclose(scorer.score_inputs(inputs).score, cand.val.score)
    # per-speaker scores (the demo's bars): the calibrated ranking, topped by the open-set score
    per = scorer.speaker_scores(inputs)  # type: ignore[union-attr]
    proba = scorer.calibrated.predict_proba(np.stack([np.ravel(x) for x in inputs]))  # type: ignore[union-attr]
    assert np.allclose(per.max(axis=1), cand.val.score)
    assert np.all(per[np.arange(len(per)), proba.argmax(axis=1)] == per.max(axis=1))  # the named speaker tops the row
    # calibrated in the large: the mean val score is the share of right answers
    assert np.mean(cand.val.score) == pytest.approx(cand.val.correct.mean(), abs=0.05)
    # a champion pickled before the statistic existed has no ``decision``: it keeps the top probability
    restored = pickle.loads(pickle.dumps(scorer))
    del restored.__dict__["decision"]
    X = np.stack([np.ravel(x) for x in inputs])
    assert np.allclose(restored.score_inputs(inputs).score, restored.calibrated.predict_proba(X).max(axis=1))


def test_classifier_scores_must_name_distinct_kinds() -> None:
    with pytest.raises(ValueError, match="classifier_scores"):
        SelectParams(classifier_scores=()).check()
    with pytest.raises(ValueError, match="classifier_scores"):
        SelectParams(classifier_scores=("decision", "decision")).check()


def test_fusion_detects_with_the_classifiers_own_score_and_old_fusions_still_score() -> None:
    from voiceid.select.candidates import build_fusion
    from voiceid.serve.fusion import FusionScorer

    bank = gaussian_bank(seed=5, spread=0.3, n_enrolled=8, n_unknown_val=6, n_unknown_test=6, unknown_utts=3)
    params, features = SelectParams(n_bootstrap=0), FeatureParams(sets=("mfcc60",))
    knn = _grid_model("knn", bank, n_neighbors=1, weights="uniform", metric="euclidean")
    clf = build_candidate(Source("knn", "classifier", "mfcc60"), knn, bank.without_test(), params, features)
    emb = build_candidate(Source("cosine", "embedding", "mfcc60"), None, bank.without_test(), params, features)
    fusion = build_fusion(clf, emb, bank.without_test(), params)
    detect = fusion.calibration["detect_weights"]
    assert len(detect) == 4 and detect[2] > 0  # the kNN's distance says "stranger" where its 1-NN vote cannot
    test = score_split(fusion, bank, "test")
    assert roc_auc_score(test.known, test.score) > 0.95
    scorer = fusion.scorer
    inputs, *_ = bank.probes("mfcc60+mfcc60", "test")
    t = scorer.pair_scores(inputs)  # type: ignore[union-attr]
    d = np.asarray(scorer.detect)  # type: ignore[union-attr]
    named = scorer.fused(t).argmax(axis=1)  # type: ignore[union-attr]
    z = d[0] * t.lo[np.arange(len(named)), named] + d[1] * t.es[np.arange(len(named)), named] + d[2] * t.own + d[3]
    assert np.allclose(test.score, 1.0 / (1.0 + np.exp(-z)))  # the deployed score uses all four weights
    # a fusion pickled before the classifier's own score took part has 3 detection weights: it ignores it
    old = FusionScorer(scorer.classifier, scorer.embedding, scorer.identify, [1.0, 2.0, -0.5])  # type: ignore[union-attr]
    best = old.fused(t).argmax(axis=1)
    rows = np.arange(len(best))
    expected = 1.0 / (1.0 + np.exp(-(t.lo[rows, best] + 2.0 * t.es[rows, best] - 0.5)))
    assert np.allclose(old.score_pairs(t).score, expected)
