"""Scoring back-end (centring, LDA/WCCN, AS-norm), background speakers, gallery-size-aware thresholds."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from voiceid.features.params import FeatureParams
from voiceid.scoring.backend import AsNorm, EmbeddingBackend
from voiceid.scoring.cosine import cosine_matrix, l2_normalize
from voiceid.scoring.verification import (
    StrangerScores,
    eer,
    fisher_z,
    gallery_threshold,
    gallery_thresholds,
    later_speaker_levels,
)
from voiceid.select.candidates import FeatureBank, Source, build_candidate
from voiceid.select.params import SelectParams


def bank_with_background(seed: int = 0, n_background: int = 12, dim: int = 16) -> FeatureBank:
    """Enrolled / unknown speakers as the pipeline lays them out, plus background speakers (train only)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(6):
        rows += [(f"e{s}", "enrolled", split) for split, n in (("train", 5), ("val", 3), ("test", 3)) for _ in range(n)]
    rows += [(f"u{u}", "unknown", "val" if u < 5 else "test") for u in range(10) for _ in range(2)]
    rows += [(f"b{b}", "background", "train") for b in range(n_background) for _ in range(4)]
    meta = pd.DataFrame(rows, columns=["speaker", "role", "split"])
    meta["utt_id"] = [f"{s}-{i}" for i, s in enumerate(meta["speaker"])]
    meta["content_hash"] = meta["utt_id"]
    # a shared nuisance direction (channel) that LDA/WCCN should learn to discount
    means = {s: rng.normal(0, 1, dim) for s in meta["speaker"].unique()}
    channel = rng.normal(0, 1, dim)
    X = np.stack([means[s] + 0.5 * rng.normal(0, 1, dim) + rng.normal(0, 1.5) * channel for s in meta["speaker"]])
    return FeatureBank({"mfcc60": (meta, X.astype(np.float32))})


def test_backend_is_fitted_on_training_speakers_and_maps_to_unit_vectors() -> None:
    bank = bank_with_background()
    X, y = bank.rows("mfcc60", "background", "train")
    backend = EmbeddingBackend(lda_dim=5, wccn=True).fit(X, y)
    Z = backend.transform(X)
    assert Z.shape == (len(X), 5) and np.allclose(np.linalg.norm(Z, axis=1), 1.0)
    # within-speaker spread shrinks relative to between-speaker spread (what LDA + WCCN are for)
    def ratio(E: np.ndarray) -> float:
        within = np.mean([E[y == s].var(axis=0).sum() for s in np.unique(y)])
        return within / E.var(axis=0).sum()
    assert ratio(Z) < ratio(X / np.linalg.norm(X, axis=1, keepdims=True))
    with pytest.raises(ValueError, match="not fitted"):
        EmbeddingBackend().transform(X)


def test_lda_learns_from_one_clip_background_speakers_without_a_warning_per_speaker() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(8, 16))
    X = np.concatenate([np.repeat(centres, 5, axis=0) + 0.3 * rng.normal(size=(40, 16)), rng.normal(size=(30, 16))])
    y = np.concatenate([np.repeat(np.arange(8), 5), 100 + np.arange(30)]).astype(str)  # 30 one-clip speakers
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        backend = EmbeddingBackend(lda_dim=5).fit(X, y)
    # the one-clip speakers still count: the projection is not the one fitted without them
    alone = EmbeddingBackend(lda_dim=5).fit(X[:40], y[:40])
    assert not np.allclose(np.abs(backend.transform(X)), np.abs(alone.transform(X)), atol=1e-3)


def test_as_norm_evens_out_models_that_score_high_against_everyone() -> None:
    rng = np.random.default_rng(1)
    hub = rng.normal(size=8)
    cohort = rng.normal(size=(60, 8)) + hub
    strangers = rng.normal(size=(300, 8)) + hub
    models = rng.normal(size=(3, 8)) + np.array([0.0, 2.0, 4.0])[:, None] * hub  # ever more "hubby" models
    raw = cosine_matrix(strangers, models)
    normed = AsNorm(top_n=20).fit(cohort).normalize(raw, strangers, models)
    # one threshold fits every model only if their non-target scores sit alike: AS-norm brings them together
    spread = lambda m: np.ptp(m.mean(axis=0)) / m.std()  # noqa: E731
    assert spread(normed) < 0.7 * spread(raw)


