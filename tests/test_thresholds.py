"""Threshold rules and calibrators: each fitted value checked against its definition."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss
from sklearn.model_selection import PredefinedSplit, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from voiceid.scoring.calibration import ScoreCalibrator
from voiceid.scoring.verification import eer
from voiceid.select.calibration import calibrate_classifier
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


def clustered_val(seed: int, n_speakers: int = 10, clips: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Val scores whose unknown probes cluster by speaker: speaker level ~ N(0, 1), clip ~ N(level, 0.5).

    A *new* stranger's score is then N(0, sqrt(1.25)), so the FAR any threshold gives new
    strangers is known exactly (:func:`new_stranger_far`).
    """
    rng = np.random.default_rng(seed)
    level = rng.normal(0.0, 1.0, n_speakers)
    unknown = (level[:, None] + rng.normal(0.0, 0.5, (n_speakers, clips))).ravel()
    enrolled = rng.normal(2.5, 1.0, 120)
    groups = np.r_[np.full(120, "enrolled"), np.repeat([f"stranger{i}" for i in range(n_speakers)], clips)]
    return np.r_[enrolled, unknown], np.r_[np.ones(120, int), np.zeros(unknown.size, int)], groups


def new_stranger_far(threshold: float) -> float:
    from scipy.stats import norm

    return float(norm.sf(threshold / np.sqrt(1.25)))


def test_fpr_confidence_holds_the_target_for_new_strangers_where_the_plain_rule_does_not() -> None:
    plain, grouped, by_probe = [], [], []
    for seed in range(60):
        s, y, g = clustered_val(seed)
        plain.append(new_stranger_far(FprThreshold(0.05).fit(s, y).threshold_))
        grouped.append(new_stranger_far(FprThreshold(0.05, confidence=0.9, seed=seed).fit(s, y, g).threshold_))
        by_probe.append(new_stranger_far(FprThreshold(0.05, confidence=0.9, seed=seed).fit(s, y).threshold_))
    plain_ok, grouped_ok, probe_ok = (float(np.mean(np.array(v) <= 0.05)) for v in (plain, grouped, by_probe))
    # the plain rule meets 5% on its own val strangers, but new ones see more, on average by half again
    assert plain_ok < 0.5 and np.mean(plain) > 0.07
    # resampling the strangers' *speakers* (smoothed) meets it for new strangers about as often as asked
    assert grouped_ok >= 0.8 and np.mean(grouped) < 0.04
    # resampling probes as if independent cannot see how few speakers there are
    assert probe_ok < grouped_ok - 0.15


def test_fpr_confidence_never_lets_in_more_than_the_plain_rule() -> None:
    s, y, g = clustered_val(3)
    plain = FprThreshold(0.05).fit(s, y)
    rule = FprThreshold(0.05, confidence=0.5, seed=1).fit(s, y, g)
    assert rule.point_threshold_ == plain.threshold_ == plain.point_threshold_
    assert rule.threshold_ >= plain.threshold_ and rule.fpr_ <= 0.05
    assert rule.tpr_ == pytest.approx(np.mean(s[y == 1] >= rule.threshold_))
    strict = FprThreshold(0.0, confidence=0.9).fit(s, y, g)  # no stranger may pass: still a finite cut
    assert np.isfinite(strict.threshold_) and strict.fpr_ == 0.0
    with pytest.raises(ValueError, match="confidence"):
        FprThreshold(0.05, confidence=1.0).fit(s, y, g)
    with pytest.raises(ValueError, match="one group per score"):
        FprThreshold(0.05, confidence=0.9).fit(s, y, g[:-1])


