"""Input adapters: turn the layouts users bring into one table of candidate utterances.

Three layouts are understood, all producing a DataFrame with columns
``utt_id, path, speaker, group, text`` (see :data:`CANDIDATE_COLUMNS`; ``group`` is the
recording session when the layout knows it, else None):

* ``folder`` — ``root/<speaker>/**/<utt>.{wav,flac,ogg,mp3,...}`` (VoxCeleb/LibriSpeech);
  the first folder level under ``root`` names the speaker, the folders below it (a
  VoxCeleb video, a LibriSpeech chapter) name the session.
* ``csv`` — a manifest with columns ``path,speaker[,text,duration,group]``.
* ``dusha`` — the Dusha crowd-sourcing ``jsonl`` (``hash_id, audio_path, duration,
  annotator_emo, golden_emo, annotator_id, speaker_text, speaker_emo, source_id``):
  ``source_id`` is the speaker and rows repeating a ``speaker_text`` are dropped,
  because Dusha lists every recording once per annotator.

A manifest row that cannot be used (missing field, bad JSON) becomes a reject with the
manifest file and line in its ``path``; the remaining rows go on.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from voiceid.data.audio import AUDIO_EXTENSIONS

CANDIDATE_COLUMNS = ["utt_id", "path", "speaker", "group", "text"]


REJECT_COLUMNS = ["path", "utt_id", "speaker", "reason", "detail"]


DUSHA_FIELDS = ("hash_id", "audio_path", "source_id", "speaker_text")


class DatasetError(ValueError):
    """The dataset source as a whole is unusable (missing root, unreadable manifest header)."""


@dataclass
class Ingested:
    """Candidates to validate, and rows already rejected while reading the source."""

    candidates: pd.DataFrame
    rejects: list[dict[str, str]] = field(default_factory=list)


def repo_path(path: str | os.PathLike[str]) -> str:
    """A path as stored in manifests: relative to the working directory (the repo root).

    Relative paths keep manifests portable between clones (``../shared/...`` resolves on
    every machine that has the data beside the checkout).
    """
    absolute = os.path.abspath(path)
    try:
        return Path(os.path.relpath(absolute)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(absolute).as_posix()


def reject(path: str, reason: str, detail: str, utt_id: str = "", speaker: str = "") -> dict[str, str]:
    return {"path": path, "utt_id": utt_id, "speaker": speaker, "reason": reason, "detail": detail}


def scan_folder(root: str | os.PathLike[str]) -> Ingested:
    """Collect ``root/<speaker>/**/*.<audio ext>``; files directly under ``root`` are rejected."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    rows: list[dict[str, str | None]] = []
    rejects: list[dict[str, str]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            rejects.append(reject(repo_path(path), "no_speaker", "expected root/<speaker>/<file>, found a file at the root"))
            continue
        group = "/".join(rel.parts[1:-1]) or None  # root/<speaker>/<session>/.../<file>
        rows.append({"utt_id": rel.as_posix(), "path": repo_path(path), "speaker": rel.parts[0], "group": group, "text": None})
    return Ingested(pd.DataFrame(rows, columns=CANDIDATE_COLUMNS), rejects)


def _resolve(audio_root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else audio_root / path


def read_csv_manifest(manifest: str | os.PathLike[str], audio_root: str | os.PathLike[str] | None = None) -> Ingested:
    """Read a ``path,speaker[,text,duration]`` CSV; relative paths resolve against ``audio_root``."""
    manifest = Path(manifest)
    base = Path(audio_root) if audio_root else manifest.parent
    try:
        with manifest.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in ("path", "speaker") if c not in header]
            if missing:
                raise DatasetError(
                    f"{manifest}: missing column(s) {', '.join(missing)}; expected path,speaker[,text,duration,group], found {','.join(header) or 'no header'}"
                )
            raw = list(enumerate(reader, start=2))
    except FileNotFoundError as exc:
        raise DatasetError(f"{manifest}: manifest not found") from exc
    rows, rejects = [], []
    for line, rec in raw:
        path, speaker = (rec.get("path") or "").strip(), (rec.get("speaker") or "").strip()
        if not path or not speaker:
            rejects.append(reject(f"{manifest}:{line}", "bad_manifest_row", "expected non-empty path and speaker"))
            continue
        rows.append(
            {
                "utt_id": path,
                "path": repo_path(_resolve(base, path)),
                "speaker": speaker,
                "group": (rec.get("group") or "").strip() or None,
                "text": rec.get("text") or None,
            }
        )
    return Ingested(pd.DataFrame(rows, columns=CANDIDATE_COLUMNS), rejects)


def read_dusha_manifest(manifest: str | os.PathLike[str], audio_root: str | os.PathLike[str] | None = None) -> Ingested:
    """Read a Dusha ``jsonl`` manifest, keeping the first row of each ``speaker_text``."""
    manifest = Path(manifest)
    base = Path(audio_root) if audio_root else manifest.parent
    if not manifest.is_file():
        raise DatasetError(f"{manifest}: manifest not found")
    rows, rejects = [], []
    seen_texts: set[str] = set()
    with manifest.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{manifest}:{line_no}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                rejects.append(reject(where, "bad_manifest_row", f"expected a JSON object, found invalid JSON ({exc.msg})"))
                continue
            if not isinstance(rec, dict) or any(rec.get(k) in (None, "") for k in DUSHA_FIELDS):
                absent = [k for k in DUSHA_FIELDS if not isinstance(rec, dict) or rec.get(k) in (None, "")]
                rejects.append(
                    reject(where, "bad_manifest_row", f"expected fields {', '.join(DUSHA_FIELDS)}, missing {', '.join(absent)}")
                )
                continue
            text = str(rec["speaker_text"])
            if text in seen_texts:
                continue  # the same recording again, labelled by another annotator
            seen_texts.add(text)
            rows.append(
                {
                    "utt_id": str(rec["hash_id"]),
                    "path": repo_path(_resolve(base, str(rec["audio_path"]))),
                    "speaker": str(rec["source_id"]),
                    "group": None,  # Dusha names no recording session
                    "text": text,
                }
            )
    return Ingested(pd.DataFrame(rows, columns=CANDIDATE_COLUMNS), rejects)


ADAPTERS = {"folder": lambda source, root: scan_folder(source), "csv": read_csv_manifest, "dusha": read_dusha_manifest}


def ingest(adapter: str, source: str | os.PathLike[str], audio_root: str | os.PathLike[str] | None = None) -> Ingested:
    """Run the named adapter; duplicate ``utt_id`` values after the first are rejected."""
    if adapter not in ADAPTERS:
        raise DatasetError(f"unknown adapter {adapter!r}; expected one of {', '.join(ADAPTERS)}")
    got = ADAPTERS[adapter](source, audio_root)
    dup = got.candidates["utt_id"].duplicated(keep="first")
    for _, row in got.candidates[dup].iterrows():
        got.rejects.append(
            reject(
                row["path"],
                "duplicate_id",
                f"utterance id {row['utt_id']!r} appears earlier in {source}",
                row["utt_id"],
                row["speaker"],
            )
        )
    got.candidates = got.candidates[~dup].reset_index(drop=True)
    return got
