"""Balanced, speaker-disjoint selection of enrolled and unknown speakers.

Pure pandas/numpy: takes the table of valid utterances and returns the rows kept with
``role`` (``enrolled`` | ``unknown``) and ``split`` (``train`` | ``val`` | ``test``).

* Enrollable speakers have between ``min_utts`` and ``max_utts`` valid utterances; at
  most ``n_speakers`` of them are considered and ``n_enrolled`` are enrolled.
* Each enrolled speaker keeps ``utts_per_speaker`` utterances (a seeded random pick by
  default; ``order: longest`` keeps the longest), split ``train_per_speaker`` /
  ``val_per_speaker`` / rest.  With ``split_by: group`` and a ``group`` column (a recording
  session: a LibriSpeech chapter, a VoxCeleb video), whole groups go either to enrollment
  (train + val) or to test, so no session is both enrolled from and tested on -- clips of
  one session share channel and mood, and mixing them flatters every model.  A speaker
  with a single group falls back to an utterance split (counted in the data report).
* ``n_background`` further speakers are *background* (split ``train``): never enrolled,
  never a probe; embedders learn from them (ECAPA, LDA/WCCN) and score normalisation uses
  them as its cohort, so no speaker seen in val or test shapes the scores.
* Every other speaker is a candidate *unknown*; unknown speakers are split by speaker
  into ``val`` (used to fit open-set thresholds) and ``test`` (final report only), so no
  unknown voice used for a threshold is ever scored in the report.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"utt_id": [f"{s}/{i}" for s in "abcd" for i in range(4)],
    ...                    "speaker": [s for s in "abcd" for _ in range(4)],
    ...                    "duration": [1.0] * 16})
    >>> plan = SplitPlan(min_utts=4, utts_per_speaker=4, train_per_speaker=2,
    ...                  val_per_speaker=1, n_enrolled=2, unknown_utts_per_speaker=2)
    >>> out = assign_roles(df, plan)
    >>> out.groupby(["role", "split"]).size().to_dict()
    {('enrolled', 'test'): 2, ('enrolled', 'train'): 4, ('enrolled', 'val'): 2, ('unknown', 'test'): 2, ('unknown', 'val'): 2}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd


@dataclass(frozen=True, kw_only=True)
class SplitPlan:
    min_utts: int
    utts_per_speaker: int
    train_per_speaker: int
    val_per_speaker: int
    max_utts: int | None = None
    order: Literal["longest", "random"] = "random"  # "longest" would test on each speaker's easiest clips
    split_by: Literal["utterance", "group"] = "group"
    n_speakers: int | None = None
    n_enrolled: int | None = None
    n_unknown: int | None = None
    n_background: int = 0  # speakers only for training embedders and as the score-normalisation cohort
    unknown_utts_per_speaker: int = 2
    unknown_val_fraction: float = 0.5
    seed: int = 42

    def check(self) -> None:
        need = self.train_per_speaker + self.val_per_speaker + 1
        if self.utts_per_speaker < need:
            raise ValueError(
                f"utts_per_speaker={self.utts_per_speaker} leaves no test utterance; need >= train_per_speaker + val_per_speaker + 1 = {need}"
            )
        if self.min_utts < need:
            raise ValueError(f"min_utts={self.min_utts} must be >= train_per_speaker + val_per_speaker + 1 = {need}")
        if self.max_utts is not None and self.max_utts < self.min_utts:
            raise ValueError(f"max_utts={self.max_utts} is below min_utts={self.min_utts}")
        if not 0.0 <= self.unknown_val_fraction <= 1.0:
            raise ValueError(f"unknown_val_fraction must be in [0, 1], found {self.unknown_val_fraction}")
        if self.unknown_utts_per_speaker < 1:
            raise ValueError("unknown_utts_per_speaker must be >= 1")
        if self.n_background < 0:
            raise ValueError(f"n_background must be >= 0, found {self.n_background}")


def _pick(group: pd.DataFrame, n: int, order: str, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` utterances of one speaker, by duration (ties by id) or at random."""
    if order == "longest":
        ranked = group.sort_values(["duration", "utt_id"], ascending=[False, True])
    else:
        ranked = group.sort_values("utt_id").iloc[rng.permutation(len(group))]
    return ranked.head(n)


def _enrolled_rows(utts: pd.DataFrame, plan: SplitPlan, rng: np.random.Generator) -> pd.DataFrame:
    """One enrolled speaker's kept utterances with ``split`` and ``split_by`` columns."""
    n_tr, n_va = plan.train_per_speaker, plan.val_per_speaker
    n_test = plan.utts_per_speaker - n_tr - n_va
    groups = utts["group"].fillna("").astype(str) if "group" in utts.columns else None
    if plan.split_by == "group" and groups is not None and (groups != "").all() and groups.nunique() >= 2:
        by_group = _group_split(utts, groups, plan, rng, n_test)
        if by_group is not None:
            return by_group
    kept = _pick(utts, plan.utts_per_speaker, plan.order, rng)
    kept = kept.iloc[rng.permutation(len(kept))]  # splits must not follow duration order
    split = ["train"] * n_tr + ["val"] * n_va + ["test"] * (len(kept) - n_tr - n_va)
    return kept.assign(split=split, split_by="utterance")