def test_fpr_confidence_on_probabilities_resamples_log_odds() -> None:
    """Calibrated scores are probabilities: the same resampling on the log-odds scale, so the cut maps back exactly."""
    s, y, g = clustered_val(5)
    raw = FprThreshold(0.05, confidence=0.9, seed=7).fit(s, y, g)
    prob = FprThreshold(0.05, confidence=0.9, seed=7).fit(1.0 / (1.0 + np.exp(-s)), y, g)
    assert 0.0 < prob.threshold_ < 1.0
    assert prob.threshold_ == pytest.approx(1.0 / (1.0 + np.exp(-raw.threshold_)), abs=1e-9)
    assert (prob.fpr_, prob.tpr_) == (raw.fpr_, raw.tpr_)


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
    assert np.all(np.diff(p) >= 0) and p.min() > 0 and p.max() < 1
    assert cal.predict_proba(cal.inverse(0.3)) == pytest.approx(0.3)
    assert cal.inverse(0.0) == -np.inf and cal.inverse(1.0) == np.inf


@pytest.mark.parametrize(("offset", "spread"), [(39.3, 1.0), (39.3, 0.005), (-1e3, 100.0)])
def test_score_calibrator_solves_the_same_problem_at_any_score_scale(offset: float, spread: float) -> None:
    """An SVC's votes + confidence sit near 39.3 with a spread of 0.005: the slope must still come out right.

    The intercept is not penalised, so an offset changes nothing; scaling the score by k is the
    same model as scaling C by k**2 (the penalty is on the slope).
    """
    rng = np.random.default_rng(5)
    s = rng.normal(size=400)
    y = (rng.uniform(size=s.size) < 1 / (1 + np.exp(-(1.5 * s - 1)))).astype(int)
    ref = ScoreCalibrator(C=1e4 * spread**2).fit(s, y)
    cal = ScoreCalibrator().fit(offset + spread * s, y)
    assert cal.a_ > 0
    assert cal.predict_proba(offset + spread * s) == pytest.approx(ref.predict_proba(s), abs=1e-4)
    with pytest.raises(ValueError, match="every score is the same"):
        ScoreCalibrator().fit(np.full(10, offset), y[:10])


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


class ScoreColumn(ClassifierMixin, BaseEstimator):
    """A 'fitted' two-speaker classifier whose P("b") is the first feature: scores made by hand."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> ScoreColumn:
        self.classes_ = np.array(["a", "b"])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(X, dtype=float)[:, 0], 0.001, 0.999)
        return np.c_[1 - p, p]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def _scored(p_b: np.ndarray, s: np.ndarray, seed: int) -> tuple[ScoreColumn, np.ndarray, np.ndarray]:
    y = np.where(np.random.default_rng(seed).uniform(size=len(s)) < p_b, "b", "a")
    return ScoreColumn().fit(s[:, None], y), s[:, None], y


def test_isotonic_wins_brier_when_the_true_link_is_a_staircase() -> None:
    """P(b | score) is 0, then 0.5, then 1: no sigmoid bends like that, isotonic regression fits it."""
    s = np.random.default_rng(0).uniform(0, 1, 300)
    model, X, y = _scored(np.select([s < 0.3, s < 0.7], [0.0, 0.5], 1.0), s, seed=1)
    choice = calibrate_classifier(model, X, y, ("sigmoid", "isotonic"), "brier", seed=0)
    assert choice.method == "isotonic"
    assert choice.losses["isotonic"]["brier"] < choice.losses["sigmoid"]["brier"] - 0.01
    # Isotonic's hard 0/1 steps are what log-loss punishes: the same scores pick sigmoid there.
    assert calibrate_classifier(model, X, y, ("isotonic", "sigmoid"), "log_loss", seed=0).method == "sigmoid"


def test_sigmoid_wins_log_loss_on_few_rows_of_a_smooth_link() -> None:
    """20 rows with P(b | score) = score: isotonic memorises them and is sure of held-out rows it gets wrong."""
    s = np.random.default_rng(2).uniform(0.2, 0.8, 20)
    model, X, y = _scored(s, s, seed=3)
    choice = calibrate_classifier(model, X, y, ("isotonic", "sigmoid"), "log_loss", seed=0)
    assert choice.method == "sigmoid"
    assert choice.losses["sigmoid"]["log_loss"] < 0.8 < 1.5 < choice.losses["isotonic"]["log_loss"]


def test_cross_fitted_losses_match_sklearn_on_the_same_folds() -> None:
    """The losses, re-derived with scikit-learn's own metrics over the documented k-fold scheme."""
    model, Xv, yv = _classifier_data()
    choice = calibrate_classifier(model, Xv, yv, ("isotonic", "sigmoid"), "log_loss", seed=0)
    k = min(5, int(np.unique(yv, return_counts=True)[1].min()))
    folds = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=0).split(Xv, yv))
    expected = {}
    for method in ("isotonic", "sigmoid"):
        oof = np.zeros((len(yv), 4))
        for fit_idx, held_idx in folds:
            cal = CalibratedClassifierCV(FrozenEstimator(model), method=method, cv=PredefinedSplit(np.zeros(len(fit_idx), int)))
            oof[held_idx] = cal.fit(Xv[fit_idx], yv[fit_idx]).predict_proba(Xv[held_idx])
        expected[method] = {
            # isotonic outputs exact zeros: the loss floors probabilities at 1e-15 (sklearn's own
            # floor is the float epsilon), so a confident miss costs -ln(1e-15) = 34.5 nats
            "log_loss": log_loss(yv, np.clip(oof, 1e-15, 1.0), labels=model.classes_),
            "brier": brier_score_loss(yv, oof, labels=model.classes_, scale_by_half=False),
        }
    assert choice.n_folds == k == 4
    for method, losses in expected.items():
        assert choice.losses[method]["log_loss"] == pytest.approx(losses["log_loss"], rel=1e-6), method
        assert choice.losses[method]["brier"] == pytest.approx(losses["brier"], rel=1e-6), method
    assert choice.method == min(expected, key=lambda m: expected[m]["log_loss"])
    assert choice.losses["isotonic"]["log_loss"] != pytest.approx(choice.losses["sigmoid"]["log_loss"])  # a real choice


