from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soxr
from conftest import synth_voice

from voiceid.config import ConfigError, from_mapping
from voiceid.features.params import FeatureParams
from voiceid.features.signal import (
    clip_spectra,
    compute_sets,
    estimate_tuning,
    feature_names,
    feature_vector,
    logmel,
    spectral_descriptors,
)
from voiceid.features.tables import (
    META_COLUMNS,
    read_feature_table,
    read_logmel,
    write_feature_table,
    write_logmel_table,
)

P = FeatureParams()


def test_vector_sets_have_documented_layout() -> None:
    out = compute_sets(synth_voice(1, seconds=1.2), 16000, P.sets, P)
    assert {k: v.shape for k, v in out.items()} == {
        "seed498": (498,), "mfcc60": (60,), "extended": (260,), "logmel": (1 + 19200 // 160, 80)}
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in out.values())
    # mfcc60 is exactly the seed's MFCC block, which sits after chroma (36) and mel (384)
    np.testing.assert_array_equal(out["mfcc60"], out["seed498"][420:480])
    names = feature_names("seed498")
    assert len(names) == 498 and names[0] == "chroma_mean_0" and names[36] == "mel_mean_0"
    assert names[420:423] == ["mfcc_mean_0", "mfcc_mean_1", "mfcc_mean_2"] and names[-1] == "tonnetz_max_5"
    assert feature_names("mfcc60") == names[420:480]
    assert len(feature_names("extended")) == 260 and feature_names("extended")[-1] == "zcr_max"
    # mean <= max and min <= mean inside each block of the seed layout
    seed = out["seed498"]
    for start, n in ((0, 12), (36, 128), (420, 20), (480, 6)):
        mean, lo, hi = seed[start : start + n], seed[start + n : start + 2 * n], seed[start + 2 * n : start + 3 * n]
        assert (lo <= mean + 1e-6).all() and (mean <= hi + 1e-6).all()


def test_different_voices_give_different_vectors() -> None:
    a = feature_vector("mfcc60", synth_voice(1), 16000, P)
    b = feature_vector("mfcc60", synth_voice(7), 16000, P)
    again = feature_vector("mfcc60", synth_voice(1), 16000, P)
    np.testing.assert_array_equal(a, again)
    assert np.abs(a - b).max() > 1.0


def test_inference_path_equals_stage_path_at_any_input_rate() -> None:
    wave16 = synth_voice(3, seconds=1.0)
    wave44 = soxr.resample(wave16, 16000, 44100, quality="HQ").astype(np.float32)
    # the stage decodes with load_audio (soxr HQ to 16 kHz); feature_vector must do the same
    via_pipeline = soxr.resample(wave44, 44100, 16000, quality="HQ").astype(np.float32)
    for name in ("seed498", "extended"):
        np.testing.assert_array_equal(
            feature_vector(name, wave44, 44100, P), compute_sets(via_pipeline, 16000, (name,), P)[name])
    np.testing.assert_array_equal(logmel(wave44, 44100, P), logmel(via_pipeline, 16000, P))
    with pytest.raises(ValueError, match="not a vector feature set"):
        feature_vector("logmel", wave16, 16000, P)
    with pytest.raises(ValueError, match="unknown feature set"):
        compute_sets(wave16, 16000, ("mfcc61",), P)


def test_logmel_framing_follows_params() -> None:
    wave = synth_voice(2, seconds=1.0)
    m = logmel(wave, 16000, P)
    assert m.shape == (101, 80) and m.dtype == np.float32  # centred 10 ms hops: 1 + 16000 // 160
    coarse = logmel(wave, 16000, replace(P, logmel=replace(P.logmel, n_mels=40, hop_ms=20.0)))
    assert coarse.shape == (51, 40)
    # the floor keeps digital silence finite: log(0 + 1e-6)
    silent = logmel(np.zeros(8000, np.float32), 16000, P)
    np.testing.assert_allclose(silent, np.log(1e-6), rtol=1e-6)
    # a louder copy shifts every bin by log(gain^2) where there is signal
    louder = logmel(wave * 2.0, 16000, P)
    voiced = m > np.log(1e-6) + 10
    np.testing.assert_allclose((louder - m)[voiced], np.log(4.0), atol=1e-3)


def test_silence_gives_finite_features() -> None:
    out = compute_sets(np.zeros(16000, np.float32), 16000, P.sets, P)
    assert all(np.isfinite(v).all() for v in out.values())


def test_fast_tuning_equals_librosa_on_detuned_tones() -> None:
    t = np.arange(int(1.5 * 22050)) / 22050
    for cents in (-40, 0, 17, 33):
        f0 = 220.0 * 2 ** (cents / 1200)
        y = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)).astype(np.float32)
        power = np.abs(librosa.stft(y)) ** 2
        ours = estimate_tuning(power)
        assert ours == librosa.estimate_tuning(S=power, sr=22050, bins_per_octave=12)
        assert abs(ours - cents / 100) <= 0.1  # and it tracks the detuning (parabolic peaks are biased a little)