def _cohort_candidate(bank: FeatureBank, backends: tuple[str, ...] = ("asnorm",)):
    params = SelectParams(families=("cosine",), n_bootstrap=0, backends=backends, as_norm_top_n=20)  # type: ignore[arg-type]
    return build_candidate(Source("cosine", "embedding", "mfcc60"), None, bank.without_test(), params, FeatureParams(sets=("mfcc60",)))


def test_the_as_norm_cohort_is_the_background_speakers_and_never_a_probe_speaker() -> None:
    bank = bank_with_background()
    cand = _cohort_candidate(bank)
    cohort = cand.scorer.asnorm.cohort_  # type: ignore[union-attr]
    Xb, _ = bank.rows("mfcc60", "background", "train")
    assert len(cohort) == len(Xb)
    meta, X = bank.tables["mfcc60"]
    probe_rows = meta["role"].isin(["enrolled", "unknown"]).to_numpy()
    probe_emb = cand.scorer.embedder.embed(list(X[probe_rows]))  # type: ignore[union-attr]
    assert cosine_matrix(probe_emb, cohort).max() < 1 - 1e-6  # no probe utterance is in the cohort
    assert cand.calibration["backend"] == "asnorm"


def test_no_background_speakers_means_no_as_norm_variant() -> None:
    cand = _cohort_candidate(bank_with_background(n_background=0), backends=("plain", "asnorm"))
    assert cand.calibration["backend"] == "plain" and set(cand.calibration["losses"]["val_eer"]) == {"plain"}


def test_backend_choice_and_calibration_ignore_test_rows() -> None:
    bank = bank_with_background(seed=2)
    meta, X = bank.tables["mfcc60"]
    poisoned = X.copy()
    rng = np.random.default_rng(9)
    poisoned[(meta["split"] == "test").to_numpy()] = rng.normal(0, 50, poisoned[(meta["split"] == "test").to_numpy()].shape)
    a = _cohort_candidate(bank, ("plain", "norm", "lda+wccn", "asnorm"))
    b = _cohort_candidate(FeatureBank({"mfcc60": (meta, poisoned)}), ("plain", "norm", "lda+wccn", "asnorm"))
    assert a.calibration == b.calibration
    assert np.array_equal(a.val.score, b.val.score)


