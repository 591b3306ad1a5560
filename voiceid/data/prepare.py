"""The prepare step: ingest a source, validate every file, de-duplicate, select and split.

:func:`prepare` is the library side of ``stages/prepare.py``; it does no file writing
so that tests can call it directly and inspect the tables.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from voiceid.data.adapters import REJECT_COLUMNS, ingest, reject
from voiceid.data.audio import AudioError, content_hash, load_audio, validate_clip
from voiceid.data.splits import SplitPlan, assign_roles

MANIFEST_COLUMNS = [
    "utt_id",
    "path",
    "speaker",
    "group",
    "role",
    "split",
    "split_by",
    "duration",
    "sample_rate",
    "channels",
    "content_hash",
    "text",
]


@dataclass(frozen=True, kw_only=True)
class PrepareParams(SplitPlan):
    """The ``prepare`` section of params.yaml (see the comments there): the split plan plus input and validation."""

    adapter: Literal["folder", "csv", "dusha"]
    source: str
    audio_root: str | None = None
    # regex on the file name (stem) whose first group names the recording session, for
    # layouts that keep it in the name (LibriSpeech "19-198-0001": chapter 198); null: the
    # folder between speaker and file (VoxCeleb video, LibriSpeech chapter), or a CSV "group"
    group_pattern: str | None = None
    sample_rate: int = 16000
    min_duration: float = 0.5
    max_duration: float | None = None
    silence_db: float = -70.0  # loudest frame (after DC removal) below this: digital silence
    activity_db: float = 12.0  # loudest frame must rise this far above the clip's noise floor
    n_jobs: int = -1

    def check(self) -> None:
        super().check()
        if self.min_duration <= 0:
            raise ValueError(f"min_duration must be > 0, found {self.min_duration}")
        if self.max_duration is not None and self.max_duration <= self.min_duration:
            raise ValueError(f"max_duration {self.max_duration} must exceed min_duration {self.min_duration}")
        if self.activity_db <= 0:
            raise ValueError(f"activity_db must be > 0, found {self.activity_db}")
        if self.sample_rate < 8000:
            raise ValueError(f"sample_rate must be >= 8000 Hz, found {self.sample_rate}")
        if self.group_pattern is not None:
            try:
                if re.compile(self.group_pattern).groups < 1:
                    raise ValueError(f"group_pattern {self.group_pattern!r} needs a capture group naming the session")
            except re.error as exc:
                raise ValueError(f"group_pattern {self.group_pattern!r} is not a regular expression: {exc}") from None


@dataclass
class Prepared:
    manifest: pd.DataFrame  # MANIFEST_COLUMNS, one row per kept utterance
    rejects: pd.DataFrame  # REJECT_COLUMNS
    n_candidates: int
    n_valid: int  # decoded and validated, before de-duplication and selection


def inspect_file(path: str, params: PrepareParams) -> dict[str, Any]:
    """Decode and validate one file; returns its facts or ``{"reason", "detail"}``."""
    try:
        clip = load_audio(path, params.sample_rate)
        validate_clip(clip, path, params.min_duration, params.max_duration, params.silence_db, params.activity_db)
    except AudioError as exc:
        return {"reason": exc.reason, "detail": str(exc)}
    return {
        "duration": round(clip.duration, 4),
        "sample_rate": clip.orig_sample_rate,
        "channels": clip.orig_channels,
        "content_hash": content_hash(clip.wave),
    }


def prepare(params: PrepareParams, progress: bool = True) -> Prepared:
    """Ingest ``params.source``, validate, drop duplicate audio, and assign roles/splits."""
    got = ingest(params.adapter, params.source, params.audio_root)
    cands = got.candidates
    rejects = list(got.rejects)
    paths = cands["path"].tolist()
    facts: list[dict[str, Any]] = []
    if paths:
        run = Parallel(n_jobs=params.n_jobs, batch_size=8, return_as="generator")
        results = run(delayed(inspect_file)(p, params) for p in paths)
        facts = list(tqdm(results, total=len(paths), desc="validate", disable=not progress))

    ok_rows = []
    for row, fact in zip(cands.to_dict("records"), facts):
        if "reason" in fact:
            rejects.append(reject(row["path"], fact["reason"], fact["detail"], row["utt_id"], row["speaker"]))
        else:
            ok_rows.append({**row, **fact})
    valid = pd.DataFrame(ok_rows, columns=[*cands.columns, "duration", "sample_rate", "channels", "content_hash"])
    n_valid = len(valid)

    valid = valid.sort_values("path").reset_index(drop=True)
    first_of = valid.groupby("content_hash")["path"].transform("first")
    dup = valid["content_hash"].duplicated(keep="first")
    for idx, row in valid[dup].iterrows():
        detail = f"{row['path']}: same audio as {first_of[idx]}"
        rejects.append(reject(row["path"], "duplicate_audio", detail, row["utt_id"], row["speaker"]))
    valid = valid[~dup]

    if params.group_pattern is not None:
        valid = valid.assign(group=[session_of(p, params.group_pattern) for p in valid["path"]])
    manifest = assign_roles(valid, params)[MANIFEST_COLUMNS]
    return Prepared(manifest, pd.DataFrame(rejects, columns=REJECT_COLUMNS), len(cands), n_valid)


def session_of(path: str, pattern: str) -> str | None:
    """The recording session named by ``pattern``'s first group in the file name, or None.

    >>> session_of("data/default/ls0019/19-198-0001.flac", r"^[^-]+-([^-]+)-")
    '198'
    """
    m = re.search(pattern, Path(path).stem)
    return m.group(1) if m else None


def data_report(prep: Prepared) -> dict[str, Any]:
    """Counts per role/split and rejects per reason, for ``metrics/data.json``."""
    m = prep.manifest
    speakers = {
        "enrolled": int(m.loc[m.role == "enrolled", "speaker"].nunique()),
        "unknown_val": int(m.loc[(m.role == "unknown") & (m.split == "val"), "speaker"].nunique()),
        "unknown_test": int(m.loc[(m.role == "unknown") & (m.split == "test"), "speaker"].nunique()),
        "background": int(m.loc[m.role == "background", "speaker"].nunique()),
    }
    utts = {f"{r}_{s}": int(n) for (r, s), n in m.groupby(["role", "split"]).size().items()}
    hours = {f"{r}_{s}": round(float(d) / 3600, 4) for (r, s), d in m.groupby(["role", "split"])["duration"].sum().items()}
    return {
        "candidates": prep.n_candidates,
        "valid": prep.n_valid,
        "kept": len(m),
        "rejected": len(prep.rejects),
        "rejected_by_reason": dict(sorted(Counter(prep.rejects["reason"]).items())),
        "speakers": speakers,
        "enrolled_split_by": {k: int(v) for k, v in m.loc[m.role == "enrolled"].groupby("split_by")["speaker"].nunique().items()},
        "utterances": utts,
        "hours": hours,
    }


def utts_per_speaker(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per speaker: ``speaker, role, utterances`` — the data of the bar plot."""
    table = manifest.groupby(["speaker", "role"]).size().rename("utterances").reset_index()
    return table.sort_values(["role", "utterances", "speaker"], ascending=[True, False, True])
