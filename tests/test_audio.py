from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import synth_voice, write_wav

from voiceid.data.audio import (
    EmptyAudioError,
    SilentAudioError,
    TooShortAudioError,
    UnreadableAudioError,
    content_hash,
    load_audio,
    validate_clip,
)


def test_stereo_44k_is_downmixed_and_resampled(tmp_path: Path) -> None:
    mono = synth_voice(1, seconds=1.0, sr=44100)
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    path = tmp_path / "s.wav"
    sf.write(path, stereo, 44100)
    clip = load_audio(path, 16000)
    assert clip.orig_channels == 2 and clip.orig_sample_rate == 44100
    assert clip.wave.ndim == 1 and clip.sample_rate == 16000
    assert abs(clip.duration - 1.0) < 1e-3
    assert clip.wave.dtype == np.float32


@pytest.mark.parametrize("ext", ["flac", "ogg"])
def test_other_containers_decode(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"a.{ext}"
    sf.write(path, synth_voice(2), 16000)
    assert load_audio(path).duration == pytest.approx(1.5, abs=0.01)


def test_errors_carry_path_expected_found(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(UnreadableAudioError) as info:
        load_audio(text)
    assert str(text) in str(info.value) and info.value.reason == "unreadable"
    notes = tmp_path / "notes.md"
    notes.write_text("# not audio either")
    with pytest.raises(UnreadableAudioError, match="Format not recognised"):
        load_audio(notes)
    empty = tmp_path / "empty.wav"
    empty.touch()
    with pytest.raises(EmptyAudioError, match="0-byte"):
        load_audio(empty)
    with pytest.raises(UnreadableAudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")


def test_validate_short_and_silent(tmp_path: Path) -> None:
    short = load_audio(write_wav(tmp_path / "short.wav", synth_voice(3, seconds=0.2)))
    with pytest.raises(TooShortAudioError) as info:
        validate_clip(short, "short.wav", min_duration=0.5)
    assert info.value.expected == ">= 0.50 s" and info.value.found.startswith("0.200")
    quiet = load_audio(write_wav(tmp_path / "quiet.wav", np.full(16000, 1e-5, dtype=np.float32)))
    with pytest.raises(SilentAudioError):
        validate_clip(quiet, "quiet.wav", min_duration=0.5)
    validate_clip(load_audio(write_wav(tmp_path / "ok.wav", synth_voice(4))), "ok.wav", min_duration=0.5)


def test_content_hash_ignores_container(tmp_path: Path) -> None:
    wave = np.round(synth_voice(5) * 32767).astype(np.int16)
    sf.write(tmp_path / "a.wav", wave, 16000, subtype="PCM_16")
    sf.write(tmp_path / "a.flac", wave, 16000, subtype="PCM_16")
    h_wav = content_hash(load_audio(tmp_path / "a.wav").wave)
    assert h_wav == content_hash(load_audio(tmp_path / "a.flac").wave)
    assert h_wav != content_hash(load_audio(write_wav(tmp_path / "b.wav", synth_voice(6))).wave)
