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


def _overlapping_probes(n_k: int = 80, n_u: int = 40, seed: int = 1) -> Probes:
    rng = np.random.default_rng(seed)
    return Probes(
        np.r_[rng.choice(list("abc"), n_k), ["u"] * n_u],
        np.r_[rng.choice(list("abc"), n_k), ["a"] * n_u],
        np.r_[rng.normal(1, 1, n_k), rng.normal(0, 1, n_u)],
        np.r_[np.ones(n_k, bool), np.zeros(n_u, bool)],
    )


def _at_half(q: Probes) -> dict[str, float]:
    return openset.report(q, 0.5)


def test_bootstrap_intervals_bracket_the_point_and_are_the_replicates_percentiles() -> None:
    p = _overlapping_probes()
    calls: list[tuple[int, int, set[str], float]] = []

    def recording(q: Probes) -> dict[str, float]:
        out = _at_half(q)
        calls.append((int(q.known.sum()), int((~q.known).sum()), set(q.true[~q.known]), out["eer"]))
        return out

    ci = openset.bootstrap(p, recording, n=200, seed=3)
    # The point value is the metric of the full probe set, and every interval contains it.
    assert {k: d["value"] for k, d in ci.items()} == pytest.approx(_at_half(p))
    for k, d in ci.items():
        assert d["lo"] <= d["value"] <= d["hi"], k
    assert ci["eer"]["lo"] < ci["eer"]["value"] < ci["eer"]["hi"] and ci["far"]["lo"] < ci["far"]["hi"]
    # Known and unknown probes are resampled separately: every replicate keeps both counts.
    assert len(calls) == 201
    assert {(k, u) for k, u, _, _ in calls} == {(80, 40)}
    assert all(names == {"u"} for _, _, names, _ in calls)  # unknowns are drawn from the unknowns only
    # The interval is the central 95 % of the replicates' values (the point call comes first).
    replicates = [v for *_, v in calls[1:]]
    assert len(set(replicates)) > 20  # real resamples, not 200 copies of the data
    assert ci["eer"]["lo"] == pytest.approx(np.percentile(replicates, 2.5))
    assert ci["eer"]["hi"] == pytest.approx(np.percentile(replicates, 97.5))
    narrow = openset.bootstrap(p, _at_half, n=200, seed=3, level=0.5)
    assert ci["eer"]["lo"] < narrow["eer"]["lo"] <= narrow["eer"]["hi"] < ci["eer"]["hi"]


def test_bootstrap_is_seeded() -> None:
    p = _overlapping_probes()

    def draws(seed: int) -> tuple[dict, list[tuple[float, ...]]]:
        seen: list[tuple[float, ...]] = []

        def recording(q: Probes) -> dict[str, float]:
            seen.append(tuple(np.sort(q.score)))  # the multiset of probes this replicate drew
            return _at_half(q)

        return openset.bootstrap(p, recording, n=100, seed=seed), seen

    (a, seen_a), (b, seen_b), (other, seen_other) = draws(3), draws(3), draws(4)
    assert a == b and seen_a == seen_b  # a fixed seed gives identical resamples and intervals
    assert {k: d["value"] for k, d in other.items()} == {k: d["value"] for k, d in a.items()}
    assert seen_other[0] == seen_a[0]  # the point: the full probe set
    assert all(x != y for x, y in zip(seen_other[1:], seen_a[1:]))  # another seed, other resamples
    assert other != a
    flat = openset.bootstrap(p, _at_half, n=0)
    assert all(d["lo"] == d["value"] == d["hi"] for d in flat.values())


def test_bootstrap_interval_shrinks_with_more_probes() -> None:
    """Four copies of every probe: same point values, intervals about half as wide (1/sqrt(4))."""
    p = _overlapping_probes()
    four = p.take(np.tile(np.arange(len(p)), 4))
    small, big = openset.bootstrap(p, _at_half, n=300, seed=5), openset.bootstrap(four, _at_half, n=300, seed=5)
    for k in ("eer", "far", "frr", "accuracy", "open_set_accuracy"):
        assert big[k]["value"] == pytest.approx(small[k]["value"]), k
        width, width4 = small[k]["hi"] - small[k]["lo"], big[k]["hi"] - big[k]["lo"]
        assert 0.3 * width < width4 < 0.75 * width, (k, width, width4)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="enrolled and unknown"):
        openset.far_frr(Probes(["a"], ["a"], [1.0], [True]), 0.5)
    with pytest.raises(ValueError, match="one length"):
        Probes(["a", "b"], ["a"], [1.0], [True])
    with pytest.raises(ValueError, match="NaN"):
        Probes(["a"], ["a"], [np.nan], [True])
