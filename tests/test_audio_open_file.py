"""load_audio_file: decoding an already-open file gives load_audio's clip, and never reads the name again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import synth_voice

from voiceid.data import audio
from voiceid.data.audio import UnreadableAudioError, load_audio, load_audio_file


@pytest.mark.parametrize("name", ["a.wav", "a.flac"])
def test_an_open_file_decodes_exactly_as_its_path(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    sf.write(path, synth_voice(seed=1, seconds=1.0, sr=8000), 8000)  # resampled to 16 kHz on the way
    with path.open("rb") as f:
        got = load_audio_file(f, path, 16000)
    want = load_audio(path, 16000)
    assert np.array_equal(got.wave, want.wave) and (got.sample_rate, got.orig_sample_rate) == (16000, 8000)


def test_errors_name_the_given_name_as_load_audio_does(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(UnreadableAudioError) as by_path:
        load_audio(text)
    with text.open("rb") as f, pytest.raises(UnreadableAudioError) as by_file:
        load_audio_file(f, text)
    assert str(by_file.value) == str(by_path.value)  # the file object's repr never shows


def test_the_fallback_decoder_reads_the_open_file_not_what_the_name_is_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = tmp_path / "clip.mp3"  # not a libsndfile-only suffix: a soundfile failure falls back to librosa
    sf.write(name, synth_voice(seed=1, seconds=1.0), 16000, format="WAV", subtype="PCM_16")
    want = load_audio(name).wave

    def no_soundfile(*args: Any, **kwargs: Any) -> Any:
        raise sf.SoundFileRuntimeError("simulated: soundfile cannot decode this")

    class NoSoundFile:  # librosa checks isinstance(x, sf.SoundFile): a class, then
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            no_soundfile()

    with name.open("rb") as f:
        name.unlink()
        sf.write(name, synth_voice(seed=2, seconds=1.0), 16000, format="WAV", subtype="PCM_16")  # other audio, as decodable
        # soundfile off everywhere (librosa's own attempt too): only audioread's reader, handed a path, can decode
        monkeypatch.setattr(audio.sf, "read", no_soundfile)
        monkeypatch.setattr(audio.sf, "SoundFile", NoSoundFile)
        got = load_audio_file(f, name).wave
    assert np.allclose(got, want, atol=1e-6)
