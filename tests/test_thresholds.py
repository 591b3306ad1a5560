"""Threshold rules and calibrators: each fitted value checked against its definition."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from voiceid.scoring.calibration import ScoreCalibrator
from voiceid.scoring.verification import eer
from voiceid.select.calibration import brier_multiclass, calibrate_classifier
from voiceid.select.thresholds import (
    EerThreshold,
    FBetaThreshold,
    FprThreshold,
    fit_thresholds,
    make_threshold,
)


def scores_labels(seed: int = 0, n_pos: int = 60, n_neg: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = np.r_[rng.normal(1.0, 0.7, n_pos), rng.normal(-0.5, 0.7, n_neg)]
    return s, np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]


def fbeta_at(s: np.ndarray, y: np.ndarray, t: float, beta: float) -> float:
    acc = s >= t
    tp = (acc & (y == 1)).sum()
    p = tp / max(acc.sum(), 1)
    r = tp / (y == 1).sum()
    return 0.0 if p + r == 0 else (1 + beta**2) * p * r / (beta**2 * p + r)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_fbeta_threshold_is_the_best_score_cut(beta: float) -> None:
    s, y = scores_labels()
    rule = FBetaThreshold(beta).fit(s, y)
    brute = max(fbeta_at(s, y, t, beta) for t in np.unique(s))
    assert rule.fbeta_ == pytest.approx(brute)
    assert fbeta_at(s, y, rule.threshold_, beta) == pytest.approx(brute)


def test_larger_beta_favours_recall() -> None:
    s, y = scores_labels(seed=3)
    low, high = FBetaThreshold(0.3).fit(s, y), FBetaThreshold(3.0).fit(s, y)
    assert high.threshold_ <= low.threshold_
    assert high.recall_ >= low.recall_


@pytest.mark.parametrize("target", [0.0, 0.05, 0.2])
def test_fpr_threshold_is_lowest_meeting_the_target(target: float) -> None:
    s, y = scores_labels(seed=1)
    rule = FprThreshold(target).fit(s, y)
    neg = s[y == 0]
    assert np.mean(neg >= rule.threshold_) <= target
    assert rule.fpr_ == pytest.approx(np.mean(neg >= rule.threshold_))
    assert rule.tpr_ == pytest.approx(np.mean(s[y == 1] >= rule.threshold_))
    lower = s[s < rule.threshold_]
    if lower.size:  # the next lower candidate would break the target
        assert np.mean(neg >= lower.max()) > target


def test_eer_threshold_matches_scoring() -> None:
    s, y = scores_labels(seed=2)
    rule = EerThreshold().fit(s, y)
    assert (rule.eer_, rule.threshold_) == eer(s, y)


def test_accept_and_errors() -> None:
    s, y = scores_labels()
    with pytest.raises(ValueError, match="not fitted"):
        FprThreshold().accept(s)
    rule = make_threshold("fpr", target_fpr=0.1).fit(s, y)
    assert np.array_equal(rule.accept(s), s >= rule.threshold_)
    with pytest.raises(ValueError, match="enrolled and unknown"):
        EerThreshold().fit(s[y == 1], y[y == 1])
    with pytest.raises(ValueError, match="unknown threshold rule"):
        make_threshold("roc")  # type: ignore[arg-type]
    assert set(fit_thresholds(s, y, 1.0, 0.05)) == {"fbeta", "fpr", "eer"}


def test_score_calibrator_recovers_a_logistic_link() -> None:
    rng = np.random.default_rng(4)
    s = rng.uniform(-1, 1, 4000)
    y = (rng.uniform(size=s.size) < 1 / (1 + np.exp(-(6 * s - 1)))).astype(int)
    cal = ScoreCalibrator().fit(s, y)
    assert cal.a_ == pytest.approx(6, rel=0.15)
    assert cal.b_ == pytest.approx(-1, abs=0.25)
    p = cal.predict_proba(np.sort(s))
    assert np.all(np.diff(p) >= 0) and 0 < p.min() and p.max() < 1
    assert cal.predict_proba(cal.inverse(0.3)) == pytest.approx(0.3)
    assert cal.inverse(0.0) == -np.inf and cal.inverse(1.0) == np.inf


def _classifier_data(per_class_val: int = 4, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1.2, (4, 5))
    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.array(["a", "b", "c", "d"]), n)
        return means[np.repeat(np.arange(4), n)] + rng.normal(0, 1, (4 * n, 5)), y
    Xt, yt = draw(6)
    Xv, yv = draw(per_class_val)
    model = Pipeline([("s", StandardScaler()), ("c", LogisticRegression(max_iter=1000))]).fit(Xt, yt)
    return model, Xv, yv


def test_calibrate_classifier_picks_the_lowest_cross_fitted_loss() -> None:
    model, Xv, yv = _classifier_data()
    coef = model.named_steps["c"].coef_.copy()
    choice = calibrate_classifier(model, Xv, yv, ("isotonic", "sigmoid"), "log_loss", seed=0)
    assert set(choice.losses) == {"isotonic", "sigmoid"}
    assert choice.method == min(choice.losses, key=lambda m: choice.losses[m]["log_loss"])
    assert choice.n_folds == 4
    proba = choice.calibrated.predict_proba(Xv)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert choice.oof_proba.shape == proba.shape
    # the deployed model is the mean of the k fold calibrators; row r's OOF score is the one
    # member that did not see it
    members = choice.calibrated.members
    assert len(members) == 4
    assert np.allclose(proba, np.mean([m.predict_proba(Xv) for m in members], axis=0))
    hits = [[np.allclose(m.predict_proba(Xv[[r]])[0], choice.oof_proba[r]) for m in members] for r in range(len(yv))]
    assert all(sum(h) >= 1 for h in hits)
    assert np.array_equal(model.named_steps["c"].coef_, coef)  # frozen: never refitted
    assert choice.losses[choice.method]["brier"] == pytest.approx(brier_multiclass(yv, choice.oof_proba, choice.calibrated.classes_))


def test_calibrate_classifier_brier_metric_and_edge_cases() -> None:
    model, Xv, yv = _classifier_data()
    choice = calibrate_classifier(model, Xv, yv, ("isotonic", "sigmoid"), "brier", seed=0)
    assert choice.method == min(choice.losses, key=lambda m: choice.losses[m]["brier"])
    rng = np.random.default_rng(5)
    Xu = rng.normal(0, 3, (6, 5))  # probes of speakers the model never saw
    open_choice = calibrate_classifier(model, Xv, yv, ("isotonic", "sigmoid"), "open_brier", seed=0, X_extra=Xu)
    assert open_choice.method == min(open_choice.losses, key=lambda m: open_choice.losses[m]["open_brier"])
    unknown = open_choice.calibrated.predict_proba(Xu)
    assert unknown.shape == (6, 4) and np.allclose(unknown.sum(axis=1), 1.0)
    losses = open_choice.losses[open_choice.method]
    n_k = len(yv)
    expected = (losses["brier"] * n_k + np.sum(unknown**2)) / (n_k + 6)
    assert losses["open_brier"] == pytest.approx(expected)
    single, Xs, ys = _classifier_data(per_class_val=1)
    one = calibrate_classifier(single, Xs, ys, ("sigmoid", "isotonic"))
    assert one.method == "sigmoid" and one.n_folds == 0 and one.losses == {}
    with pytest.raises(ValueError, match="missing"):
        calibrate_classifier(model, Xv[yv != "d"], yv[yv != "d"])
