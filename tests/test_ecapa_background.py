"""ECAPA learns from background speakers: never enrolled, never probes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from voiceid.ecapa.data import split_logmel
from voiceid.ecapa.params import EcapaError


def _table(n_background: int, clips: int = 2) -> tuple[pd.DataFrame, list[np.ndarray]]:
    rows = [(f"e{s}", "enrolled", split) for s in range(3) for split in ("train", "train", "val", "test")]
    rows += [(f"u{u}", "unknown", "val" if u == 0 else "test") for u in range(2)]
    rows += [(f"b{b}", "background", "train") for b in range(n_background) for _ in range(clips)]
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


def test_speakers_with_too_few_clips_do_not_train_the_network() -> None:
    single = split_logmel(*_table(n_background=5, clips=1))
    both = single.training("both", min_utts=2)
    assert set(both.speakers) == {"e0", "e1", "e2"}  # every one-clip background speaker left out
    assert len(both.feats) == len(both.speakers) == len(both.utt_ids) == len(single.train.feats)
    assert set(single.training("both", min_utts=1).speakers) >= {"b0", "b4"}
    with pytest.raises(EcapaError, match="min_utts_per_speaker"):
        single.training("background", min_utts=2)
    two = split_logmel(*_table(n_background=5, clips=2))
    kept = two.training("background", min_utts=2)
    assert set(kept.speakers) == {f"b{b}" for b in range(5)}
    assert dict(zip(kept.utt_ids, kept.speakers, strict=True)) == dict(
        zip(two.background.utt_ids, two.background.speakers, strict=True)
    )
