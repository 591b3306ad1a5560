"""ECAPA learns from background speakers: never enrolled, never probes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from voiceid.ecapa.data import split_logmel
from voiceid.ecapa.params import EcapaError


def _table(n_background: int) -> tuple[pd.DataFrame, list[np.ndarray]]:
    rows = [(f"e{s}", "enrolled", split) for s in range(3) for split in ("train", "train", "val", "test")]
    rows += [(f"u{u}", "unknown", "val" if u == 0 else "test") for u in range(2)]
    rows += [(f"b{b}", "background", "train") for b in range(n_background) for _ in range(2)]
    meta = pd.DataFrame(rows, columns=["speaker", "role", "split"])
    meta["utt_id"] = [f"{s}-{i}" for i, s in enumerate(meta["speaker"])]
    meta["content_hash"] = meta["utt_id"]
    rng = np.random.default_rng(0)
    return meta, [rng.normal(size=(20, 8)).astype(np.float32) for _ in range(len(meta))]


def test_background_speakers_train_but_are_never_enrolled_or_probed() -> None:
    data = split_logmel(*_table(n_background=4))
    assert set(data.background.speakers) == {"b0", "b1", "b2", "b3"}
    assert not {str(s) for s in (*data.train.speakers, *data.val.speakers, *data.test.speakers)} & set(data.background.speakers)
    assert set(data.training("background").speakers) == set(data.background.speakers)
    assert set(data.training("enrolled").speakers) == {"e0", "e1", "e2"}
    both = data.training("both")
    assert len(both.feats) == len(data.train.feats) + len(data.background.feats)


def test_training_on_background_alone_needs_background_speakers() -> None:
    data = split_logmel(*_table(n_background=0))
    assert len(data.background.feats) == 0
    with pytest.raises(EcapaError, match="prepare.n_background"):
        data.training("background")
    assert len(data.training("both").feats) == len(data.train.feats)


def test_background_rows_change_the_fingerprint() -> None:
    assert split_logmel(*_table(2)).fingerprint != split_logmel(*_table(3)).fingerprint
