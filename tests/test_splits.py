from __future__ import annotations

import dataclasses

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


def _draw(out: pd.DataFrame) -> dict[str, object]:
    """What a seed decides: who is enrolled, which unknowns fit thresholds, each enrolled speaker's train clips."""
    enrolled = out[out.role == "enrolled"]
    return {
        "enrolled": sorted(set(enrolled.speaker)),
        "unknown_val": sorted(set(out.loc[(out.role == "unknown") & (out.split == "val"), "speaker"])),
        "train": {s: sorted(g.utt_id) for s, g in enrolled[enrolled.split == "train"].groupby("speaker")},
    }


def test_deterministic_for_seed_and_changes_with_it() -> None:
    a, b = assign_roles(table(), PLAN), assign_roles(table(), PLAN)
    pd.testing.assert_frame_equal(a, b)  # same seed, same everything
    # A shuffled input table gives the same draw: it depends on the seed, not on row order.
    shuffled = table().sample(frac=1.0, random_state=0).reset_index(drop=True)
    assert _draw(assign_roles(shuffled, PLAN)) == _draw(a)

    draws = [_draw(assign_roles(table(), dataclasses.replace(PLAN, seed=seed))) for seed in range(3, 9)]
    assert draws[0] == _draw(a)
    # Other seeds enrol other speakers (not the first 7 names) and pick other train clips.
    assert len({tuple(d["enrolled"]) for d in draws}) >= 4
    assert all(d["enrolled"] != [f"s{i}" for i in range(7)] for d in draws)
    assert len({tuple(d["unknown_val"]) for d in draws}) >= 4
    common = sorted(set(draws[0]["enrolled"]) & set(draws[1]["enrolled"]))
    assert any(draws[0]["train"][s] != draws[1]["train"][s] for s in common)


@pytest.mark.parametrize("order", ["longest", "random"])
def test_counts_per_speaker_and_role(order: str) -> None:
    plan = dataclasses.replace(PLAN, order=order, unknown_utts_per_speaker=3)
    out = assign_roles(table(), plan)
    enrolled, unknown = out[out.role == "enrolled"], out[out.role == "unknown"]
    assert (enrolled.groupby("speaker").size() == plan.utts_per_speaker).all()
    per_unknown = unknown.groupby("speaker").size()
    assert (per_unknown[[s for s in per_unknown.index if s.startswith("s")]] == 3).all()  # 12 clips: capped at 3
    assert (per_unknown[[s for s in per_unknown.index if s.startswith("x")]] == 1).all()  # single-clip speakers
    # every unknown speaker is in exactly one of val/test, half of them in val
    assert (unknown.groupby("speaker")["split"].nunique() == 1).all()
    n_unknown = unknown.speaker.nunique()
    assert n_unknown == 9 and unknown.loc[unknown.split == "val", "speaker"].nunique() == round(0.5 * n_unknown)
    assert set(out["utt_id"]) <= set(table()["utt_id"]) and out["utt_id"].is_unique


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
