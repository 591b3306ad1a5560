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
from numpy.typing import ArrayLike, NDArray

from voiceid.scoring.centroids import Centroids
from voiceid.scoring.classification import classification_metrics
from voiceid.scoring.cosine import cosine_pairs
from voiceid.scoring.verification import eer, min_dcf


class Trials(NamedTuple):
    """Verification trials as index pairs into one list of utterances; label 1 = same speaker."""

    left: NDArray[np.int64]
    right: NDArray[np.int64]
    labels: NDArray[np.int64]


def build_trials(
    speakers: Sequence[str] | NDArray[np.str_],
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
    return {
        "eer": rate,
        "eer_threshold": thr,
        "min_dcf": dcf,
        "min_dcf_threshold": dcf_thr,
        "n_target_trials": float(trials.labels.sum()),
        "n_nontarget_trials": float((trials.labels == 0).sum()),
    }


def identification_metrics(true: Sequence[str], scores: ArrayLike, centroids: Centroids) -> dict[str, float]:
    """accuracy, f1_weighted, f1_macro, top5_accuracy of closed-set cosine identification.

    Computed by the classifier grid's own :func:`voiceid.scoring.classification.classification_metrics`, with
    the cosine to each centroid in place of class probabilities, so the figures compare.
    """
    return classification_metrics(np.asarray(true), np.asarray(scores), np.asarray(centroids.speakers))
