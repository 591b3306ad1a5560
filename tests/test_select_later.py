"""Speakers enrolled later: the val protocol (voiceid.select.later) and the store's embedding model it chooses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from voiceid.features.params import FeatureParams
from voiceid.scoring import openset
from voiceid.scoring.calibration import ScoreCalibrator
from voiceid.scoring.centroids import Centroids
from voiceid.select.candidates import FeatureBank, Source
from voiceid.select.later import later_trials
from voiceid.select.params import SelectParams
from voiceid.select.protocol import make_champion, select
from voiceid.serve.champion import EmbeddingScorer
from voiceid.serve.frontend import FrontEnd

FEATURES = FeatureParams(sets=("mfcc60",))


def narrow_bank(
    seed: int = 2, n_enrolled: int = 8, n_unknown: int = 12, dim: int = 32, k: int = 3, unknown_utts: int = 8
) -> FeatureBank:
    """Enrolled voices differ along ``k`` directions only, every other voice along all of them.

    LDA fitted on the enrolled speakers keeps those few directions: it separates the enrolled
    speakers best and everyone else worst -- the trap of a back-end fitted on the very speakers
    it will score.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_enrolled):
        rows += [(f"e{s}", "enrolled", split) for split, n in (("train", 5), ("val", 3), ("test", 3)) for _ in range(n)]
    rows += [(f"u{u:02d}", "unknown", "val" if u < n_unknown else "test") for u in range(2 * n_unknown) for _ in range(unknown_utts)]
    meta = pd.DataFrame(rows, columns=["speaker", "role", "split"])
    meta["utt_id"] = [f"{s}-{i}" for i, s in enumerate(meta["speaker"])]
    meta["content_hash"] = meta["utt_id"]
    means = {}
    for s in meta["speaker"].unique():
        means[s] = np.r_[rng.normal(0, 2, k), np.zeros(dim - k)] if s.startswith("e") else rng.normal(0, 1, dim)
    noise = np.r_[np.full(k, 0.3), np.full(dim - k, 1.0)]
    X = np.stack([means[s] + noise * rng.normal(0, 1, dim) for s in meta["speaker"]])
    return FeatureBank({"mfcc60": (meta, X.astype(np.float32))})


def _scorer(own: np.ndarray) -> EmbeddingScorer:
    names = [f"own{i}" for i in range(len(own))]
    return EmbeddingScorer(FrontEnd("mfcc60", FEATURES), None, Centroids(names, own), ScoreCalibrator(), "test")  # type: ignore[arg-type]