def _group_split(
    utts: pd.DataFrame, groups: pd.Series, plan: SplitPlan, rng: np.random.Generator, n_test: int
) -> pd.DataFrame | None:
    """Train from some sessions, test from the others; None when the sessions cannot allow it.

    Whole groups go to the training side (in a seeded random order) until it holds
    ``train_per_speaker`` clips; test clips come from the remaining groups.  Validation clips
    come from the remaining groups too where there are enough (so validation, like test, is
    cross-session), else from the training side's spare clips.
    """
    n_tr, n_va = plan.train_per_speaker, plan.val_per_speaker
    names = rng.permutation(np.array(sorted(groups.unique())))
    for start in range(len(names)):  # rotations: the first that leaves a session for test
        train_groups: list[str] = []
        for g in np.roll(names, -start):
            if groups.isin(train_groups).sum() >= n_tr:
                break
            train_groups.append(str(g))
        on_train_side = groups.isin(train_groups).to_numpy()
        side, held = utts[on_train_side], utts[~on_train_side]
        if len(side) >= n_tr and len(held) > 0 and len(side) + len(held) >= n_tr + n_va + 1:
            break
    else:
        return None
    train = _pick(side, n_tr, "random", rng)
    test = _pick(held, min(n_test, len(held)), plan.order, rng)
    rest_held = held.drop(index=test.index)
    val = _pick(rest_held, min(n_va, len(rest_held)), "random", rng)
    if len(val) < n_va:
        val = pd.concat([val, _pick(side.drop(index=train.index), n_va - len(val), "random", rng)])
    if len(val) < n_va:
        return None
    split = ["train"] * len(train) + ["val"] * len(val) + ["test"] * len(test)
    return pd.concat([train, val, test]).assign(split=split, split_by="group")


def assign_roles(valid: pd.DataFrame, plan: SplitPlan) -> pd.DataFrame:
    """Select and label utterances; deterministic for a given ``plan.seed``.

    ``valid`` needs columns ``utt_id``, ``speaker`` and ``duration`` (``group`` optional).
    Returns the kept rows with added ``role``, ``split`` and ``split_by`` columns, sorted by
    role, speaker and split.
    """
    plan.check()
    rng = np.random.default_rng(plan.seed)
    counts = valid.groupby("speaker").size()
    speakers = np.array(sorted(counts.index))
    rng.shuffle(speakers)  # seeded: which speakers are enrolled must not follow name order
    too_many = plan.max_utts is not None
    enrollable = [s for s in speakers if counts[s] >= plan.min_utts and not (too_many and counts[s] > plan.max_utts)]
    if plan.n_speakers is not None:
        enrollable = enrollable[: plan.n_speakers]
    n_enrolled = len(enrollable) if plan.n_enrolled is None else min(plan.n_enrolled, len(enrollable))
    enrolled = enrollable[:n_enrolled]
    # Enrollable speakers beyond n_enrolled come first in the unknown pool: they have
    # enough audio to be realistic impostors; then speakers with too few utterances.
    pool = enrollable[n_enrolled:] + [s for s in speakers if s not in set(enrollable)]
    if too_many:
        pool = [s for s in pool if counts[s] <= plan.max_utts]
    # Background speakers come from the same pool (multi-utterance ones first, which is what
    # training an embedder needs); the unknowns are the speakers left after them.
    background, pool = pool[: plan.n_background], pool[plan.n_background :]
    unknown = pool if plan.n_unknown is None else pool[: plan.n_unknown]

    parts: list[pd.DataFrame] = []
    by_speaker = {s: g for s, g in valid.groupby("speaker")}
    for spk in enrolled:
        parts.append(_enrolled_rows(by_speaker[spk], plan, rng).assign(role="enrolled"))

    for spk in background:
        kept = _pick(by_speaker[spk], plan.utts_per_speaker, plan.order, rng)
        parts.append(kept.assign(role="background", split="train", split_by="speaker"))

    n_val_unknown = int(round(plan.unknown_val_fraction * len(unknown)))
    if 0.0 < plan.unknown_val_fraction < 1.0:
        if len(unknown) == 1:
            raise ValueError(
                f"prepare.unknown_val_fraction {plan.unknown_val_fraction}: the one unknown speaker cannot be split into "
                "val (thresholds) and test; add speakers, lower n_enrolled or raise n_unknown"
            )
        if len(unknown) >= 2:
            n_val_unknown = min(max(n_val_unknown, 1), len(unknown) - 1)
    for i, spk in enumerate(unknown):
        kept = _pick(by_speaker[spk], plan.unknown_utts_per_speaker, plan.order, rng)
        parts.append(kept.assign(role="unknown", split="val" if i < n_val_unknown else "test", split_by="speaker"))

    if not parts:
        return valid.head(0).assign(role=pd.Series(dtype=str), split=pd.Series(dtype=str), split_by=pd.Series(dtype=str))
    out = pd.concat(parts, ignore_index=True)
    split_rank = out["split"].map({"train": 0, "val": 1, "test": 2})
    out = out.assign(_r=split_rank).sort_values(["role", "speaker", "_r", "utt_id"]).drop(columns="_r")
    return out.reset_index(drop=True)
