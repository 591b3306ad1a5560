"""Score fusion: a classifier and an embedding system answering together.

Two logistic combinations of the classifier's calibrated probability (as a log-odds) and
the embedding system's cosine (or normalised) score, both fitted on validation data:

* *who*: per probe and enrolled speaker, ``identify`` weights give a fused score whose
  arg-max names the speaker (fitted on all probe-speaker trials);
* *whether*: for that speaker, ``detect`` weights give the probability that the answer is
  right (fitted on val probes, enrolled and unknown) -- the open-set score the threshold
  is applied to.  Fitting it on the decision actually made keeps it calibrated.  Both systems see the same waveform through their
own front ends.  Enrolling new speakers goes through the embedding system alone (the
classifier does not know them), as for a classifier champion.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from voiceid.serve.champion import ClassifierScorer, EmbeddingScorer, Scored


class FusionFront:
    """Both systems' front ends on one waveform: a tuple (classifier input, embedding input)."""

    def __init__(self, classifier: ClassifierScorer, embedding: EmbeddingScorer) -> None:
        self.fronts = (classifier.front, embedding.front)
        self.feature_set = "+".join(f.feature_set for f in self.fronts)

    def __call__(self, wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = (f(wave, sample_rate) for f in self.fronts)
        return a, b


def log_odds(p: NDArray[np.float64], eps: float = 1e-6) -> NDArray[np.float64]:
    q = np.clip(p, eps, 1 - eps)
    return np.log(q / (1 - q))


class FusionScorer:
    """Speaker: arg-max of ``identify . (logit p_clf, s_emb, 1)``; score: ``sigmoid(detect . (same, for it))``."""

    kind = "fusion"

    def __init__(self, classifier: ClassifierScorer, embedding: EmbeddingScorer, identify: Any, detect: Any) -> None:
        if sorted(classifier.speakers) != sorted(embedding.speakers):
            raise ValueError("fusion needs both systems to know the same enrolled speakers")
        self.classifier, self.embedding = classifier, embedding
        self.identify = np.asarray(identify, dtype=np.float64)  # (3,)
        self.detect = np.asarray(detect, dtype=np.float64)  # (3,)
        self.front = FusionFront(classifier, embedding)
        self._order = [classifier.speakers.index(s) for s in embedding.speakers]  # classifier columns in centroid order

    @property
    def speakers(self) -> list[str]:
        return list(self.embedding.speakers)

    def pair_scores(self, inputs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(classifier log-odds, embedding scores), each (n, n_speakers) in :attr:`speakers` order."""
        X = np.stack([np.asarray(a).ravel() for a, _ in inputs])
        proba = np.asarray(self.classifier.calibrated.predict_proba(X), dtype=np.float64)[:, self._order]
        _, emb_scores = self.embedding.cosines(self.embedding.embedder.embed([b for _, b in inputs]))
        return log_odds(proba), emb_scores

    def score_pairs(self, lo: NDArray[np.float64], es: NDArray[np.float64]) -> Scored:
        """The decision from both systems' (n, n_speakers) scores."""
        w, d = self.identify, self.detect
        best = (w[0] * lo + w[1] * es + w[2]).argmax(axis=1)
        rows = np.arange(len(best))
        z = d[0] * lo[rows, best] + d[1] * es[rows, best] + d[2]
        return Scored(np.asarray(self.speakers)[best], 0.5 * (1.0 + np.tanh(0.5 * z)))

    def score_inputs(self, inputs: list[tuple[np.ndarray, np.ndarray]]) -> Scored:
        return self.score_pairs(*self.pair_scores(inputs))
