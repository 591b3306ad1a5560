from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import REPO, synth_voice, write_wav

from voiceid.data.adapters import (
    DatasetError,
    ingest,
    read_csv_manifest,
    read_dusha_manifest,
    scan_folder,
)

DUSHA = REPO / "tests" / "fixtures" / "dusha" / "crowd_train.jsonl"


def test_folder_nested_and_root_files(tmp_path: Path) -> None:
    write_wav(tmp_path / "alice" / "book1" / "ch1" / "a.wav", synth_voice(1))
    write_wav(tmp_path / "alice" / "b.wav", synth_voice(1))
    write_wav(tmp_path / "bob" / "c.wav", synth_voice(2))
    write_wav(tmp_path / "stray.wav", synth_voice(3))
    (tmp_path / "bob" / "notes.txt").write_text("ignored: not an audio extension")
    got = scan_folder(tmp_path)
    assert sorted(got.candidates.speaker) == ["alice", "alice", "bob"]
    assert "alice/book1/ch1/a.wav" in set(got.candidates.utt_id)
    assert [r["reason"] for r in got.rejects] == ["no_speaker"]
    with pytest.raises(DatasetError, match="not found"):
        scan_folder(tmp_path / "nope")


def test_csv_manifest_rows_and_header(tmp_path: Path) -> None:
    write_wav(tmp_path / "audio" / "x.wav", synth_voice(1))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,speaker,text\naudio/x.wav,s1,hello\n,s2,\n")
    got = read_csv_manifest(manifest)
    assert got.candidates.iloc[0].speaker == "s1" and Path(got.candidates.iloc[0].path).resolve() == (tmp_path / "audio/x.wav").resolve()
    assert got.rejects[0]["path"] == f"{manifest}:3"
    bad = tmp_path / "bad.csv"
    bad.write_text("file,who\n")
    with pytest.raises(DatasetError, match="missing column"):
        read_csv_manifest(bad)


def test_dusha_drops_speaker_text_duplicates_and_bad_rows(tmp_path: Path) -> None:
    lines = DUSHA.read_text(encoding="utf-8").splitlines()
    got = read_dusha_manifest(DUSHA, audio_root=REPO / "data" / "default")
    assert len(lines) == 38  # 36 annotations (12 recordings x 3 annotators) + 2 broken rows
    assert len(got.candidates) == 12 and got.candidates.text.is_unique
    assert set(got.candidates.speaker) == {"src_ls1688", "src_ls1998", "src_ls2033"}
    assert sorted(r["reason"] for r in got.rejects) == ["bad_manifest_row", "bad_manifest_row"]
    assert any("source_id" in r["detail"] for r in got.rejects)


def test_duplicate_ids_rejected(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", synth_voice(1))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,speaker\na.wav,s1\na.wav,s1\n")
    got = ingest("csv", manifest)
    assert len(got.candidates) == 1 and got.rejects[0]["reason"] == "duplicate_id"
    with pytest.raises(DatasetError, match="unknown adapter"):
        ingest("kaldi", manifest)
    assert os.path.isabs(got.candidates.path[0]) is False
