"""Feature set ``dvector``: Resemblyzer's pretrained GE2E encoder on the pipeline waveform.

Real speech from ``data/default`` (LibriSpeech test-other excerpts, ``<speaker>/<utt>.flac``),
which the encoder never saw in training.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soxr
import yaml
from conftest import REPO
from stage_runner import run_stage

from voiceid.config import ConfigError, from_mapping
from voiceid.data.audio import content_hash, load_audio
from voiceid.features import dvector as dv
from voiceid.features.extract import extract_features, set_params_key
from voiceid.features.params import SET_NAMES, VECTOR_SETS, DvectorParams, FeatureParams
from voiceid.features.signal import compute_sets, feature_names, feature_vector
from voiceid.features.tables import META_COLUMNS, read_feature_table
from voiceid.scoring.verification import eer

DATA = REPO / "data" / "default"
P = FeatureParams(sets=("dvector",), n_jobs=1)


def real_files(n_speakers: int, per_speaker: int) -> list[tuple[str, Path]]:
    """(speaker, path): the first utterances of the first multi-utterance speakers (sorted, so fixed)."""
    with (DATA / "metadata.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["role"] == "multi"]
    speakers = sorted({r["speaker"] for r in rows})[:n_speakers]
    return [
        (s, DATA / r["path"])
        for s in speakers
        for r in sorted((r for r in rows if r["speaker"] == s), key=lambda r: r["path"])[:per_speaker]
    ]


def manifest_for(files: list[tuple[str, Path]]) -> pd.DataFrame:
    rows = []
    for k, (speaker, path) in enumerate(files):
        wave = load_audio(path).wave
        rows.append(dict(utt_id=f"u{k:03d}", path=str(path), speaker=speaker, role="enrolled", split="train",
                         duration=len(wave) / 16000, sample_rate=16000, channels=1, content_hash=content_hash(wave),
                         text=None))
    return pd.DataFrame(rows)


def test_resemblyzer_installed_without_the_typing_backport() -> None:
    assert importlib.metadata.version("resemblyzer") == "0.1.4"
    spec = importlib.util.find_spec("resemblyzer")
    assert spec is not None and spec.origin is not None
    weights = Path(spec.origin).parent / "pretrained.pt"
    assert weights.stat().st_size > 10_000_000  # the pretrained encoder ships in the wheel
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("typing")  # the PyPI backport shadows the stdlib module on 3.11


def test_pretrained_encoder_is_deterministic_and_matches_resemblyzer() -> None:
    wave = load_audio(real_files(1, 1)[0][1]).wave
    a = feature_vector("dvector", wave, 16000, P)
    b = feature_vector("dvector", wave.copy(), 16000, P)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (256,) and a.dtype == np.float32
    assert abs(np.linalg.norm(a) - 1) < 1e-5 and a.min() >= 0  # ReLU then L2 norm, as GE2E
    assert dv.encoder() is dv.encoder()  # loaded once per process

    # the same numbers as resemblyzer's own recipe: preprocess_wav (volume + VAD) then embed_utterance
    resemblyzer = dv._import_resemblyzer()
    with dv.torch_threads(1):
        ref = dv.encoder().embed_utterance(resemblyzer.preprocess_wav(wave))
    np.testing.assert_allclose(a, ref, atol=1e-6)
    # the VAD knob is live: without it the clip's pauses are embedded too
    assert not np.array_equal(feature_vector("dvector", wave, 16000, replace(P, dvector=DvectorParams(vad=False))), a)

    # inference at another input rate goes through the stage's path (soxr HQ to the pipeline rate)
    wave44 = soxr.resample(wave, 16000, 44100, quality="HQ").astype(np.float32)
    via_pipeline = soxr.resample(wave44, 44100, 16000, quality="HQ").astype(np.float32)
    np.testing.assert_array_equal(feature_vector("dvector", wave44, 44100, P), compute_sets(via_pipeline, 16000, ("dvector",), P)["dvector"])


def test_same_speaker_pairs_score_higher_than_different_speakers() -> None:
    files = real_files(6, 3)  # 18 utterances: 18 same-speaker pairs, 135 different-speaker pairs
    E = np.stack([feature_vector("dvector", load_audio(path).wave, 16000, P) for _, path in files])
    speakers = np.array([s for s, _ in files])
    iu = np.triu_indices(len(files), 1)
    scores, same = (E @ E.T)[iu], np.equal.outer(speakers, speakers)[iu]
    assert same.sum() == 18
    # measured: same 0.88, different 0.54, EER 0.0 (random weights would give ~0.5)
    assert scores[same].mean() - scores[~same].mean() > 0.2
    rate, _ = eer(scores, same.astype(int))
    assert rate <= 0.1


def test_silence_is_an_error_and_no_voice_embeds_the_whole_clip() -> None:
    with pytest.raises(ValueError, match="silent"):
        dv.dvector(np.zeros(16000, np.float32), 16000, DvectorParams())
    noise = (1e-4 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)
    audio = dv._import_resemblyzer().audio
    assert audio.trim_long_silences(audio.normalize_volume(noise, -30, increase_only=True)).size == 0  # VAD: no voice
    assert dv.preprocess(noise, vad=True).size == noise.size
    assert np.isfinite(dv.dvector(noise, 16000, DvectorParams())).all()


def test_params_and_cache_key() -> None:
    assert "dvector" in SET_NAMES and "dvector" in VECTOR_SETS
    assert feature_names("dvector") == [f"dvector_{i}" for i in range(256)]
    knobs: dict[str, object] = {"vad": True, "rate": 1.3, "min_coverage": 0.75}
    base = {"sets": ["dvector"], "dvector": knobs}
    assert from_mapping(FeatureParams, base, "features").dvector == DvectorParams()
    for bad, match in (({"rate": 0.5}, "features.dvector.rate"), ({"min_coverage": 0.0}, "features.dvector.min_coverage"),
                       ({"window": 2}, "features.dvector.window")):
        with pytest.raises(ConfigError, match=match):
            from_mapping(FeatureParams, {**base, "dvector": {**knobs, **bad}}, "features")
    both = FeatureParams(sets=("mfcc60", "dvector"))
    other = replace(both, dvector=DvectorParams(vad=False))
    assert set_params_key("dvector", both) != set_params_key("dvector", other)  # dvector knobs re-key dvector...
    assert set_params_key("mfcc60", both) == set_params_key("mfcc60", other)  # ...and nothing else


def test_parallel_workers_give_the_serial_vectors(tmp_path: Path) -> None:
    manifest = manifest_for(real_files(2, 2))
    parallel = extract_features(manifest, replace(P, n_jobs=2), tmp_path / "cache", progress=False)
    serial = extract_features(manifest, P, None, progress=False)
    assert parallel.n_computed == 4 and not parallel.rejects
    for got, want in zip(parallel.arrays["dvector"], serial.arrays["dvector"], strict=True):
        np.testing.assert_array_equal(got, want)  # one torch thread everywhere: identical numbers
    assert len(list((tmp_path / "cache" / "dvector").rglob("*.npy"))) == 4


def test_stage_writes_dvector_table_and_rejects_a_corrupt_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = real_files(2, 2)
    manifest = manifest_for(files)
    corrupt = tmp_path / "audio" / "spkX" / "broken.flac"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 8)
    manifest = pd.concat([manifest, manifest.iloc[[0]].assign(utt_id="u_bad", path=str(corrupt), content_hash="0" * 64)],
                         ignore_index=True)
    monkeypatch.chdir(tmp_path)
    Path("data/prepared").mkdir(parents=True)
    manifest.to_parquet("data/prepared/manifest.parquet", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert "dvector" in params["features"]["sets"] and "dvector" in params["grid"]["feature_sets"]
    params["features"]["n_jobs"] = 1  # every set of the repo's params, serially (no worker start-up)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage("features", ["--no-progress"]) == 0

    meta, X = read_feature_table("data/features/dvector.parquet")
    assert meta.utt_id.tolist() == ["u000", "u001", "u002", "u003"]  # the corrupt file is dropped
    assert X.shape == (4, 256) and np.isfinite(X).all()
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    raw = pd.read_parquet("data/features/dvector.parquet")
    assert list(raw.columns) == [*META_COLUMNS, *feature_names("dvector")]
    rejects = pd.read_csv("data/features/rejects.csv")
    assert rejects.path.tolist() == [str(corrupt)] and rejects.utt_id.tolist() == ["u_bad"]
    assert rejects.reason[0].startswith("unreadable")
    metrics = json.loads(Path("metrics/features.json").read_text())
    assert metrics["dims"]["dvector"] == 256 and metrics["rejected"] == 1

    assert run_stage("features", ["--no-progress"]) == 0  # re-run: the kept files come from the cache, same vectors
    assert json.loads(Path("metrics/features.json").read_text())["cached"] == 4
    np.testing.assert_array_equal(read_feature_table("data/features/dvector.parquet")[1], X)


def test_dvc_yaml_declares_dvector_for_features_and_grid() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stages["features"]["outs"]]
    assert "data/features/dvector.parquet" in outs
    assert "data/features/dvector.parquet" in stages["grid"]["deps"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    declared = {Path(o).stem for o in outs if o.endswith(".parquet")}
    assert declared == set(params["features"]["sets"])
