"""Speakers enrolled later: how well an embedding system serves voices no fitted part of it saw.

``voiceid enroll`` adds speakers after training. Nothing was fitted on them: not the adapted
encoder, not LDA/WCCN, not the calibrator, not the threshold. A back-end that serves the
enrolled speakers well can serve new ones badly. LDA fitted on ~20 speakers keeps at most 19
directions, the ones that tell *those* voices apart.

Measured on az_digits with raw d-vectors (21 speakers fitted on, 20 enrolled later from 5
clips, 8 strangers, 8 draws; scratch /tmp/exp6/be.py), the later speakers' DIR at 5% FAR was:

* 0.22 with WCCN;
* 0.16 with no back-end;
* 0.09 with LDA+WCCN, although LDA+WCCN beat no back-end on the fitted speakers (0.22 vs 0.17).

The val EER of the enrolled speakers cannot see this, so the embedding model that serves the
enrollment store is chosen by :func:`later_trials` instead.

It mimics enrollment on the val-unknown speakers, which nothing was fitted on and which are
never test speakers:

* two folds over a seeded permutation of those speakers;
* in each fold, half of the speakers (those with at least two clips) are enrolled from
  ``enroll_files`` of their clips (never all of them), and their other clips are probes;
* the other half's clips are strangers;
* each probe is scored against the model's own speakers plus the ones just enrolled, exactly
  as :meth:`~voiceid.serve.champion.EmbeddingScorer.cosines` scores a probe against a store.

Every val-unknown speaker is a later-enrolled speaker in one fold and a stranger in the other.
The figure is the identification EER of the pooled probes
(:func:`voiceid.scoring.openset.identification_eer`: a wrong name is a miss).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from voiceid.scoring.centroids import speaker_centroids
from voiceid.scoring.openset import Probes

MIN_LATER_SPEAKERS = 2  # per fold; a single enrolled-later speaker cannot be misnamed for another new one


def later_trials(
    scorer: Any, emb: NDArray[np.float64], speakers: NDArray[np.str_], enroll_files: int, seed: int
) -> Probes | None:
    """Later-enrolled and stranger probes from the val-unknown speakers; None when too few have two clips.

    ``scorer``: an :class:`~voiceid.serve.champion.EmbeddingScorer` (its ``cosines``).
    ``emb``: (n, d) the val-unknown clips in that scorer's space, of ``speakers`` (n,).
    ``known`` in the result marks the enrolled-later speakers' probes.
    """
    spk = np.asarray(speakers).astype(str)
    names = sorted(set(spk.tolist()))
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    parts: list[Probes] = []
    for fold in (order[0::2], order[1::2]):
        enrolled, probe_rows = [], []
        for s in fold:
            rows = np.flatnonzero(spk == s)
            if len(rows) < 2:
                continue
            picked = rng.permutation(rows)
            k = min(enroll_files, len(rows) - 1)
            enrolled.append(picked[:k])
            probe_rows.append(picked[k:])
        strangers = np.flatnonzero(~np.isin(spk, fold))
        if len(enrolled) < MIN_LATER_SPEAKERS or not len(strangers):
            return None
        taught = np.concatenate(enrolled)
        gallery = speaker_centroids(emb[taught], spk[taught])
        rows = np.concatenate([*probe_rows, strangers])
        cents, cos = scorer.cosines(emb[rows], gallery)  # (n_rows, own + later speakers)
        best = cos.argmax(axis=1)
        known = np.r_[np.ones(len(rows) - len(strangers), bool), np.zeros(len(strangers), bool)]
        parts.append(Probes(spk[rows], np.asarray(cents.speakers)[best], cos[np.arange(len(rows)), best], known))
    return Probes(
        np.concatenate([p.true for p in parts]),
        np.concatenate([p.pred for p in parts]),
        np.concatenate([p.score for p in parts]),
        np.concatenate([p.known for p in parts]),
    )