def test_spectral_descriptors_equal_librosa_definitions() -> None:
    wave = np.concatenate([synth_voice(4, seconds=0.8), np.zeros(8000, np.float32)])  # voiced then silent frames
    sp = clip_spectra(wave, 16000)
    ours = spectral_descriptors(sp)
    centroid = librosa.feature.spectral_centroid(S=sp.mag, sr=22050)
    ref = np.concatenate([
        librosa.feature.rms(S=sp.mag),
        centroid,
        librosa.feature.spectral_bandwidth(S=sp.mag, sr=22050, centroid=centroid),
        librosa.feature.spectral_rolloff(S=sp.mag, sr=22050),
        librosa.feature.zero_crossing_rate(sp.y),
    ])
    assert ours.shape == ref.shape
    scale = np.abs(ref).max(axis=1, keepdims=True)
    assert (np.abs(ours - ref) <= 1e-5 * scale).all()
    assert ours[1, -1] == 0.0  # silent frame: centroid 0, as librosa


def test_feature_table_round_trip(tmp_path: Path) -> None:
    meta = pd.DataFrame({"utt_id": ["u1", "u2"], "speaker": ["a", "b"], "role": ["enrolled", "unknown"],
                         "split": ["train", "val"], "content_hash": ["h1", "h2"], "path": ["x", "y"]})
    X = np.arange(120, dtype=np.float64).reshape(2, 60)
    write_feature_table(tmp_path / "m.parquet", meta, X, feature_names("mfcc60"))
    got_meta, got_X = read_feature_table(tmp_path / "m.parquet")
    assert list(got_meta.columns) == list(META_COLUMNS)  # path is not part of the table contract
    assert got_meta.utt_id.tolist() == ["u1", "u2"]
    assert got_X.dtype == np.float32
    np.testing.assert_array_equal(got_X, X.astype(np.float32))
    raw = pd.read_parquet(tmp_path / "m.parquet")
    assert list(raw.columns[5:8]) == ["mfcc_mean_0", "mfcc_mean_1", "mfcc_mean_2"]
    with pytest.raises(ValueError, match="do not match"):
        write_feature_table(tmp_path / "bad.parquet", meta, X[:, :10], feature_names("mfcc60"))


def test_logmel_table_round_trip(tmp_path: Path) -> None:
    meta = pd.DataFrame({c: ["a", "b", "c"] for c in META_COLUMNS})
    rng = np.random.default_rng(0)
    mats = [rng.standard_normal((n, 80)).astype(np.float32) for n in (5, 101, 1)]
    write_logmel_table(tmp_path / "l.parquet", meta, mats)
    got_meta, got = read_logmel(tmp_path / "l.parquet")
    assert got_meta.utt_id.tolist() == ["a", "b", "c"]
    assert [g.shape for g in got] == [(5, 80), (101, 80), (1, 80)]
    for g, m in zip(got, mats):
        np.testing.assert_array_equal(g, m)
    raw = pd.read_parquet(tmp_path / "l.parquet")
    assert raw.n_mels.tolist() == [80, 80, 80]
    np.testing.assert_array_equal(np.asarray(raw.logmel[1][:80], np.float32), mats[1][0])  # row-major


def test_params_reject_bad_values() -> None:
    base = {"sets": ["mfcc60"], "sample_rate": 16000, "tonnetz_chroma": "stft", "delta_width": 9, "n_jobs": 1,
            "logmel": {"n_mels": 80, "win_ms": 25.0, "hop_ms": 10.0, "n_fft": 512, "fmin": 20.0, "fmax": 7600.0,
                       "log_floor": 1e-6}}
    assert from_mapping(FeatureParams, base, "features").sets == ("mfcc60",)
    for bad, match in (({"sets": ["mfcc61"]}, "features.sets"), ({"delta_width": 4}, "delta_width"),
                       ({"tonnetz_chroma": "cens"}, "tonnetz_chroma"), ({"sample_rate": 8000}, "Nyquist"),
                       ({"sets": ["mfcc60", "mfcc60"]}, "duplicates"), ({"n_mfcc": 13}, "features.n_mfcc")):
        with pytest.raises(ConfigError, match=match):
            from_mapping(FeatureParams, {**base, **bad}, "features")
