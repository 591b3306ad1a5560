"""Seeded synthetic inputs for the selection tests: feature banks, fitted models, fake MLflow runs.

Two flavours:

* :func:`gaussian_bank` -- clip vectors drawn around per-speaker means (fast, no audio);
* :func:`audio_corpus` -- synthetic voices (tests/conftest.py) and their real ``mfcc60``
  vectors, so a champion built from them can be fed the same audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from voiceid.features.params import FeatureParams
from voiceid.features.signal import feature_vector
from voiceid.select.candidates import FeatureBank

SPLITS_ENROLLED = (("train", 5), ("val", 3), ("test", 3))


def _meta_rows(speaker: str, role: str, split: str, n: int, start: int) -> list[dict]:
    return [
        {"utt_id": f"{speaker}-{split}-{start + i}", "speaker": speaker, "role": role, "split": split,
         "content_hash": f"h{speaker}{split}{i}"}
        for i in range(n)
    ]


def layout(n_enrolled: int = 6, n_unknown_val: int = 4, n_unknown_test: int = 4, unknown_utts: int = 2) -> pd.DataFrame:
    """Metadata rows: enrolled speakers with train/val/test, unknown speakers with val or test only."""
    rows: list[dict] = []
    for s in range(n_enrolled):
        for split, n in SPLITS_ENROLLED:
            rows += _meta_rows(f"e{s:02d}", "enrolled", split, n, 0)
    for u in range(n_unknown_val + n_unknown_test):
        split = "val" if u < n_unknown_val else "test"
        rows += _meta_rows(f"u{u:02d}", "unknown", split, unknown_utts, 0)
    return pd.DataFrame(rows)


def gaussian_bank(seed: int = 0, dim: int = 12, spread: float = 0.6, feature_set: str = "mfcc60", **kw: int) -> FeatureBank:
    """Vectors around a random mean per speaker (unknown speakers too, so they are impostors)."""
    meta = layout(**kw)
    rng = np.random.default_rng(seed)
    means = {s: rng.normal(0, 1, dim) for s in meta["speaker"].unique()}
    X = np.stack([means[s] + spread * rng.normal(0, 1, dim) for s in meta["speaker"]]).astype(np.float32)
    return FeatureBank({feature_set: (meta, X)})


def fit_logreg(bank: FeatureBank, feature_set: str = "mfcc60") -> Pipeline:
    """A classifier fitted on the enrolled train rows, as the grid stage would log it."""
    X, y = bank.rows(feature_set, "enrolled", "train")
    return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=1.0, max_iter=2000))]).fit(X, y)


@dataclass
class AudioCorpus:
    meta: pd.DataFrame
    waves: list[np.ndarray]
    bank: FeatureBank
    params: FeatureParams


def audio_corpus(n_enrolled: int = 5, n_unknown_val: int = 3, n_unknown_test: int = 3) -> AudioCorpus:
    """Synthetic voices (one pitch/timbre per speaker) and their mfcc60 vectors."""
    from conftest import synth_voice

    meta = layout(n_enrolled, n_unknown_val, n_unknown_test)
    params = FeatureParams(sets=("mfcc60",))
    speakers = {s: i for i, s in enumerate(meta["speaker"].unique())}
    rng = np.random.default_rng(7)
    waves = []
    for s in meta["speaker"]:
        base = synth_voice(seed=speakers[s], seconds=float(rng.uniform(0.8, 1.2)))
        noisy = base * float(rng.uniform(0.6, 1.0)) + 0.01 * rng.standard_normal(base.shape).astype(np.float32)
        waves.append(noisy.astype(np.float32))
    X = np.stack([feature_vector("mfcc60", w, 16000, params) for w in waves])
    return AudioCorpus(meta, waves, FeatureBank({"mfcc60": (meta, X)}), params)


def small_champion() -> tuple[AudioCorpus, object, object]:
    """(corpus, selection result, champion) of logreg + cosine on :func:`audio_corpus` (EER rule)."""
    from voiceid.select.candidates import Source
    from voiceid.select.params import SelectParams
    from voiceid.select.protocol import make_champion, select

    params = SelectParams(families=("logreg", "cosine"), n_bootstrap=20, threshold_rule="eer", champion_metric="eer")
    corpus = audio_corpus()
    sources = [
        (Source("logreg", "classifier", "mfcc60", "run-1", None, "val_f1_weighted", 1.0), fit_logreg(corpus.bank)),
        (Source("cosine", "embedding", "mfcc60"), None),
    ]
    result = select(sources, corpus.bank, params, corpus.params)
    return corpus, result, make_champion(result, params, corpus.params)