def test_gallery_threshold_keeps_stranger_acceptance_near_the_target_as_the_gallery_grows() -> None:
    """Fitted at 5 speakers on val strangers; test strangers against 20 / 80 speakers stay near the same 5%.

    256-d like a d-vector (cosines of random 32-d vectors have lighter than normal tails, where
    the rule errs on the safe side: fewer strangers accepted than held).
    """
    rng = np.random.default_rng(0)
    dim = 256
    val_strangers, test_strangers = rng.normal(size=(400, dim)), rng.normal(size=(2000, dim))
    own = rng.normal(size=(5, dim))  # the model's enrolled speakers
    val = cosine_matrix(val_strangers, own)  # (400, 5)
    base = float(np.quantile(val.max(axis=1), 0.95))  # the val rule: 5% of val strangers accepted
    strangers = StrangerScores.fit(val)
    for n in (20, 80):
        gallery = np.concatenate([own, rng.normal(size=(n - 5, dim))])  # speakers enrolled later
        top = cosine_matrix(test_strangers, gallery).max(axis=1)
        t = gallery_threshold(base, strangers, 5, n)
        assert t > base
        assert (top >= t).mean() == pytest.approx(0.05, abs=0.02)
        assert (top >= base).mean() > 0.15  # the threshold fixed at 5 speakers lets more and more strangers in
    assert gallery_threshold(base, strangers, 5, 5) == base == gallery_threshold(base, strangers, 5, 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_gallery_threshold_of_cosines_in_a_few_dimensions_stays_below_one_and_holds_the_target(seed: int) -> None:
    """An LDA space of 7 dimensions (8 training speakers): cosines spread over [-1, 1], far from normal.

    A normal fitted to the raw cosines puts its tail above 1: at 40 speakers its threshold passed
    1.0 and accepted no one (a LibriSpeech enroll draw: new speakers 0/29 identified). Fitted on
    Fisher's z scale the test strangers' acceptance stays near the 5% held at 8 speakers.
    """
    rng = np.random.default_rng(seed)
    dim = 7
    val, test, own = rng.normal(size=(300, dim)), rng.normal(size=(3000, dim)), rng.normal(size=(8, dim))
    scores = cosine_matrix(val, own)
    base = float(np.quantile(scores.max(axis=1), 0.95))
    for fisher, n, tolerance in ((True, 13, 0.02), (True, 40, 0.025)):
        gallery = np.concatenate([own, rng.normal(size=(n - 8, dim))])
        t = gallery_threshold(base, StrangerScores.fit(scores, fisher=fisher), 8, n)
        assert base < t < 1.0
        assert (cosine_matrix(test, gallery).max(axis=1) >= t).mean() == pytest.approx(0.05, abs=tolerance)
    assert gallery_threshold(base, StrangerScores.fit(scores), 8, 40) > 1.0  # the raw-scale model: no one accepted


def test_measured_levels_keep_stranger_acceptance_nearer_the_val_rule_where_a_centring_mean_from_few_speakers_errs() -> None:
    """8 own speakers set the centring mean, so its error is shared by every other voice.

    Strangers and speakers enrolled later then score higher against each other than against the
    own speakers (a LibriSpeech enroll draw: 0.11 vs 0.00 mean cosine; 14-23% of strangers accepted
    at 5 new speakers). Treating the new speakers like the own ones doubles the strangers accepted;
    their level and spread measured on the val strangers (what ``EmbeddingScorer.threshold_for``
    does) keeps it nearer the val rule's. Mean over 20 seeded worlds.
    """
    far = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        dim, n_own, n_new = 32, 8, 5
        centre = 3.0 * rng.normal(size=dim)

        def voices(n: int) -> np.ndarray:
            return centre + rng.normal(size=(n, dim))  # noqa: B023 - this world's centre and rng

        def clips(means: np.ndarray, k: int) -> np.ndarray:
            return (means[:, None, :] + 0.5 * rng.normal(size=(len(means), k, dim))).reshape(-1, dim)  # noqa: B023

        X, y = clips(voices(n_own), 5), np.repeat(np.arange(n_own), 5)
        backend = EmbeddingBackend().fit(X, y)
        own = l2_normalize(np.stack([backend.transform(X)[y == i].mean(axis=0) for i in range(n_own)]))
        new = l2_normalize(backend.transform(clips(voices(n_new), 5)).reshape(n_new, 5, dim).mean(axis=1))
        val, test = backend.transform(clips(voices(40), 2)), backend.transform(clips(voices(400), 2))
        scores = cosine_matrix(val, own)
        base = float(np.quantile(scores.max(axis=1), 0.95))
        strangers = StrangerScores.fit(scores, fisher=True)
        z = fisher_z(cosine_matrix(val, new))  # the val strangers against each new speaker
        like_own = gallery_threshold(base, strangers, n_own, n_own + n_new)
        offsets, spreads = z.mean(axis=0) - fisher_z(scores).mean(), z.std(axis=0, ddof=1)
        t_own, t_new = gallery_thresholds(base, strangers, n_own, n_own, offsets, spreads)
        measured = np.r_[np.full(n_own, t_own), t_new]  # per speaker
        S = cosine_matrix(test, np.vstack([own, new]))
        top = S.max(axis=1)
        far.append(
            (
                (cosine_matrix(test, own).max(axis=1) >= base).mean(),
                (top >= like_own).mean(),
                (top >= measured[S.argmax(axis=1)]).mean(),
            )
        )
    at_val, like, held = np.mean(far, axis=0)
    assert like > at_val + 0.03, (at_val, like, held)
    assert abs(held - at_val) < 0.5 * (like - at_val), (at_val, like, held)


def test_a_gallery_speaker_strangers_score_wider_against_gets_a_higher_threshold_of_its_own() -> None:
    """Same level, twice the spread: that speaker's tail lets more strangers in, so its threshold rises (equal tails)."""
    strangers = StrangerScores(np.zeros(100), np.ones(100))
    own, (narrow,) = gallery_thresholds(1.645, strangers, 1, 1, offsets=[0.0], spreads=[1.0])
    assert own == pytest.approx(narrow) == pytest.approx(gallery_threshold(1.645, strangers, 1, 2), abs=1e-9)  # like the fitted
    own_w, (wide,) = gallery_thresholds(1.645, strangers, 1, 1, offsets=[0.0], spreads=[2.0])
    # equal tails: the wide speaker's threshold sits as many of its sds out as the own one does of theirs
    assert wide > narrow + 1.0 and own_w == pytest.approx(own, abs=1e-6) and wide / 2.0 == pytest.approx(own_w, abs=1e-6)
    held = 1 - norm.cdf(own_w) * norm.cdf(wide / 2.0)  # the acceptance the base threshold had against 1 speaker
    assert held == pytest.approx(1 - norm.cdf(1.645), abs=1e-6)
    with pytest.raises(ValueError, match="one positive spread per offset"):
        gallery_thresholds(1.645, strangers, 1, 1, offsets=[0.0, 1.0], spreads=[1.0])


def test_with_few_strangers_the_later_speakers_levels_are_pulled_together_with_many_each_keeps_its_own() -> None:
    """5 val strangers (10 clips each) against 20 later speakers that are alike: what differs is one stranger's
    affinity to one speaker, noise that per-speaker thresholds would chase. 400 single-clip strangers against
    speakers that truly differ: kept apart. Red when the levels are not shrunk (or shrunk regardless).
    """
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(5), 10)
    affinity = rng.normal(0, 0.3, size=(5, 20))[groups]  # (50, 20): stranger x speaker, shared by a stranger's clips
    own, later = rng.normal(size=(50, 8)), rng.normal(size=(50, 20)) + 0.2 + affinity
    raw = (later - own.mean(axis=1, keepdims=True)).mean(axis=0)
    off, sd = later_speaker_levels(own, later, groups)
    assert off.std() < 0.5 * raw.std() and off.mean() == pytest.approx(raw.mean(), abs=0.03)
    assert sd.std() < 0.5 * later.std(axis=0, ddof=1).std()
    truly = np.linspace(0.0, 1.0, 20)
    many = rng.normal(size=(400, 20)) + truly
    off_many, _ = later_speaker_levels(rng.normal(size=(400, 8)), many, np.arange(400))
    assert np.corrcoef(off_many, truly)[0, 1] > 0.95 and off_many.std() > 0.8 * truly.std()


