"""Verification scoring against hand-computed cases (see the comments for each derivation)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from voiceid.scoring.cosine import cosine_matrix, cosine_pairs, l2_normalize, s_norm
from voiceid.scoring.verification import det_curve, eer, min_dcf, roc

# Targets 0.9, 0.5; non-targets 0.7, 0.3, 0.1, 0.0.  Accept score >= t:
#   t:      0.0   0.1   0.3   0.5   0.7   0.9   inf
#   P_fa:   1     .75   .5    .25   .25   0     0
#   P_miss: 0     0     0     0     .5    .5    1
UNEVEN_SCORES = [0.9, 0.5, 0.7, 0.3, 0.1, 0.0]
UNEVEN_LABELS = [1, 1, 0, 0, 0, 0]


def test_det_curve_hand_computed() -> None:
    p_fa, p_miss, thr = det_curve(UNEVEN_SCORES, UNEVEN_LABELS)
    np.testing.assert_allclose(thr, [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, np.inf])
    np.testing.assert_allclose(p_fa, [1, 0.75, 0.5, 0.25, 0.25, 0, 0])
    np.testing.assert_allclose(p_miss, [0, 0, 0, 0, 0.5, 0.5, 1])


def test_det_curve_matches_sklearn_roc_on_random_scores() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.normal(labels, 1.0), 1)  # rounding makes ties
    fpr, tpr, _ = roc(scores, labels)
    sk_fpr, sk_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    ours = set(zip(np.round(fpr, 12), np.round(tpr, 12)))
    theirs = set(zip(np.round(sk_fpr, 12), np.round(sk_tpr, 12)))
    assert ours == theirs


def test_eer_interpolates_between_det_points() -> None:
    # P_fa - P_miss goes +.25 (t=0.5) -> -.25 (t=0.7): halfway, P_miss = P_fa = 0.25.
    assert eer(UNEVEN_SCORES, UNEVEN_LABELS) == pytest.approx((0.25, 0.7))


def test_eer_exact_crossing() -> None:
    # Targets .9 .4, non-targets .6 .1: at t=.6 one of each side is wrong (P_miss = P_fa = .5).
    assert eer([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]) == pytest.approx((0.5, 0.6))
    # Targets .8 .6 .2, non-targets .7 .3 .1: at t=.6, one of three wrong on each side.
    assert eer([0.8, 0.6, 0.2, 0.7, 0.3, 0.1], [1, 1, 1, 0, 0, 0]) == pytest.approx((1 / 3, 0.6))


def test_eer_extremes_and_ties() -> None:
    assert eer([3, 2, 1, 0], [1, 1, 0, 0]) == (0.0, 2.0)  # separable: threshold between the classes
    assert eer([0, 1, 2, 3], [1, 1, 0, 0])[0] == pytest.approx(1.0)  # every target below every non-target
    # All scores tied: the only choices are accept-all or reject-all, midway is 0.5.
    assert eer([1, 1, 1, 1], [1, 0, 1, 0]) == pytest.approx((0.5, np.inf))


def test_eer_invariant_to_monotone_transform() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(labels * 1.5, 1.0)
    assert eer(scores, labels)[0] == pytest.approx(eer(np.exp(scores), labels)[0])


def test_min_dcf_hand_computed() -> None:
    # p_target=.01: DCF/0.01 = P_miss + 99 P_fa -> best is t=.9 (P_miss .5, P_fa 0).
    assert min_dcf(UNEVEN_SCORES, UNEVEN_LABELS, p_target=0.01) == pytest.approx((0.5, 0.9))
    # p_target=.5: DCF/0.5 = P_miss + P_fa -> best is t=.5 (0 + .25).
    assert min_dcf(UNEVEN_SCORES, UNEVEN_LABELS, p_target=0.5) == pytest.approx((0.25, 0.5))


def test_min_dcf_costs_move_the_threshold() -> None:
    scores, labels = [0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]
    # c_miss=2, p=.5: (P_miss + .5 P_fa)/.5 = 2 P_miss + P_fa: t=.4 -> 0 + .5.
    assert min_dcf(scores, labels, p_target=0.5, c_miss=2.0) == pytest.approx((0.5, 0.4))
    # c_fa=2, p=.5: (.5 P_miss + P_fa)/.5 = P_miss + 2 P_fa: t=.9 -> .5 + 0.
    assert min_dcf(scores, labels, p_target=0.5, c_fa=2.0) == pytest.approx((0.5, 0.9))


def test_min_dcf_bounded_by_trivial_system() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 200)
    value, _ = min_dcf(rng.normal(size=200), labels)
    assert 0.0 < value <= 1.0
    assert min_dcf([2, 3, 0, 1], [1, 1, 0, 0]) == (0.0, 2.0)


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([1, 2], [1, 1], "both target and non-target"),
        ([1, 2, 3], [1, 0], "differ in length"),
        ([1, np.nan], [1, 0], "NaN"),
        ([1, 2], [1, 2], "labels must be 0"),
    ],
)
def test_bad_input_is_named(scores: list[float], labels: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        eer(scores, labels)


def test_min_dcf_rejects_bad_prior() -> None:
    with pytest.raises(ValueError, match="p_target"):
        min_dcf([1, 0], [1, 0], p_target=1.0)


def test_cosine_helpers() -> None:
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[0.0, 2.0], [-5.0, 0.0]])
    np.testing.assert_allclose(l2_normalize(a), [[0.6, 0.8], [1.0, 0.0]])
    np.testing.assert_allclose(cosine_matrix(a, b), [[0.8, -0.6], [0.0, -1.0]])
    np.testing.assert_allclose(cosine_pairs(a, b), [0.8, -1.0])
    with pytest.raises(ValueError, match="differ in shape"):
        cosine_pairs(a, b[:1])


def test_s_norm_hand_computed() -> None:
    # Side 1 cohort [0, 2, 1]: mean 1, std sqrt(2/3) -> z = 2 / sqrt(2/3); side 2 cohort [1, 1, 4]:
    # mean 2, std sqrt(2) -> z = 1/sqrt(2).  s-norm averages them.
    out = s_norm([3.0], [[0.0, 2.0, 1.0]], [[1.0, 1.0, 4.0]])
    np.testing.assert_allclose(out, [0.5 * (2 / np.sqrt(2 / 3)) + 0.5 * (1 / np.sqrt(2))])
    # Adaptive: keep the top 2 of each cohort -> side 1 [2, 1]: mean 1.5, std .5 -> 3;
    # side 2 [4, 1]: mean 2.5, std 1.5 -> 1/3.
    np.testing.assert_allclose(s_norm([3.0], [[0.0, 2.0, 1.0]], [[1.0, 1.0, 4.0]], top_k=2), [0.5 * 3 + 0.5 / 3])


def test_s_norm_removes_speaker_offsets() -> None:
    # Two enrolled speakers whose scores are all shifted by a constant: after s-norm the same
    # threshold separates targets from impostors for both.
    rng = np.random.default_rng(3)
    cohort = rng.normal(0, 0.1, (4, 50))
    offsets = np.array([0.0, 0.0, 0.5, 0.5])
    raw = np.array([0.3, -0.05, 0.8, 0.45])  # target, impostor for each speaker
    labels = np.array([1, 0, 1, 0])
    assert eer(raw, labels)[0] > 0
    normed = s_norm(raw, cohort + offsets[:, None], cohort + offsets[:, None])
    assert eer(normed, labels)[0] == 0.0
    with pytest.raises(ValueError, match="cohort scores must have shape"):
        s_norm(raw, cohort[:2], cohort)
