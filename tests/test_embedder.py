"""Embedding extraction, verification trials and centroid identification."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voiceid.ecapa.embed import embed
from voiceid.ecapa.evaluate import (
    build_trials,
    identification_metrics,
    trial_scores,
    verification_metrics,
)
from voiceid.ecapa.model import ECAPATDNN, EcapaConfig
from voiceid.scoring.centroids import identify, speaker_centroids


def test_embed_batches_by_length_without_changing_results() -> None:
    torch.manual_seed(0)
    model = ECAPATDNN(EcapaConfig(n_mels=20, channels=16, scale=4, se_channels=8, attention_channels=8, embedding_dim=8))
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(n, 20)).astype(np.float32) for n in (30, 50, 30, 120, 30, 1)]
    together = embed(model, feats, batch_size=2)
    one_by_one = np.concatenate([embed(model, [f]) for f in feats])
    assert together.shape == (6, 8)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    with pytest.raises(ValueError, match="utterance 1"):
        embed(model, [feats[0], np.zeros((10, 21), np.float32)])


def test_all_pair_trials() -> None:
    trials = build_trials(["a", "a", "b", "u"])
    pairs = list(zip(trials.left.tolist(), trials.right.tolist()))
    assert pairs == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert trials.labels.tolist() == [1, 0, 0, 0, 0, 0]


def test_probe_trials_skip_enrollment_pairs() -> None:
    # Utterances 0-2 are enrollment (a, a, b); 3-5 are held out (a, b, unknown u).
    speakers = ["a", "a", "b", "a", "b", "u"]
    probe = [False, False, False, True, True, True]
    trials = build_trials(speakers, probe)
    pairs = set(zip(trials.left.tolist(), trials.right.tolist()))
    assert not pairs & {(0, 1), (0, 2), (1, 2)}
    assert len(pairs) == 15 - 3
    targets = {p for p, lab in zip(zip(trials.left.tolist(), trials.right.tolist()), trials.labels) if lab}
    assert targets == {(0, 3), (1, 3), (2, 4)}
    with pytest.raises(ValueError, match="probe mask"):
        build_trials(speakers, probe[:2])


def test_nontarget_cap_keeps_every_target_and_is_seeded() -> None:
    speakers = [s for s in "abcdefgh" for _ in range(3)]
    full = build_trials(speakers)
    capped = build_trials(speakers, max_nontarget=20, seed=1)
    assert capped.labels.sum() == full.labels.sum() == 8 * 3
    assert (capped.labels == 0).sum() == 20
    again = build_trials(speakers, max_nontarget=20, seed=1)
    np.testing.assert_array_equal(capped.left, again.left)


def test_verification_metrics_on_clustered_embeddings() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    speakers = np.repeat(np.arange(4), 5).astype(str)
    emb = centres[speakers.astype(int)] + 0.05 * rng.normal(size=(20, 16))
    trials = build_trials(speakers)
    m = verification_metrics(emb, trials)
    assert m["eer"] == 0.0 and m["min_dcf"] == 0.0
    assert m["n_target_trials"] == 4 * 10 and m["n_nontarget_trials"] == 190 - 40
    shuffled = verification_metrics(rng.permutation(emb), trials)
    assert shuffled["eer"] > 0.2
    scores = trial_scores(emb, trials)
    assert scores.shape == trials.labels.shape and np.all(np.abs(scores) <= 1 + 1e-9)


def test_centroid_identification() -> None:
    emb = np.array([[1.0, 0.0], [3.0, 0.2], [0.0, 1.0], [0.1, 2.0]])
    cents = speaker_centroids(emb, ["x", "x", "y", "y"])
    assert cents.speakers == ["x", "y"]
    np.testing.assert_allclose(np.linalg.norm(cents.vectors, axis=1), 1.0)
    predicted, scores = identify(np.array([[2.0, 0.1], [0.0, -1.0], [0.2, 1.0]]), cents)
    assert predicted == ["x", "x", "y"]  # (0, -1) is closer in angle to x than to y
    assert scores.shape == (3, 2)
    m = identification_metrics(["x", "y", "y"], scores, cents)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert set(m) == {"accuracy", "f1_weighted", "f1_macro", "top5_accuracy"}
    with pytest.raises(ValueError, match="speaker labels"):
        speaker_centroids(emb, ["x"])
