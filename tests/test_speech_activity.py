"""Silence is judged by speech activity, not level; sessions never straddle train and test."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_wav

from voiceid.data.audio import Clip, SilentAudioError, frame_rms_db, load_audio, validate_clip
from voiceid.data.prepare import PrepareParams, prepare
from voiceid.data.splits import SplitPlan, assign_roles

REPO = Path(__file__).resolve().parents[1]
SPEECH = sorted((REPO / "data" / "default").glob("ls*/*.flac"))


def _scaled(wave: np.ndarray, loudest_dbfs: float) -> np.ndarray:
    gain = 10 ** ((loudest_dbfs - frame_rms_db(wave, 16000).max()) / 20)
    return (wave * gain).astype(np.float32)


def test_quiet_real_speech_at_minus_55_dbfs_is_kept() -> None:
    for path in SPEECH[:5]:
        clip = load_audio(path)
        quiet = Clip(_scaled(clip.wave, -55.0), 16000, 16000, 1)
        assert frame_rms_db(quiet.wave, 16000).max() == pytest.approx(-55.0, abs=0.01)
        validate_clip(quiet, path, min_duration=0.5)  # the old absolute -50 dBFS rule rejected this


def _noise(kind: str, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    if kind == "digital silence":
        return np.zeros(n, np.float32)
    if kind == "dc offset":
        return np.full(n, 0.2, np.float32)
    if kind == "dc offset + dither":
        return (0.2 + rng.normal(0, 1e-5, n)).astype(np.float32)
    if kind == "white noise":
        return rng.normal(0, 0.05, n).astype(np.float32)
    if kind == "pink noise":
        spectrum = np.fft.rfft(rng.normal(size=n))
        spectrum /= np.maximum(np.sqrt(np.arange(len(spectrum))), 1.0)
        x = np.fft.irfft(spectrum, n)
        return (0.05 * x / x.std()).astype(np.float32)
    if kind == "mains hum":
        t = np.arange(n) / 16000
        return (0.1 * np.sin(2 * np.pi * 50 * t) + rng.normal(0, 1e-3, n)).astype(np.float32)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["digital silence", "dc offset", "dc offset + dither", "white noise", "pink noise", "mains hum"])
def test_clips_without_speech_are_rejected_with_the_reason(kind: str) -> None:
    clip = Clip(_noise(kind), 16000, 16000, 1)
    with pytest.raises(SilentAudioError) as info:
        validate_clip(clip, f"{kind}.wav", min_duration=0.5)
    err = info.value
    assert err.reason == "silent" and err.path == f"{kind}.wav"
    if kind.startswith(("digital", "dc offset")):  # a constant offset is silence once the DC is removed
        assert "digital silence" in err.found
    else:
        assert "stationary noise" in err.found and "above the noise floor" in err.expected


def test_prepare_keeps_quiet_speech_and_rejects_noise_files(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    for i, path in enumerate(SPEECH[:12]):
        wave = load_audio(path).wave
        write_wav(root / f"spk{i % 2}" / f"quiet{i}.wav", _scaled(wave, -55.0))
    for kind in ("digital silence", "dc offset", "white noise", "pink noise"):
        write_wav(root / "spk0" / f"{kind.replace(' ', '_')}.wav", _noise(kind))
    params = PrepareParams(adapter="folder", source=str(root), min_utts=4, utts_per_speaker=6, train_per_speaker=2,
                           val_per_speaker=1, unknown_val_fraction=0.0, n_jobs=1)
    prep = prepare(params, progress=False)
    assert len(prep.manifest) == 12 and prep.manifest["path"].str.contains("quiet").all()
    rejected = dict(zip(prep.rejects["path"].map(lambda p: Path(p).stem), prep.rejects["reason"], strict=True))
    assert rejected == {"digital_silence": "silent", "dc_offset": "silent", "white_noise": "silent", "pink_noise": "silent"}


# --- session-aware splits ---------------------------------------------------------------------


def _sessions(n_speakers: int = 8, groups_per: int = 3, utts_per_group: int = 4) -> pd.DataFrame:
    rows = [
        {"utt_id": f"s{s}/g{g}/{u}", "speaker": f"s{s}", "group": f"g{g}", "duration": 1.0 + u}
        for s in range(n_speakers) for g in range(groups_per) for u in range(utts_per_group)
    ]
    return pd.DataFrame(rows)


def _leaks(out: pd.DataFrame) -> list[str]:
    enrolled = out[out["role"] == "enrolled"]
    return [
        spk for spk, g in enrolled.groupby("speaker")
        if set(g.loc[g["split"] == "train", "group"]) & set(g.loc[g["split"] == "test", "group"])
    ]


PLAN = SplitPlan(min_utts=8, utts_per_speaker=8, train_per_speaker=3, val_per_speaker=2, n_enrolled=6, split_by="group")


@pytest.mark.parametrize("seed", range(5))
def test_no_session_of_an_enrolled_speaker_is_in_both_train_and_test(seed: int) -> None:
    out = assign_roles(_sessions(), replace(PLAN, seed=seed))
    enrolled = out[out["role"] == "enrolled"]
    assert (enrolled["split_by"] == "group").all()
    assert not _leaks(out)
    assert enrolled.groupby(["speaker", "split"]).size().unstack().to_dict("list") == {
        "test": [3] * 6, "train": [3] * 6, "val": [2] * 6,
    }


def test_utterance_split_mixes_sessions_which_group_split_prevents() -> None:
    mixed = assign_roles(_sessions(), replace(PLAN, split_by="utterance"))
    assert _leaks(mixed)  # the check above can see a leak


def test_a_single_session_speaker_falls_back_to_an_utterance_split() -> None:
    data = _sessions(groups_per=1, utts_per_group=10)
    out = assign_roles(data, PLAN)
    enrolled = out[out["role"] == "enrolled"]
    assert (enrolled["split_by"] == "utterance").all() and len(enrolled) == 6 * 8


def test_default_order_does_not_keep_the_longest_clips() -> None:
    data = _sessions(groups_per=1, utts_per_group=20).assign(duration=lambda d: np.arange(len(d), dtype=float))
    plan = SplitPlan(min_utts=8, utts_per_speaker=8, train_per_speaker=3, val_per_speaker=2, n_enrolled=6)
    assert plan.order == "random"
    kept = assign_roles(data, plan)
    longest = data.sort_values("duration").groupby("speaker").tail(8)
    assert set(kept.loc[kept.role == "enrolled", "utt_id"]) != set(longest["utt_id"])


def test_one_unknown_speaker_cannot_be_split_between_val_and_test() -> None:
    data = _sessions(n_speakers=7)
    with pytest.raises(ValueError, match="prepare.unknown_val_fraction"):
        assign_roles(data, PLAN)  # 6 enrolled, 1 unknown, fraction 0.5
    assert set(assign_roles(data, replace(PLAN, unknown_val_fraction=0.0)).query("role == 'unknown'")["split"]) == {"test"}


def test_group_from_folder_layout_and_file_name_pattern(tmp_path: Path) -> None:
    from voiceid.data.adapters import scan_folder
    from voiceid.data.prepare import session_of

    for rel in ("id1/videoA/00001.wav", "id1/videoB/00002.wav", "id2/flat.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    got = scan_folder(tmp_path).candidates.set_index("utt_id")["group"].to_dict()
    assert got["id1/videoA/00001.wav"] == "videoA" and got["id1/videoB/00002.wav"] == "videoB"
    assert pd.isna(got["id2/flat.wav"])
    assert session_of("x/ls0019/19-198-0001.flac", r"^[^-]+-([^-]+)-") == "198"
    assert session_of("x/flat.wav", r"^[^-]+-([^-]+)-") is None
