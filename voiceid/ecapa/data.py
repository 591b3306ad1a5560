"""ECAPA's inputs: the logmel table split into training, validation and test utterances."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from voiceid.ecapa.params import EcapaError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Utterances:
    feats: list[np.ndarray]
    speakers: np.ndarray  # (n,) str
    utt_ids: np.ndarray  # (n,) str


@dataclass(frozen=True)
class EcapaData:
    """Enrollment utterances (enrolled ``train`` rows), background speakers' utterances, and val / test."""

    n_mels: int
    train: Utterances  # enrolled speakers' train rows: their centroids, and training data unless excluded
    val: Utterances
    test: Utterances
    background: Utterances = Utterances([], np.array([], dtype=str), np.array([], dtype=str))

    def training(self, speakers: str, min_utts: int = 1) -> Utterances:
        """What the network learns from: ``enrolled`` train rows, ``background`` speakers, or ``both``.

        Background speakers are never enrolled and never probes, so an embedder trained on
        them alone is judged on voices it has never heard, as a pretrained encoder is.
        Speakers with fewer than ``min_utts`` clips are left out (logged): a class of one clip
        shows the margin loss no within-speaker variability.
        """
        parts = {"enrolled": [self.train], "background": [self.background], "both": [self.train, self.background]}[speakers]
        feats = [f for u in parts for f in u.feats]
        spk = np.concatenate([u.speakers for u in parts]) if parts else np.array([], dtype=str)
        ids = np.concatenate([u.utt_ids for u in parts]) if parts else np.array([], dtype=str)
        names, counts = np.unique(spk, return_counts=True)
        few = set(names[counts < min_utts].tolist())
        if few:
            log.info(
                "ecapa: %d speaker(s) with < %d training clips left out of training: %s",
                len(few),
                min_utts,
                ", ".join(sorted(few)[:10]) + (" ..." if len(few) > 10 else ""),
            )
        keep = np.flatnonzero(~np.isin(spk, list(few)))
        if len(names) - len(few) < 2:
            raise EcapaError(
                f"ecapa.train_speakers={speakers!r}: need at least 2 training speakers with >= {min_utts} clips "
                f"(ecapa.min_utts_per_speaker), found {len(names) - len(few)}; {len(few)} had fewer "
                "(prepare.n_background? background speakers with one clip each cannot train the network)"
            )
        return Utterances([feats[i] for i in keep], spk[keep], ids[keep])

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for part in (self.train, self.val, self.test, self.background):
            h.update("\n".join(part.utt_ids).encode())
            h.update("\n".join(part.speakers).encode())
            for f in part.feats:
                h.update(np.ascontiguousarray(f).tobytes())
        return h.hexdigest()


def split_logmel(meta: pd.DataFrame, mats: Sequence[np.ndarray], source: str = "logmel table") -> EcapaData:
    """Enrolled train rows for training/enrollment; all rows of val and test as held-out.

    An utterance with no frames or non-finite values is skipped with a warning naming it.
    """
    bands = {m.shape[1] for m in mats if m.ndim == 2}
    if len(bands) != 1 or any(m.ndim != 2 for m in mats):
        raise EcapaError(f"{source}: expected (n_frames, n_mels) matrices with one n_mels, found {sorted(bands)}")
    ok = np.array([len(m) > 0 and bool(np.isfinite(m).all()) for m in mats], dtype=bool)
    for utt in meta.loc[~ok, "utt_id"]:
        log.warning("%s: utterance %s has no frames or non-finite values; skipped", source, utt)
    parts = {}
    role = meta["role"].to_numpy()
    for split in ("train", "val", "test", "background"):
        if split == "background":
            mask = ok & (role == "background")
        else:
            mask = ok & (meta["split"] == split).to_numpy() & (role != "background")
        if split == "train":
            mask &= role == "enrolled"
        if not mask.any() and split != "background":
            raise EcapaError(f"{source}: no usable {'enrolled ' if split == 'train' else ''}rows in split {split!r}")
        idx = np.flatnonzero(mask)
        parts[split] = Utterances(
            [np.asarray(mats[i], dtype=np.float32) for i in idx.tolist()],
            meta["speaker"].astype(str).to_numpy()[idx],
            meta["utt_id"].astype(str).to_numpy()[idx],
        )
    if len(set(parts["train"].speakers)) < 2:
        raise EcapaError(f"{source}: need at least 2 enrolled speakers with train rows")
    return EcapaData(bands.pop(), parts["train"], parts["val"], parts["test"], parts["background"])
