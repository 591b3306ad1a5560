"""Open-set metrics against hand-worked examples and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from voiceid.scoring import openset
from voiceid.scoring.openset import Probes


def example() -> Probes:
    # known: a (right, 0.9), b (wrong: said a, 0.8), c (right, 0.4); unknown: 0.7, 0.3, 0.1
    return Probes(
        true=["a", "b", "c", "x", "y", "z"],
        pred=["a", "a", "c", "a", "b", "c"],
        score=[0.9, 0.8, 0.4, 0.7, 0.3, 0.1],
        known=[True, True, True, False, False, False],
    )


def test_far_frr_dir_at_a_threshold() -> None:
    p = example()
    assert openset.far_frr(p, 0.5) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert openset.dir_at_threshold(p, 0.5) == pytest.approx(1 / 3)  # only "a" is accepted and right
    assert openset.far_frr(p, 0.0) == (1.0, 0.0)
    assert openset.far_frr(p, np.inf) == (0.0, 1.0)


def test_dir_at_far_uses_the_lowest_threshold_meeting_the_far() -> None:
    p = example()
    assert openset.dir_at_far(p, 0.0) == (pytest.approx(1 / 3), 0.8)  # just above the best unknown (0.7)
    # one unknown of three may pass: threshold drops to 0.4 (next score above 0.3), "c" is now accepted
    assert openset.dir_at_far(p, 0.34) == (pytest.approx(2 / 3), 0.4)
    assert openset.threshold_at_far(p, 0.34) == 0.4


def test_threshold_at_far_with_ties() -> None:
    p = Probes(["a", "b", "x", "y"], ["a", "b", "a", "a"], [0.5, 0.5, 0.5, 0.2], [True, True, False, False])
    # accepting the tied 0.5 scores lets in half the unknowns; FAR 0 needs a threshold above them
    assert openset.threshold_at_far(p, 0.0) == np.inf
    assert openset.threshold_at_far(p, 0.5) == 0.5


def test_closed_set_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    true = rng.choice(list("abcde"), 50)
    pred = np.where(rng.uniform(size=50) < 0.7, true, rng.choice(list("abcdef"), 50))
    p = Probes(np.r_[true, ["u"] * 5], np.r_[pred, ["a"] * 5], np.ones(55), np.r_[np.ones(50, bool), np.zeros(5, bool)])
    cs = openset.closed_set(p)
    assert cs["accuracy"] == pytest.approx(accuracy_score(true, pred))
    assert cs["f1_weighted"] == pytest.approx(f1_score(true, pred, average="weighted", zero_division=0))
    assert cs["f1_macro"] == pytest.approx(f1_score(true, pred, average="macro", zero_division=0))


def test_report_keys_and_values() -> None:
    p = example()
    r = openset.report(p, 0.5)
    assert {"accuracy", "f1_weighted", "far", "frr", "dir", "open_set_accuracy", "dir_far_1", "dir_far_5", "eer", "min_dcf"} <= set(r)
    assert r["accuracy"] == pytest.approx(2 / 3)
    # right: a (accepted), unknowns 0.3 and 0.1 (rejected); wrong: b (misnamed), c (rejected), 0.7 (accepted)
    assert r["open_set_accuracy"] == pytest.approx((1 + 2) / 6)
    assert list(openset.decide(p, 0.5)) == ["a", "a", "unknown", "a", "unknown", "unknown"]


def test_bootstrap_is_seeded_and_brackets_the_point() -> None:
    rng = np.random.default_rng(1)
    n_k, n_u = 80, 40
    p = Probes(
        np.r_[rng.choice(list("abc"), n_k), ["u"] * n_u],
        np.r_[rng.choice(list("abc"), n_k), ["a"] * n_u],
        np.r_[rng.normal(1, 1, n_k), rng.normal(0, 1, n_u)],
        np.r_[np.ones(n_k, bool), np.zeros(n_u, bool)],
    )
    fn = lambda q: openset.report(q, 0.5)  # noqa: E731
    a, b = openset.bootstrap(p, fn, n=200, seed=3), openset.bootstrap(p, fn, n=200, seed=3)
    assert a == b
    for k, d in a.items():
        assert d["lo"] <= d["hi"], k
    assert a["eer"]["lo"] < a["eer"]["value"] < a["eer"]["hi"]
    assert openset.bootstrap(p, fn, n=200, seed=4) != a  # another seed, other resamples
    flat = openset.bootstrap(p, fn, n=0)
    assert flat["far"]["lo"] == flat["far"]["value"] == flat["far"]["hi"]


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="enrolled and unknown"):
        openset.far_frr(Probes(["a"], ["a"], [1.0], [True]), 0.5)
    with pytest.raises(ValueError, match="one length"):
        Probes(["a", "b"], ["a"], [1.0], [True])
    with pytest.raises(ValueError, match="NaN"):
        Probes(["a"], ["a"], [np.nan], [True])
