from __future__ import annotations

import pandas as pd
import pytest

from voiceid.data.splits import SplitPlan, assign_roles


def table(n_speakers: int = 10, utts: int = 12, singles: int = 6) -> pd.DataFrame:
    rows = [{"utt_id": f"s{s}/u{u}", "speaker": f"s{s}", "duration": 1.0 + u} for s in range(n_speakers) for u in range(utts)]
    rows += [{"utt_id": f"x{s}/u0", "speaker": f"x{s}", "duration": 2.0} for s in range(singles)]
    return pd.DataFrame(rows)


PLAN = SplitPlan(min_utts=8, utts_per_speaker=10, train_per_speaker=5, val_per_speaker=2, n_enrolled=7, seed=3)


def test_roles_are_speaker_disjoint_and_splits_complete() -> None:
    out = assign_roles(table(), PLAN)
    enrolled = set(out.loc[out.role == "enrolled", "speaker"])
    unknown = set(out.loc[out.role == "unknown", "speaker"])
    assert len(enrolled) == 7 and not enrolled & unknown
    assert unknown == {f"s{i}" for i in range(10)} - enrolled | {f"x{i}" for i in range(6)}
    per = out[out.role == "enrolled"].groupby(["speaker", "split"]).size().unstack()
    assert (per["train"] == 5).all() and (per["val"] == 2).all() and (per["test"] == 3).all()
    # No utterance is in two splits, and val/test utterances never appear in train.
    assert out["utt_id"].is_unique
    val_unknown = set(out.loc[(out.role == "unknown") & (out.split == "val"), "speaker"])
    test_unknown = set(out.loc[(out.role == "unknown") & (out.split == "test"), "speaker"])
    assert val_unknown and test_unknown and not val_unknown & test_unknown
    assert set(out.loc[out.role == "unknown", "split"]) == {"val", "test"}


def test_deterministic_for_seed_and_changes_with_it() -> None:
    a, b = assign_roles(table(), PLAN), assign_roles(table(), PLAN)
    pd.testing.assert_frame_equal(a, b)
    c = assign_roles(table(), SplitPlan(**{**PLAN.__dict__, "seed": 4}))
    assert set(c.loc[c.role == "enrolled", "speaker"]) != set(a.loc[a.role == "enrolled", "speaker"]) or not c.equals(a)


def test_longest_first_and_caps() -> None:
    plan = SplitPlan(min_utts=8, utts_per_speaker=8, train_per_speaker=5, val_per_speaker=2, n_speakers=4, n_unknown=3,
                     max_utts=12, order="longest", unknown_utts_per_speaker=1)
    out = assign_roles(table(), plan)
    kept = out[out.role == "enrolled"]
    assert kept.speaker.nunique() == 4
    assert kept.duration.min() >= 5.0  # the 8 longest of durations 1..12
    assert out[out.role == "unknown"].speaker.nunique() == 3
    assert (out[out.role == "unknown"].groupby("speaker").size() == 1).all()


def test_max_utts_excludes_speakers() -> None:
    df = table(n_speakers=3, utts=20, singles=0)
    plan = SplitPlan(min_utts=8, max_utts=15, utts_per_speaker=8, train_per_speaker=5, val_per_speaker=2)
    assert assign_roles(df, plan).empty


def test_plan_rejects_split_without_test() -> None:
    with pytest.raises(ValueError, match="utts_per_speaker"):
        SplitPlan(min_utts=8, utts_per_speaker=7, train_per_speaker=5, val_per_speaker=2).check()
