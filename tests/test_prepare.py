from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import REPO, synth_voice, write_wav
from stage_runner import run_stage

from voiceid.data.prepare import MANIFEST_COLUMNS, PrepareParams, data_report, prepare

BASE = PrepareParams(adapter="folder", source="", min_utts=6, utts_per_speaker=8, train_per_speaker=3,
                     val_per_speaker=2, n_enrolled=4, unknown_utts_per_speaker=2, n_jobs=1, seed=1)


def test_bad_files_rejected_good_files_kept(speaker_tree: Path) -> None:
    bad = speaker_tree / "spk00"
    (bad / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    (bad / "empty.wav").touch()
    write_wav(bad / "silent.wav", np.zeros(32000, dtype=np.float32))
    write_wav(bad / "short.wav", synth_voice(9, seconds=0.2))
    (bad / "readme.wav").write_text("hello, I am a text file")
    stereo = np.stack([synth_voice(0, seconds=1.2, sr=44100)] * 2, axis=1)
    sf.write(bad / "stereo44k.wav", stereo, 44100)  # good: down-mixed and resampled

    prep = prepare(replace(BASE, source=str(speaker_tree), utts_per_speaker=9, n_enrolled=None), progress=False)
    reasons = {Path(p).name: r for p, r in zip(prep.rejects.path, prep.rejects.reason)}
    assert reasons == {"corrupt.wav": "unreadable", "empty.wav": "empty", "silent.wav": "silent",
                       "short.wav": "too_short", "readme.wav": "unreadable"}
    assert all(Path(p).name in d for p, d in zip(prep.rejects.path, prep.rejects.detail))
    # Every good file reaches the manifest: 6 speakers x 8, plus the stereo 44.1 kHz one.
    assert prep.n_valid == 49 and len(prep.manifest) == 49
    stereo = prep.manifest[prep.manifest.path.str.endswith("stereo44k.wav")].iloc[0]
    assert (stereo.channels, stereo.sample_rate) == (2, 44100)
    assert list(prep.manifest.columns) == MANIFEST_COLUMNS


def test_duplicate_audio_dropped(speaker_tree: Path) -> None:
    shutil.copy(speaker_tree / "spk01" / "utt00.wav", speaker_tree / "spk01" / "copy.wav")
    prep = prepare(replace(BASE, source=str(speaker_tree)), progress=False)
    dup = prep.rejects[prep.rejects.reason == "duplicate_audio"]
    assert len(dup) == 1 and "same audio as" in dup.detail.iloc[0]
    assert prep.manifest.content_hash.is_unique


def test_splits_disjoint_and_deterministic(speaker_tree: Path) -> None:
    params = replace(BASE, source=str(speaker_tree))
    a, b = prepare(params, progress=False), prepare(params, progress=False)
    pd.testing.assert_frame_equal(a.manifest, b.manifest)
    m = a.manifest
    enrolled, unknown = set(m[m.role == "enrolled"].speaker), set(m[m.role == "unknown"].speaker)
    assert len(enrolled) == 4 and len(unknown) == 2 and not enrolled & unknown
    train_ids = set(m[(m.role == "enrolled") & (m.split == "train")].utt_id)
    held = set(m[(m.role == "enrolled") & (m.split != "train")].utt_id)
    assert not train_ids & held
    assert not set(m[m.split == "train"].speaker) & unknown
    report = data_report(a)
    assert report["speakers"] == {"enrolled": 4, "unknown_val": 1, "unknown_test": 1, "background": 0}
    assert report["utterances"]["enrolled_train"] == 12


def test_dusha_fixture_through_prepare(tmp_path: Path) -> None:
    (tmp_path / "wavs").symlink_to(REPO / "data" / "default", target_is_directory=True)
    manifest = tmp_path / "crowd_train.jsonl"
    shutil.copy(REPO / "tests" / "fixtures" / "dusha" / "crowd_train.jsonl", manifest)
    params = replace(BASE, adapter="dusha", source=str(manifest), min_utts=4, utts_per_speaker=4, train_per_speaker=2,
                     val_per_speaker=1, n_enrolled=2, unknown_utts_per_speaker=4, unknown_val_fraction=0.0)
    prep = prepare(params, progress=False)
    assert len(prep.manifest) == 12  # 36 annotations -> 12 distinct speaker_text rows
    assert prep.manifest.text.is_unique
    assert (prep.rejects.reason == "bad_manifest_row").sum() == 2
    assert prep.manifest.groupby("role").speaker.nunique().to_dict() == {"enrolled": 2, "unknown": 1}


def test_stage_writes_declared_outputs_and_fails_fast(tmp_path: Path, speaker_tree: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    params = (REPO / "params.yaml").read_text().replace("source: data/default", f"source: {speaker_tree}")
    params = params.replace("min_utts: 8", "min_utts: 8\n  # test").replace("n_enrolled: null", "n_enrolled: 4")
    (tmp_path / "params.yaml").write_text(params)
    out = tmp_path / "out"
    argv = ["--params", str(tmp_path / "params.yaml"), "--out-dir", str(out / "prepared"), "--metrics", str(out / "data.json"),
            "--plots-dir", str(out / "plots")]
    monkeypatch.chdir(tmp_path)
    assert run_stage("prepare", argv) == 0, capsys.readouterr().err
    assert json.loads((out / "data.json").read_text())["speakers"]["enrolled"] == 4
    assert len(pd.read_parquet(out / "prepared" / "manifest.parquet")) > 0
    assert (out / "plots" / "utts_per_speaker.png").stat().st_size > 1000
    (tmp_path / "params.yaml").write_text(params.replace("silence_db:", "silence_dbfs:"))
    capsys.readouterr()
    assert run_stage("prepare", argv) == 2
    assert "prepare.silence_dbfs" in capsys.readouterr().err


@pytest.mark.integration
def test_az_digits_roles(shared_data: Path) -> None:
    params = replace(BASE, source=str(shared_data / "az_digits"), min_utts=20, utts_per_speaker=20, train_per_speaker=5,
                     val_per_speaker=5, n_enrolled=40, unknown_utts_per_speaker=20, n_jobs=2, seed=42)
    prep = prepare(params, progress=False)
    report = data_report(prep)
    assert report["speakers"]["enrolled"] == 40
    assert report["speakers"]["unknown_val"] + report["speakers"]["unknown_test"] == 19
    assert report["utterances"]["enrolled_train"] == 200 and report["utterances"]["enrolled_test"] == 400
    assert report["rejected"] == len(prep.rejects)