def test_at_far_confidence_a_level_measured_on_few_strangers_is_raised_more_than_one_measured_on_many() -> None:
    """select.far_confidence applies to the later speakers' levels too: the bound moves with 1/sqrt(strangers)."""
    rng = np.random.default_rng(1)

    def margin(n_strangers: int) -> float:
        groups = np.repeat(np.arange(n_strangers), 10)
        stranger = rng.normal(0, 0.3, size=(n_strangers, 1))[groups]  # a stranger's clips share its level
        own, later = rng.normal(size=(len(groups), 8)), rng.normal(size=(len(groups), 4)) + stranger
        plain, _ = later_speaker_levels(own, later, groups)
        bound, spread = later_speaker_levels(own, later, groups, 1.0, confidence=0.8)
        assert np.array_equal(spread, later_speaker_levels(own, later, groups)[1])  # only the levels move
        return float((bound - plain).mean())

    few, many = margin(5), margin(80)
    assert few > 0.05 and 0 < many < 0.5 * few
    with pytest.raises(ValueError, match="confidence"):
        later_speaker_levels(np.zeros((3, 2)), np.zeros((3, 1)), np.arange(3), confidence=1.0)


def test_stranger_scores_are_modelled_per_stranger_not_pooled() -> None:
    """A "wolf" stranger who scores high against everyone is accepted by any large gallery; pooling would hide it."""
    mean, sd = np.array([0.0, 0.0, 0.0, 0.5]), np.full(4, 0.05)
    strangers = StrangerScores(mean, sd)
    assert strangers.accepted(0.4, 1000) == pytest.approx(0.25, abs=1e-6)  # only the wolf, and surely
    assert StrangerScores.fit(np.array([[0.1, 0.3], [0.2, 0.2]])).mean.tolist() == pytest.approx([0.2, 0.2])


def test_eer_of_a_backend_candidate_is_reported_per_variant() -> None:
    cand = _cohort_candidate(bank_with_background(seed=3), ("plain", "norm", "lda+wccn", "asnorm", "lda+wccn+asnorm"))
    tried = cand.calibration["losses"]["val_eer"]
    assert set(tried) == {"plain", "norm", "lda+wccn", "asnorm", "lda+wccn+asnorm"}
    assert tried[cand.calibration["backend"]] == min(tried.values())
    assert eer(cand.val.score, cand.val.known.astype(int))[0] == pytest.approx(min(tried.values()))
