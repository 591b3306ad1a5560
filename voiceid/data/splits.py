"""Balanced, speaker-disjoint selection of enrolled and unknown speakers.

Pure pandas/numpy: takes the table of valid utterances and returns the rows kept with
``role`` (``enrolled`` | ``unknown``) and ``split`` (``train`` | ``val`` | ``test``).

* Enrollable speakers have between ``min_utts`` and ``max_utts`` valid utterances; at
  most ``n_speakers`` of them are considered and ``n_enrolled`` are enrolled.
* Each enrolled speaker keeps ``utts_per_speaker`` utterances (the longest, or a seeded
  random pick), shuffled and split ``train_per_speaker`` / ``val_per_speaker`` / rest.
* Every other speaker is a candidate *unknown*; unknown speakers are split by speaker
  into ``val`` (used to fit open-set thresholds) and ``test`` (final report only), so no
  unknown voice used for a threshold is ever scored in the report.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"utt_id": [f"{s}/{i}" for s in "abc" for i in range(4)],
    ...                    "speaker": [s for s in "abc" for _ in range(4)],
    ...                    "duration": [1.0] * 12})
    >>> plan = SplitPlan(min_utts=4, utts_per_speaker=4, train_per_speaker=2,
    ...                  val_per_speaker=1, n_enrolled=2, unknown_utts_per_speaker=2)
    >>> out = assign_roles(df, plan)
    >>> out.groupby(["role", "split"]).size().to_dict()
    {('enrolled', 'test'): 2, ('enrolled', 'train'): 4, ('enrolled', 'val'): 2, ('unknown', 'test'): 2}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SplitPlan:
    min_utts: int
    utts_per_speaker: int
    train_per_speaker: int
    val_per_speaker: int
    max_utts: int | None = None
    order: Literal["longest", "random"] = "longest"
    n_speakers: int | None = None
    n_enrolled: int | None = None
    n_unknown: int | None = None
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


def _pick(group: pd.DataFrame, n: int, order: str, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` utterances of one speaker, by duration (ties by id) or at random."""
    if order == "longest":
        ranked = group.sort_values(["duration", "utt_id"], ascending=[False, True])
    else:
        ranked = group.sort_values("utt_id").iloc[rng.permutation(len(group))]
    return ranked.head(n)


def assign_roles(valid: pd.DataFrame, plan: SplitPlan) -> pd.DataFrame:
    """Select and label utterances; deterministic for a given ``plan.seed``.

    ``valid`` needs columns ``utt_id``, ``speaker`` and ``duration``. Returns the kept rows
    with added ``role`` and ``split`` columns, sorted by role, speaker and split.
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
    unknown = pool if plan.n_unknown is None else pool[: plan.n_unknown]

    parts: list[pd.DataFrame] = []
    by_speaker = {s: g for s, g in valid.groupby("speaker")}
    for spk in enrolled:
        kept = _pick(by_speaker[spk], plan.utts_per_speaker, plan.order, rng)
        kept = kept.iloc[rng.permutation(len(kept))]  # splits must not follow duration order
        n_tr, n_va = plan.train_per_speaker, plan.val_per_speaker
        split = ["train"] * n_tr + ["val"] * n_va + ["test"] * (len(kept) - n_tr - n_va)
        parts.append(kept.assign(role="enrolled", split=split))

    n_val_unknown = int(round(plan.unknown_val_fraction * len(unknown)))
    if len(unknown) >= 2 and 0.0 < plan.unknown_val_fraction < 1.0:
        n_val_unknown = min(max(n_val_unknown, 1), len(unknown) - 1)
    for i, spk in enumerate(unknown):
        kept = _pick(by_speaker[spk], plan.unknown_utts_per_speaker, plan.order, rng)
        parts.append(kept.assign(role="unknown", split="val" if i < n_val_unknown else "test"))

    if not parts:
        return valid.head(0).assign(role=pd.Series(dtype=str), split=pd.Series(dtype=str))
    out = pd.concat(parts, ignore_index=True)
    split_rank = out["split"].map({"train": 0, "val": 1, "test": 2})
    out = out.assign(_r=split_rank).sort_values(["role", "speaker", "_r", "utt_id"]).drop(columns="_r")
    return out.reset_index(drop=True)
