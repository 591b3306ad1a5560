"""Score fusion: a classifier and an embedding system answering together.

Two logistic combinations of the classifier's calibrated probability (as a log-odds) and
the embedding system's cosine (or normalised) score, both fitted on validation data:

* *who*: per probe and enrolled speaker, ``identify`` weights give a fused score whose
  arg-max names the speaker (fitted on all probe-speaker trials);
* *whether*: for that speaker, ``detect`` weights over its two scores and the classifier's
  own open-set score (:meth:`ClassifierScorer.proba_and_score`: e.g. a kNN's distance to the
  closest enrolled clip, calibrated) give the probability that the answer is right (fitted on
  val probes, enrolled and unknown) -- the open-set score the threshold is applied to.
  Fitting it on the decision actually made keeps it calibrated.

Both systems see the same waveform through their own front ends.  Enrolling new speakers goes
through the embedding system alone (the classifier does not know them), as for a classifier
champion.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from voiceid.scoring.calibration import log_odds
from voiceid.serve.champion import ClassifierScorer, EmbeddingScorer, Scored


class FusionFront:
    """Both systems' front ends on one waveform: a tuple (classifier input, embedding input)."""

    def __init__(self, classifier: ClassifierScorer, embedding: EmbeddingScorer) -> None:
        self.fronts = (classifier.front, embedding.front)
        self.feature_set = "+".join(f.feature_set for f in self.fronts)

    def __call__(self, wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = (f(wave, sample_rate) for f in self.fronts)
        return a, b


class Trials(NamedTuple):
    """What both systems say about n probes, in :attr:`FusionScorer.speakers` order."""

    lo: NDArray[np.float64]  # (n, n_speakers) classifier log-odds per speaker
    es: NDArray[np.float64]  # (n, n_speakers) embedding score per speaker
    own: NDArray[np.float64]  # (n,) log-odds of the classifier's own open-set score (its decision statistic, calibrated)

    def take(self, rows: NDArray[Any]) -> Trials:
        return Trials(self.lo[rows], self.es[rows], self.own[rows])


def embedding_scores(embedding: EmbeddingScorer, inputs: list[Any]) -> NDArray[np.float64]:
    """(n, n_speakers) an embedding system's score of each input for each of its enrolled speakers."""
    return embedding.cosines(embedding.embedder.embed(inputs))[1]


def fused_scores(identify: NDArray[np.float64], t: Trials) -> NDArray[np.float64]:
    """(n, n_speakers) ``identify . (logit p_clf, s_emb, 1)`` per probe and speaker; the arg-max names the speaker."""
    return identify[0] * t.lo + identify[1] * t.es + identify[2]


class FusionScorer:
    """Speaker: arg-max of ``identify . (logit p_clf, s_emb, 1)``; score: ``sigmoid(detect . (same, for it; own; 1))``."""

    kind = "fusion"

    def __init__(self, classifier: ClassifierScorer, embedding: EmbeddingScorer, identify: Any, detect: Any) -> None:
        if sorted(classifier.speakers) != sorted(embedding.speakers):
            raise ValueError("fusion needs both systems to know the same enrolled speakers")
        self.classifier, self.embedding = classifier, embedding
        self.identify = np.asarray(identify, dtype=np.float64)  # (3,)
        self.detect = np.asarray(detect, dtype=np.float64)  # (4,); (3,) in fusions pickled before ``own``
        self.front = FusionFront(classifier, embedding)
        self._order = [classifier.speakers.index(s) for s in embedding.speakers]  # classifier columns in centroid order

    @property
    def speakers(self) -> list[str]:
        return list(self.embedding.speakers)

    def pair_scores(self, inputs: list[tuple[np.ndarray, np.ndarray]], emb_scores: NDArray[np.float64] | None = None) -> Trials:
        """Both systems' scores of ``inputs`` against every enrolled speaker.

        ``emb_scores``: the embedding system's (n, n_speakers) scores of the same probes, when the
        caller already has them (selection fuses one embedding system with every classifier).
        """
        proba, own = self.classifier.proba_and_score([a for a, _ in inputs])
        if emb_scores is None:
            emb_scores = embedding_scores(self.embedding, [b for _, b in inputs])
        return Trials(log_odds(proba[:, self._order]), emb_scores, log_odds(own))

    def fused(self, t: Trials) -> NDArray[np.float64]:
        """(n, n_speakers) identification score: its arg-max names the speaker."""
        return fused_scores(self.identify, t)

    def detection(self, t: Trials) -> NDArray[np.float64]:
        """(n, n_speakers) probability that naming each speaker would be right (the score of the named one decides)."""
        d = self.detect
        z = d[0] * t.lo + d[1] * t.es + d[-1]
        if len(d) == 4:
            z = z + d[2] * t.own[:, None]
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    def score_pairs(self, t: Trials) -> Scored:
        """The decision from both systems' scores."""
        best = self.fused(t).argmax(axis=1)
        return Scored(np.asarray(self.speakers)[best], self.detection(t)[np.arange(len(best)), best])

    def score_inputs(self, inputs: list[tuple[np.ndarray, np.ndarray]]) -> Scored:
        return self.score_pairs(self.pair_scores(inputs))
