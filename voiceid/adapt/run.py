"""The ``adapt`` stage's work: which clips train the encoder, decoding them, the ``dvector_ft`` table.

Honest by construction: :func:`training_rows` keeps only ``split == "train"`` rows of the
training roles (``adapt.speakers``), so no val, test or unknown-speaker clip ever shapes the
weights; the adapted encoder then embeds *every* accepted clip, as a fitted scaler transforms
val and test rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from voiceid.adapt.finetune import FineTuned, fine_tune, load_encoder
from voiceid.adapt.params import AdaptParams
from voiceid.data.audio import load_audio
from voiceid.features import dvector
from voiceid.features.params import DvectorParams

ROLES = {"enrolled": ("enrolled",), "background": ("background",), "both": ("enrolled", "background")}


def training_rows(meta: pd.DataFrame, params: AdaptParams) -> np.ndarray:
    """Indices of the rows that train the encoder: train split, training roles, speakers with enough clips.

    >>> meta = pd.DataFrame({"speaker": list("aabbc") + ["u"], "role": ["enrolled"] * 2 + ["background"] * 3 + ["unknown"],
    ...                      "split": ["train", "val", "train", "train", "train", "val"]})
    >>> training_rows(meta, AdaptParams(min_utts_per_speaker=2)).tolist()
    [2, 3]
    """
    ok = (meta["split"].astype(str) == "train") & meta["role"].astype(str).isin(ROLES[params.speakers])
    counts = meta.loc[ok, "speaker"].astype(str).value_counts()
    enough = meta["speaker"].astype(str).map(counts).fillna(0) >= params.min_utts_per_speaker
    return np.flatnonzero((ok & enough).to_numpy())


@dataclass(frozen=True)
class Adapted:
    """The ``dvector_ft`` table (rows of the input table, in order) and the fine-tuning behind it."""

    X: np.ndarray  # (n, 256) float32
    tuned: FineTuned
    train_rows: np.ndarray
    embed_seconds: float


def adapt(meta: pd.DataFrame, paths: list[str], params: AdaptParams, dparams: DvectorParams, sample_rate: int) -> Adapted:
    """Fine-tune on :func:`training_rows` of ``meta`` (audio at ``paths``, same order), then embed every row.

    The files passed the features stage, so a decoding error here is a real fault: it is
    raised (an :class:`~voiceid.data.audio.AudioError` naming the file), not skipped.
    """
    rows = training_rows(meta, params)
    if len(np.unique(meta["speaker"].astype(str).to_numpy()[rows])) < 2:
        raise ValueError(
            f"adapt: {len(rows)} training clips of fewer than 2 speakers with >= {params.min_utts_per_speaker} clips "
            f"(adapt.speakers={params.speakers!r}); nothing to fine-tune on"
        )
    frames = [dvector.mel_frames(_encoder_input(paths[i], sample_rate, dparams)) for i in rows]
    tuned = fine_tune(frames, meta["speaker"].astype(str).to_numpy()[rows].tolist(), params)
    model = load_encoder(tuned.state)
    start = time.perf_counter()
    X = np.zeros((len(meta), dvector.DVECTOR_DIM), dtype=np.float32)
    for i, path in enumerate(paths):
        clip = load_audio(path, sample_rate)
        X[i] = dvector.dvector(clip.wave, clip.sample_rate, dparams, model=model)
    return Adapted(X, tuned, rows, time.perf_counter() - start)


def _encoder_input(path: str, sample_rate: int, dparams: DvectorParams) -> np.ndarray:
    clip = load_audio(path, sample_rate)
    return dvector.encoder_input(clip.wave, clip.sample_rate, dparams)


def write_adapted(features_dir: Path, meta: pd.DataFrame, result: Adapted) -> dict[str, object]:
    """Write ``dvector_ft.parquet`` (``meta`` rows + vectors) and ``dvector_ft.pt`` into ``features_dir``; return the report.

    The report (what ``metrics/adapt.json`` holds) compares the val pair EER of the adapted
    vectors with the pretrained ``dvector.parquet`` beside them, when that table exists.
    """
    from voiceid.atomic import atomic_write
    from voiceid.features.tables import read_feature_table, write_feature_table

    write_feature_table(features_dir / "dvector_ft.parquet", meta, result.X, dvector.feature_names())
    atomic_write(features_dir / "dvector_ft.pt", lambda f: f.write(result.tuned.state))
    tuned, pretrained = result.tuned, features_dir / "dvector.parquet"
    base_eer = None
    if pretrained.is_file():
        base_meta, base_X = read_feature_table(pretrained)  # read once: ~1 MB per 1000 clips
        base_eer = val_pair_eer(base_X, base_meta)
    return {
        "train_clips": tuned.n_clips,
        "train_speakers": tuned.n_speakers,
        "steps": len(tuned.losses),
        "loss_first": round(tuned.losses[0], 4) if tuned.losses else None,
        "loss_last10": round(float(np.mean(tuned.losses[-10:])), 4) if tuned.losses else None,
        "train_seconds": round(tuned.seconds, 1),
        "embed_seconds": round(result.embed_seconds, 1),
        "val_pair_eer_adapted": round(val_pair_eer(result.X, meta), 4),
        "val_pair_eer_pretrained": round(base_eer, 4) if base_eer is not None else None,
    }


def accepted(manifest: pd.DataFrame, rejects: pd.DataFrame) -> pd.DataFrame:
    """The manifest rows the features stage kept (its ``rejects.csv`` lists the others), in manifest order."""
    return manifest[~manifest["utt_id"].astype(str).isin(rejects["utt_id"].astype(str))].reset_index(drop=True)


def val_pair_eer(X: np.ndarray, meta: pd.DataFrame) -> float:
    """EER of cosine trials between every pair of val clips (enrolled and unknown speakers): a report, never fitted on.

    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> meta = pd.DataFrame({"speaker": list("aabb"), "split": ["val"] * 4})
    >>> val_pair_eer(X, meta)
    0.0
    """
    from voiceid.scoring.cosine import l2_normalize
    from voiceid.scoring.verification import eer

    idx = np.flatnonzero((meta["split"].astype(str) == "val").to_numpy())
    spk = meta["speaker"].astype(str).to_numpy()[idx]
    if len(np.unique(spk)) < 2:
        return float("nan")
    E = l2_normalize(np.asarray(X, dtype=np.float64)[idx])
    iu = np.triu_indices(len(idx), 1)
    return float(eer((E @ E.T)[iu], (spk[:, None] == spk[None, :])[iu].astype(int))[0])