def test_later_trials_enroll_val_unknown_speakers_and_never_probe_an_enrollment_clip() -> None:
    rng = np.random.default_rng(0)
    speakers = np.repeat([f"u{i}" for i in range(6)], 4)  # 6 speakers x 4 clips
    emb = rng.normal(size=(len(speakers), 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    seen: list[tuple[np.ndarray, Centroids]] = []
    scorer = _scorer(rng.normal(size=(3, 16)) / 4.0)
    real = scorer.cosines
    scorer.cosines = lambda e, gallery=None: (seen.append((e, gallery)), real(e, gallery))[1]  # type: ignore[method-assign,func-returns-value]

    trials = later_trials(scorer, emb, speakers, enroll_files=1, seed=3)

    assert trials is not None and len(seen) == 2  # two folds
    # every val-unknown speaker is enrolled in one fold (3 of 4 clips probed) and a stranger in the other (4)
    for s in np.unique(speakers):
        assert int((trials.known & (trials.true == s)).sum()) == 3
        assert int((~trials.known & (trials.true == s)).sum()) == 4
    for probed, gallery in seen:
        assert sorted(gallery.speakers) == sorted(set(gallery.speakers) & set(speakers))  # only val-unknown voices enrolled
        # enroll_files=1: each enrolled centroid *is* its one enrollment clip, and no probe is that clip
        assert np.max(probed @ gallery.vectors.T) < 1 - 1e-9
    assert set(trials.pred) <= set(speakers) | {"own0", "own1", "own2"}


def test_later_trials_need_two_enrollable_speakers_per_fold() -> None:
    rng = np.random.default_rng(1)
    scorer = _scorer(rng.normal(size=(3, 8)))
    singles = np.array([f"u{i}" for i in range(10)])  # one clip each: nobody can be enrolled and probed
    assert later_trials(scorer, rng.normal(size=(10, 8)), singles, 5, 0) is None
    three = np.repeat(["a", "b", "c"], 3)  # 2 + 1 speakers in the folds: one fold has a single later speaker
    assert later_trials(scorer, rng.normal(size=(9, 8)), three, 2, 0) is None


def test_the_store_serves_later_speakers_through_the_back_end_that_generalises_to_new_voices() -> None:
    """LDA+WCCN wins on the enrolled speakers' val EER; the store gets the variant that serves unseen voices.

    Checked out of sample: the *test*-unknown speakers (never seen by selection) enrolled into
    the champion's store are identified better than through the primary's back-end.
    """
    bank = narrow_bank()
    params = SelectParams(families=("cosine",), n_bootstrap=0, backends=("plain", "wccn", "lda+wccn"), lda_dim=64)
    result = select([(Source("cosine", "embedding", "mfcc60"), None)], bank, params, FEATURES)
    cand = result.champion
    champion = make_champion(result, params, FEATURES)

    assert cand.calibration["backend"] == "lda+wccn"  # the enrolled speakers' val EER picks it
    later = cand.calibration["losses"]["later_eer"]
    store_backend = cand.for_enrolling.calibration["backend"]
    val_eer = cand.calibration["losses"]["val_eer"]
    assert store_backend != "lda+wccn" and later[store_backend] == min(later.values()) == cand.later_eer
    assert store_backend == min(later, key=lambda v: (later[v], val_eer[v]))  # ties: the lower val EER
    assert champion.primary is cand.scorer and champion.embedding is cand.for_enrolling.scorer
    assert champion.embedding_threshold == cand.for_enrolling.threshold(params.threshold_rule)
    assert champion.embedding.strangers is not None  # the gallery threshold still has its stranger model
    assert champion.embedding.stranger_emb is not None and champion.embedding.far_confidence == params.far_confidence

    meta, X = bank.tables["mfcc60"]
    test_unknown = ((meta["role"] == "unknown") & (meta["split"] == "test")).to_numpy()
    spk = meta["speaker"].to_numpy()[test_unknown]

    def on_new_voices(scorer: EmbeddingScorer) -> float:
        trials = later_trials(scorer, scorer.embedder.embed(list(X[test_unknown])), spk, params.enroll_files, 7)
        assert trials is not None
        return openset.identification_eer(trials)

    assert on_new_voices(champion.embedding) < on_new_voices(champion.primary) - 0.1  # type: ignore[arg-type]


def test_unmeasured_the_store_avoids_lda_which_keeps_only_the_enrolled_speakers_directions() -> None:
    """Single-clip val-unknown speakers cannot be enrolled as later speakers; LDA+WCCN still wins the val EER.

    The store then takes the best val EER among the variants without LDA, and says so. Red
    when the store falls back to the candidate's own (LDA) back-end.
    """
    from voiceid.select.report import summary

    bank = narrow_bank(seed=3, n_unknown=30, unknown_utts=1)
    params = SelectParams(families=("cosine",), n_bootstrap=0, backends=("plain", "wccn", "lda+wccn"), lda_dim=64)
    result = select([(Source("cosine", "embedding", "mfcc60"), None)], bank, params, FEATURES)
    cand = result.champion
    val_eer = cand.calibration["losses"]["val_eer"]
    assert cand.calibration["backend"] == "lda+wccn" and "later_eer" not in cand.calibration["losses"]
    assert cand.later_eer is None and cand.store is not None
    assert cand.store.calibration["backend"] == min(("plain", "wccn"), key=lambda v: val_eer[v])
    assert make_champion(result, params, FEATURES).embedding is cand.store.scorer
    store = summary(result, params, {})["embedding_model"]
    assert store["backend"] == cand.store.calibration["backend"] and store["chosen_by"].startswith("the best val EER without LDA")


def test_without_enrollable_val_unknown_speakers_the_store_is_the_candidate_itself() -> None:
    from synthetic_select import gaussian_bank

    bank = gaussian_bank(seed=4, unknown_utts=1)  # single-clip val-unknown speakers (the default LibriSpeech layout)
    params = SelectParams(families=("cosine",), n_bootstrap=0, backends=("plain", "wccn"))
    result = select([(Source("cosine", "embedding", "mfcc60"), None)], bank, params, FEATURES)
    assert result.champion.later_eer is None and result.champion.for_enrolling is result.champion
    assert make_champion(result, params, FEATURES).embedding is result.champion.scorer


def test_enroll_files_must_be_positive() -> None:
    with pytest.raises(ValueError, match="enroll_files"):
        SelectParams(enroll_files=0).check()

