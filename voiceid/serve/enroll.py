"""Enrolling a speaker: validate recordings, embed them with the champion's embedder, store them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from voiceid.data.audio import AudioError, Clip, content_hash, load_audio, validate_clip
from voiceid.serve.store import (
    EnrollmentError,
    EnrollmentStore,
    SpeakerInfo,
    check_name,
)


@dataclass(frozen=True)
class EnrollParams:
    """What a recording must be to enroll with it (defaults follow ``prepare``)."""

    min_files: int = 3  # usable, distinct recordings a speaker needs
    min_duration: float = 0.5  # seconds
    max_duration: float | None = None
    silence_db: float = -50.0  # loudest 25 ms frame must exceed this (dBFS)

    def check(self) -> None:
        if self.min_files < 1:
            raise ValueError(f"min_files must be >= 1, found {self.min_files}")
        if self.min_duration <= 0:
            raise ValueError(f"min_duration must be > 0, found {self.min_duration}")


@dataclass(frozen=True)
class Usable:
    """Recordings that passed validation, and one message per file that did not."""

    clips: list[tuple[str, Clip, str]]  # (path, clip, content hash)
    problems: list[str]


def usable_recordings(paths: Iterable[str | os.PathLike[str]], params: EnrollParams, sample_rate: int) -> Usable:
    """Decode and validate each file; duplicates (same decoded audio) count once."""
    clips: list[tuple[str, Clip, str]] = []
    problems: list[str] = []
    seen: dict[str, str] = {}  # content hash -> first path
    for p in paths:
        path = str(p)
        try:
            clip = load_audio(path, sample_rate)
            validate_clip(clip, path, params.min_duration, params.max_duration, params.silence_db)
        except AudioError as exc:
            problems.append(str(exc))
            continue
        digest = content_hash(clip.wave)
        if digest in seen:
            problems.append(f"{path}: duplicate: same audio as {seen[digest]}")
            continue
        seen[digest] = path
        clips.append((path, clip, digest))
    return Usable(clips, problems)


def enroll_speaker(
    store: EnrollmentStore,
    champion: Any,
    name: str,
    paths: Sequence[str | os.PathLike[str]],
    params: EnrollParams,
    model: dict[str, Any] | None = None,
    append: bool = False,
) -> tuple[SpeakerInfo, list[str]]:
    """Validate ``paths``, embed the usable ones with ``champion.embed`` and store them.

    Returns the stored speaker and the messages of skipped files; raises EnrollmentError
    (listing every problem) when fewer than ``params.min_files`` recordings are usable.
    """
    params.check()
    name = check_name(name)
    if champion.embedding is None:
        raise EnrollmentError(
            f"the model ({champion.family}) has no embedding model, so speakers cannot be enrolled "
            "without retraining; include 'ecapa' or 'cosine' in select.families"
        )
    got = usable_recordings(paths, params, champion.sample_rate)
    if len(got.clips) < params.min_files:
        detail = "".join(f"\n  {m}" for m in got.problems)
        raise EnrollmentError(
            f"cannot enroll {name!r}: {len(got.clips)} usable recording(s), need at least "
            f"{params.min_files}" + (f"; unusable:{detail}" if detail else "")
        )
    emb = np.stack([champion.embed(clip.wave, clip.sample_rate) for _, clip, _ in got.clips])  # (n, d)
    files = [{"path": os.path.abspath(p), "content_hash": h, "duration": round(c.duration, 3)} for p, c, h in got.clips]
    info = store.add(name, emb, files, champion.embedding.embedder_id, model, append=append)
    return info, got.problems
