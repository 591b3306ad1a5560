"""Using a trained embedder: embed utterances, build verification trials, identify by centroid.

Everything here is framework-neutral after :func:`embed`: embeddings are numpy arrays, so the
same trial and centroid code scores ECAPA embeddings and any baseline vector (MFCC statistics).

Example:
    >>> import numpy as np
    >>> speakers = ["a", "a", "b", "b", "u"]          # "u": an unknown speaker, impostor only
    >>> trials = build_trials(speakers)
    >>> trials.labels.tolist()                       # pairs (0,1) and (2,3) are targets
    [1, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    >>> emb = np.array([[1, 0], [1, .1], [0, 1], [.1, 1], [-1, 0]])
    >>> verification_metrics(emb, trials)["eer"]
    0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from voiceid.ecapa import ECAPATDNN, EcapaConfig
from voiceid.models import classification_metrics
from voiceid.scoring import cosine_matrix, cosine_pairs, eer, l2_normalize, min_dcf


class Trials(NamedTuple):
    """Verification trials as index pairs into one list of utterances; label 1 = same speaker."""

    left: NDArray[np.int64]
    right: NDArray[np.int64]
    labels: NDArray[np.int64]


class Centroids(NamedTuple):
    """One unit-length mean embedding per enrolled speaker (rows follow ``speakers``)."""

    speakers: list[str]
    vectors: NDArray[np.float64]  # (n_speakers, embedding_dim)


def embed(
    model: torch.nn.Module,
    feats: Sequence[np.ndarray],
    device: torch.device | None = None,
    batch_size: int = 16,
) -> NDArray[np.float32]:
    """Embeddings (n, embedding_dim) of variable-length (n_frames, n_mels) log-mel arrays.

    ``model`` is an :class:`~voiceid.ecapa.ECAPATDNN` (put in eval mode here) or the
    ``torch.export`` graph that ``tracking.load_model(uri, "pytorch")`` returns for a logged
    one (eval mode is baked in at export).  Utterances of equal length are batched together
    (no padding, so no frame of another utterance leaks into the pooling statistics).
    """
    config = getattr(model, "config", None)
    n_mels = config.n_mels if isinstance(config, EcapaConfig) else (feats[0].shape[-1] if feats else None)
    if isinstance(model, ECAPATDNN):
        model.eval()
    if not feats:
        return np.zeros((0, config.embedding_dim if isinstance(config, EcapaConfig) else 0), dtype=np.float32)
    device = device or next(model.parameters()).device
    by_len: dict[int, list[int]] = {}
    for i, f in enumerate(feats):
        if f.ndim != 2 or f.shape[1] != n_mels or len(f) == 0:
            raise ValueError(f"utterance {i}: expected (n_frames > 0, {n_mels}) features, found {f.shape}")
        by_len.setdefault(len(f), []).append(i)
    rows: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for idx in by_len.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                x = torch.from_numpy(np.stack([feats[i] for i in chunk]).astype(np.float32)).to(device)
                rows.update(zip(chunk, model(x).cpu().numpy()))  # (b, embedding_dim)
    return np.stack([rows[i] for i in range(len(feats))]).astype(np.float32)


def build_trials(
    speakers: Sequence[str],
    probe: ArrayLike | None = None,
    max_nontarget: int | None = None,
    seed: int = 0,
) -> Trials:
    """Unordered pairs of utterances as trials; same speaker -> target, else non-target.

    Without ``probe`` every pair is a trial.  With a boolean ``probe`` mask (held-out
    utterances) only pairs with at least one probe are kept: probe-vs-probe and
    probe-vs-enrollment pairs, never enrollment-vs-enrollment (those the model trained on).
    Unknown speakers belong in ``speakers`` like any other: their pairs with everyone else are
    non-target trials (impostors).  ``max_nontarget`` keeps a seeded random subset of the
    non-targets when there are more (every target is kept).
    """
    spk = np.asarray(speakers)
    left, right = np.triu_indices(len(spk), k=1)
    if probe is not None:
        mask = np.asarray(probe, dtype=bool)
        if mask.shape != spk.shape:
            raise ValueError(f"probe mask has {mask.size} entries for {spk.size} utterances")
        keep = mask[left] | mask[right]
        left, right = left[keep], right[keep]
    labels = (spk[left] == spk[right]).astype(np.int64)
    if max_nontarget is not None and (labels == 0).sum() > max_nontarget:
        non = np.flatnonzero(labels == 0)
        sampled = np.random.default_rng(seed).choice(non, max_nontarget, replace=False)
        keep = np.sort(np.concatenate([np.flatnonzero(labels), sampled]))
        left, right, labels = left[keep], right[keep], labels[keep]
    return Trials(left.astype(np.int64), right.astype(np.int64), labels)


def trial_scores(emb: ArrayLike, trials: Trials) -> NDArray[np.float64]:
    """Cosine score of each trial."""
    e = np.asarray(emb)
    return cosine_pairs(e[trials.left], e[trials.right])


def verification_metrics(emb: ArrayLike, trials: Trials, p_target: float = 0.01) -> dict[str, float]:
    """EER, minDCF and their thresholds of cosine scoring on ``trials``."""
    scores = trial_scores(emb, trials)
    rate, thr = eer(scores, trials.labels)
    dcf, dcf_thr = min_dcf(scores, trials.labels, p_target=p_target)
    return {"eer": rate, "eer_threshold": thr, "min_dcf": dcf, "min_dcf_threshold": dcf_thr,
            "n_target_trials": float(trials.labels.sum()), "n_nontarget_trials": float((trials.labels == 0).sum())}


def speaker_centroids(emb: ArrayLike, speakers: Sequence[str]) -> Centroids:
    """Mean of each speaker's unit-length embeddings, re-normalised (speakers sorted)."""
    e = l2_normalize(emb)
    spk = np.asarray(speakers)
    if len(spk) != len(e):
        raise ValueError(f"{len(e)} embeddings but {len(spk)} speaker labels")
    names = sorted(set(spk.tolist()))
    return Centroids(names, l2_normalize(np.stack([e[spk == s].mean(axis=0) for s in names])))


def identify(emb: ArrayLike, centroids: Centroids) -> tuple[list[str], NDArray[np.float64]]:
    """Closed-set decision: the enrolled speaker with the highest cosine, and all the scores."""
    scores = cosine_matrix(emb, centroids.vectors)  # (n, n_speakers)
    return [centroids.speakers[i] for i in scores.argmax(axis=1)], scores


def identification_metrics(true: Sequence[str], scores: ArrayLike, centroids: Centroids) -> dict[str, float]:
    """accuracy, f1_weighted, f1_macro, top5_accuracy of closed-set cosine identification.

    Computed by the classifier grid's own :func:`voiceid.models.classification_metrics`, with
    the cosine to each centroid in place of class probabilities, so the figures compare.
    """
    return classification_metrics(np.asarray(true), np.asarray(scores), np.asarray(centroids.speakers))