def test_calibrated_ensemble_averages_frozen_fold_calibrators() -> None:
    model, Xv, yv = _classifier_data()
    coef = model.named_steps["c"].coef_.copy()
    choice = calibrate_classifier(model, Xv, yv, ("isotonic", "sigmoid"), "log_loss", seed=0)
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


def test_calibrate_classifier_brier_metric_and_edge_cases() -> None:
    model, Xv, yv = _classifier_data()
    rng = np.random.default_rng(5)
    Xu = rng.normal(0, 3, (6, 5))  # probes of speakers the model never saw
    open_choice = calibrate_classifier(model, Xv, yv, ("isotonic", "sigmoid"), "open_brier", seed=0, X_extra=Xu)
    unknown = open_choice.calibrated.predict_proba(Xu)
    assert unknown.shape == (6, 4) and np.allclose(unknown.sum(axis=1), 1.0)
    # open_brier: the Brier sum of the enrolled rows (out of fold) plus the unknown rows, whose
    # ideal output is all zeros, over all rows -- from sklearn's multi-class Brier score.
    losses = open_choice.losses[open_choice.method]
    n_k = len(yv)
    brier_known = brier_score_loss(yv, open_choice.oof_proba, labels=model.classes_, scale_by_half=False)
    assert losses["brier"] == pytest.approx(brier_known)
    assert losses["open_brier"] == pytest.approx((brier_known * n_k + np.sum(unknown**2)) / (n_k + 6))
    # The metric decides: on the staircase link brier picks isotonic (see above), and
    # open_brier on these rows differs from brier.
    assert open_choice.losses["isotonic"]["open_brier"] != pytest.approx(open_choice.losses["isotonic"]["brier"])
    single, Xs, ys = _classifier_data(per_class_val=1)
    one = calibrate_classifier(single, Xs, ys, ("sigmoid", "isotonic"))
    assert one.method == "sigmoid" and one.n_folds == 0 and one.losses == {}
    with pytest.raises(ValueError, match="missing"):
        calibrate_classifier(model, Xv[yv != "d"], yv[yv != "d"])
