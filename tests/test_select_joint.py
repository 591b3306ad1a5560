"""The ``joint`` embedding candidate: several clip-level sets (e.g. d-vector + MFCC stats) as one embedding."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler
from synthetic_select import audio_corpus, layout

from voiceid.features.params import FeatureParams
from voiceid.features.signal import feature_vector
from voiceid.scoring.cosine import cosine_matrix
from voiceid.select.candidates import FeatureBank, Source, build_candidate, score_split
from voiceid.select.params import SelectParams
from voiceid.serve.frontend import FrontEnd, JointEmbedder

PARAMS = SelectParams(families=("cosine", "dvector", "joint"), n_bootstrap=0, backends=("plain",))
FEATURES = FeatureParams(sets=("mfcc60", "dvector"))


def split_evidence_bank(seed: int = 0, dim: int = 10) -> FeatureBank:
    """Each set carries its own half of each voice, drowned in its own noise: neither set alone is enough."""
    meta = layout(n_enrolled=12, n_unknown_val=10, n_unknown_test=10, unknown_utts=3)
    rng = np.random.default_rng(seed)
    tables = {}
    for fs in ("mfcc60", "dvector"):
        means = {s: rng.normal(0, 1, dim) for s in meta["speaker"].unique()}
        X = np.stack([means[s] + 1.3 * rng.normal(0, 1, dim) for s in meta["speaker"]]).astype(np.float32)
        tables[fs] = (meta, X)
    return FeatureBank(tables)


def _val_eer(bank: FeatureBank, family: str, feature_set: str) -> float:
    cand = build_candidate(Source(family, "embedding", feature_set), None, bank.without_test(), PARAMS, FEATURES)
    return cand.calibration["losses"]["val_eer"]["plain"]


def test_joint_embedding_beats_each_of_its_sets_when_they_carry_different_evidence() -> None:
    bank = split_evidence_bank()
    joint = _val_eer(bank, "joint", "dvector+mfcc60")
    singles = {fs: _val_eer(bank, "cosine" if fs == "mfcc60" else "dvector", fs) for fs in ("mfcc60", "dvector")}
    assert joint < 0.8 * min(singles.values()), (joint, singles)


def test_joint_cosine_is_the_mean_of_the_blocks_cosines_whatever_their_widths() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 256)) * 5, rng.normal(size=(8, 4))
    sa, sb = StandardScaler().fit(a), StandardScaler().fit(b)
    e = JointEmbedder([sa, sb]).embed(list(zip(a, b)))
    expected = (cosine_matrix(sa.transform(a), sa.transform(a)) + cosine_matrix(sb.transform(b), sb.transform(b))) / 2
    assert np.allclose(e @ e.T, expected)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0)


def test_joint_rows_pair_the_same_utterance_and_skip_one_a_set_rejected() -> None:
    meta = layout(n_enrolled=3)
    X = np.arange(len(meta), dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    dropped = meta.index[(meta["split"] == "train")][1]
    bank = FeatureBank({"mfcc60": (meta, X), "dvector": (meta.drop(index=dropped), np.delete(X, dropped, axis=0) + 0.5)})
    inputs, speakers, ids = bank.rows_with_ids("dvector+mfcc60", "enrolled", "train")
    assert meta.loc[dropped, "utt_id"] not in set(ids)
    assert len(inputs) == int(((meta["role"] == "enrolled") & (meta["split"] == "train")).sum()) - 1
    for (dv, mf), utt, spk in zip(inputs, ids, speakers, strict=True):
        row = meta.index[meta["utt_id"] == utt][0]
        assert mf[0] == row and dv[0] == row + 0.5 and meta.loc[row, "speaker"] == spk


def test_a_waveform_is_scored_as_its_bank_rows_are_scored() -> None:
    """The serving front end builds the same joint input the selection scored from the tables."""
    corpus = audio_corpus(n_enrolled=4, n_unknown_val=3, n_unknown_test=2)
    params = FeatureParams(sets=("mfcc60", "seed498"))
    seed = np.stack([feature_vector("seed498", w, 16000, params) for w in corpus.waves])
    bank = FeatureBank({"mfcc60": corpus.bank.tables["mfcc60"], "seed498": (corpus.meta, seed)})
    select_params = SelectParams(families=("joint",), joint_feature_sets=("mfcc60", "seed498"), n_bootstrap=0)
    cand = build_candidate(Source("joint", "embedding", "mfcc60+seed498"), None, bank.without_test(), select_params, params)
    test = score_split(cand, bank, "test")
    front = FrontEnd("mfcc60+seed498", params)
    by_id = dict(zip(corpus.meta["utt_id"], corpus.waves, strict=True))
    for utt, pred, score in zip(test.ids, test.pred, test.score, strict=True):
        out = cand.scorer.score_inputs([front(by_id[utt], 16000)])
        assert out.pred[0] == pred and out.score[0] == pytest.approx(score, abs=1e-6)


def test_joint_needs_two_different_sets() -> None:
    with pytest.raises(ValueError, match="joint_feature_sets"):
        SelectParams(joint_feature_sets=("dvector",)).check()  # type: ignore[arg-type]


@pytest.mark.parametrize(("family", "feature_set"), [("dvector", "dvector"), ("joint", "dvector+mfcc60")])
def test_an_encoder_block_is_scaled_as_a_whole_so_its_quiet_units_stay_quiet(family: str, feature_set: str) -> None:
    # dims 0-15 carry the voice; 16-31 are ReLU units all but silent for the training speakers. A
    # new speaker and a stranger both active on those units must not look alike (each scaled to
    # unit sd, the units' ~1e-3 spread made them 300x louder than the voice: cosine ~1)
    meta = layout(n_enrolled=8, n_unknown_val=10, n_unknown_test=10, unknown_utts=3)
    rng = np.random.default_rng(3)
    voice = {s: rng.normal(0, 1, 16) for s in meta["speaker"].unique()}

    def rows(v: np.ndarray, n: int, quiet: float) -> np.ndarray:
        return np.hstack([v + 0.4 * rng.normal(0, 1, (n, 16)), quiet + 1e-3 * np.abs(rng.normal(0, 1, (n, 16)))])

    X = np.vstack([rows(voice[s], 1, 0.0) for s in meta["speaker"]]).astype(np.float32)
    stats = rng.normal(0, 1, (len(meta), 6)).astype(np.float32)  # the joint's other block: noise
    bank = FeatureBank({"dvector": (meta, X), "mfcc60": (meta, stats)})
    cand = build_candidate(Source(family, "embedding", feature_set), None, bank.without_test(), PARAMS, FEATURES)

    def embed(x: np.ndarray) -> np.ndarray:
        inputs = list(x) if family == "dvector" else [(r, np.zeros(6)) for r in x]
        return cand.scorer.embedder.embed(inputs)

    new_voice, stranger_voice = rng.normal(0, 1, 16), rng.normal(0, 1, 16)
    centroid = embed(rows(new_voice, 5, 0.3)).mean(axis=0)
    own_probe, stranger = embed(rows(new_voice, 1, 0.3)), embed(rows(stranger_voice, 20, 0.3))
    cos_own, cos_stranger = cosine_matrix(own_probe, centroid[None])[0, 0], cosine_matrix(stranger, centroid[None])[:, 0]
    assert cos_stranger.max() < 0.6 < cos_own, (cos_stranger.max(), cos_own)
