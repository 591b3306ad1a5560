"""Scoring back-end (centring, LDA/WCCN, AS-norm), background speakers, gallery-size-aware thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from voiceid.features.params import FeatureParams
from voiceid.scoring.backend import AsNorm, EmbeddingBackend
from voiceid.scoring.cosine import cosine_matrix
from voiceid.scoring.verification import StrangerScores, eer, gallery_threshold
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
