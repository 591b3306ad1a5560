from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, synth_voice, write_wav
from stage_runner import run_stage

import voiceid.features.extract as featcache
from voiceid.data.audio import content_hash, load_audio
from voiceid.features.extract import (
    FeatureCache,
    ManifestError,
    extract_features,
    write_tables,
)
from voiceid.features.params import FeatureParams
from voiceid.features.tables import read_feature_table, read_logmel

P = FeatureParams(n_jobs=1)


def manifest_for(paths: list[Path], start: int = 0) -> pd.DataFrame:
    """Rows in the prepare stage's schema for already-written files."""
    rows = []
    for k, path in enumerate(paths, start):
        clip = load_audio(path)
        rows.append(dict(utt_id=f"u{k:03d}", path=str(path), speaker=f"spk{k % 3}", role="enrolled", split="train",
                         duration=clip.duration, sample_rate=16000, channels=1, content_hash=content_hash(clip.wave),
                         text=None))
    return pd.DataFrame(rows)


def corpus(root: Path, n: int, start: int = 0) -> list[Path]:
    return [write_wav(root / f"spk{k % 3}" / f"utt{k:03d}.wav", synth_voice(seed=k, seconds=0.6 + 0.05 * (k % 4)))
            for k in range(start, start + n)]


def test_adding_10_files_computes_only_those_10(tmp_path: Path) -> None:
    params = P
    old = manifest_for(corpus(tmp_path / "audio", 6))
    first = extract_features(old, params, tmp_path / "cache", progress=False)
    assert (first.n_computed, first.n_cached) == (6, 0)

    both = pd.concat([old, manifest_for(corpus(tmp_path / "audio", 10, start=6), start=6)], ignore_index=True)
    second = extract_features(both, params, tmp_path / "cache", progress=False)
    assert (second.n_computed, second.n_cached) == (10, 6)
    assert second.meta.utt_id.tolist() == both.utt_id.tolist()  # manifest order, whatever finished first
    fresh = extract_features(both, P, None, progress=False)
    for name in params.sets:
        for got, want in zip(second.arrays[name], fresh.arrays[name]):
            np.testing.assert_array_equal(got, want)

    third = extract_features(both, params, tmp_path / "cache", progress=False)
    assert (third.n_computed, third.n_cached) == (0, 16)


def test_parallel_workers_give_the_same_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Few short files: the cost is the two worker processes importing librosa (a few seconds), not the files.
    manifest = manifest_for(corpus(tmp_path / "audio", 4))
    serial = extract_features(manifest, P, None, progress=False)

    def not_in_this_process(*args):  # noqa: ANN002, ANN202
        raise AssertionError("n_jobs=2 computed a file in the main process instead of a worker")

    # Workers import the module afresh, so they keep the real compute_file; a file computed
    # here would raise (and be rejected), so the run below really is the parallel path.
    monkeypatch.setattr(featcache, "compute_file", not_in_this_process)
    parallel = extract_features(manifest, replace(P, n_jobs=2), tmp_path / "cache", progress=False)
    assert parallel.rejects == []
    assert parallel.n_computed == 4 and parallel.meta.utt_id.tolist() == manifest.utt_id.tolist()
    pd.testing.assert_frame_equal(parallel.meta, serial.meta)
    assert set(parallel.arrays) == set(serial.arrays) == set(P.sets)
    for name in P.sets:
        assert len(parallel.arrays[name]) == len(serial.arrays[name]) == 4
        for got, want in zip(parallel.arrays[name], serial.arrays[name]):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    cached = extract_features(manifest, P, tmp_path / "cache", progress=False)  # what the workers' results cached
    assert cached.n_cached == 4
    for name in P.sets:
        for got, want in zip(cached.arrays[name], serial.arrays[name]):
            np.testing.assert_array_equal(got, want)


def test_changing_one_sets_params_recomputes_only_that_set(tmp_path: Path) -> None:
    manifest = manifest_for(corpus(tmp_path / "audio", 3))
    extract_features(manifest, P, tmp_path / "cache", progress=False)
    seed_entries = sorted((tmp_path / "cache" / "seed498").rglob("*.npy"))
    stamps = [p.stat().st_mtime_ns for p in seed_entries]

    wider = replace(P, delta_width=5)
    again = extract_features(manifest, wider, tmp_path / "cache", progress=False)
    assert again.n_computed == 3
    assert len(list((tmp_path / "cache" / "extended").rglob("*.npy"))) == 6  # old and new params side by side
    assert [p.stat().st_mtime_ns for p in seed_entries] == stamps  # seed498 entries were reused, not rewritten
    assert extract_features(manifest, wider, tmp_path / "cache", progress=False).n_computed == 0


def test_bad_files_rejected_with_path_and_reason_others_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = corpus(tmp_path / "audio", 4)
    manifest = manifest_for(good)
    not_audio = tmp_path / "audio" / "spk0" / "notes.wav"
    not_audio.write_text("not audio")
    stale = manifest.iloc[[0]].assign(utt_id="stale", content_hash="0" * 64)  # audio no longer matches the hash
    broken = manifest.iloc[[0]].assign(utt_id="broken", path=str(not_audio), content_hash="1" * 64)
    manifest = pd.concat([manifest, broken, stale], ignore_index=True)

    real = featcache.compute_sets
    poisoned = str(good[2])
    poisoned_wave = load_audio(poisoned).wave

    def nan_for_one_file(wave, sample_rate, sets, params):  # noqa: ANN001, ANN202
        out = real(wave, sample_rate, sets, params)
        if np.array_equal(wave, poisoned_wave):
            out["mfcc60"] = np.full_like(out["mfcc60"], np.nan)
        return out

    monkeypatch.setattr(featcache, "compute_sets", nan_for_one_file)  # n_jobs=1 runs in this process
    result = extract_features(manifest, P, tmp_path / "cache", progress=False)
    rejects = {r.utt_id: r for r in result.rejects}
    assert set(rejects) == {"u002", "broken", "stale"}
    assert rejects["u002"].path == poisoned and rejects["u002"].reason.startswith("non_finite_features")
    assert "mfcc60" in rejects["u002"].reason
    assert rejects["broken"].path == str(not_audio) and rejects["broken"].reason.startswith("unreadable")
    assert rejects["stale"].reason.startswith("content_changed")
    assert result.meta.utt_id.tolist() == ["u000", "u001", "u003"]  # dropped from every set alike
    assert all(len(a) == 3 for a in result.arrays.values())

    featcache.write_rejects(result.rejects, tmp_path / "rejects.csv")
    table = pd.read_csv(tmp_path / "rejects.csv")
    assert list(table.columns) == ["path", "utt_id", "reason"] and len(table) == 3

    monkeypatch.setattr(featcache, "compute_sets", real)
    retry = extract_features(manifest, P, tmp_path / "cache", progress=False)  # rejects are not cached
    assert retry.n_computed == 3 and {r.utt_id for r in retry.rejects} == {"broken", "stale"}


def _dies_on_save(monkeypatch: pytest.MonkeyPatch, after: int, exc: BaseException) -> dict[str, int]:
    """np.save in the cache writes part of an entry and then fails, from the ``after``-th write on."""
    real = featcache.np.save
    calls = {"n": 0}

    def save(fh, arr, allow_pickle=False):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] > after:
            fh.write(b"\x93NUMPY partial")  # the torn bytes a crash mid-write leaves
            raise exc
        return real(fh, arr, allow_pickle=allow_pickle)

    monkeypatch.setattr(featcache.np, "save", save)
    return calls


def test_killed_run_resumes_without_recomputing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = manifest_for(corpus(tmp_path / "audio", 8))
    fresh = extract_features(manifest, P, None, progress=False)
    n_sets = len(P.sets)
    # Killed (SIGINT) in the middle of writing the first set of the 6th file: 5 files fully cached.
    _dies_on_save(monkeypatch, after=5 * n_sets, exc=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        extract_features(manifest, P, tmp_path / "cache", progress=False)
    monkeypatch.undo()

    assert not list((tmp_path / "cache").rglob("*.tmp"))  # the torn write left no temporary behind
    entries = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(entries) == 5 * n_sets  # and no torn entry under a real name
    for entry in entries:
        np.load(entry, allow_pickle=False)  # every entry on disk is whole
    resumed = extract_features(manifest, P, tmp_path / "cache", progress=False)
    assert (resumed.n_computed, resumed.n_cached) == (3, 5)
    for name in P.sets:
        for got, want in zip(resumed.arrays[name], fresh.arrays[name]):
            np.testing.assert_array_equal(got, want)
    assert extract_features(manifest, P, tmp_path / "cache", progress=False).n_cached == 8


def test_failed_cache_write_keeps_the_old_entry_and_a_rerun_heals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = manifest_for(corpus(tmp_path / "audio", 3))
    first = extract_features(manifest, P, tmp_path / "cache", progress=False)
    entries = sorted((tmp_path / "cache").rglob("*.npy"))
    before = {p: p.read_bytes() for p in entries}

    # Every lookup misses, so the run rewrites every entry in place of the good one already there.
    real_get = FeatureCache.get
    monkeypatch.setattr(FeatureCache, "get", lambda self, name, chash: None)
    _dies_on_save(monkeypatch, after=2, exc=OSError("disk full"))  # the 3rd rewrite dies half-way
    with pytest.raises(OSError, match="disk full"):
        extract_features(manifest, P, tmp_path / "cache", progress=False)
    monkeypatch.undo()
    assert FeatureCache.get is real_get

    assert not list((tmp_path / "cache").rglob("*.tmp"))
    assert sorted((tmp_path / "cache").rglob("*.npy")) == entries
    for path, content in before.items():  # the entry being rewritten is whole: old content, not torn bytes
        assert path.read_bytes() == content, path
    rerun = extract_features(manifest, P, tmp_path / "cache", progress=False)
    assert rerun.n_cached == 3
    for name in P.sets:
        for got, want in zip(rerun.arrays[name], first.arrays[name]):
            np.testing.assert_array_equal(got, want)


def test_failed_table_write_keeps_the_old_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import voiceid.features.tables as tables

    manifest = manifest_for(corpus(tmp_path / "audio", 3))
    result = extract_features(manifest, P, tmp_path / "cache", progress=False)
    write_tables(result, tmp_path / "features")
    old = {name: (tmp_path / "features" / f"{name}.parquet").read_bytes() for name in P.sets}

    real = tables.pq.write_table

    def dies_mid_write(table, where, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if hasattr(where, "write"):
            where.write(b"PAR1 partial")
        else:
            Path(where).write_bytes(b"PAR1 partial")  # what pyarrow leaves when it dies writing to the path
        raise OSError("disk full")

    monkeypatch.setattr(tables.pq, "write_table", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        write_tables(result, tmp_path / "features")
    monkeypatch.setattr(tables.pq, "write_table", real)
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == sorted(f"{n}.parquet" for n in P.sets)  # no temporaries
    try:
        for name, content in old.items():
            assert (tmp_path / "features" / f"{name}.parquet").read_bytes() == content, name
    finally:  # a rerun rewrites whole tables either way
        write_tables(result, tmp_path / "features")
        meta, X = read_feature_table(tmp_path / "features" / "seed498.parquet")
        assert meta.utt_id.tolist() == manifest.utt_id.tolist()
        np.testing.assert_array_equal(X, np.stack(result.arrays["seed498"]))


def test_cache_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FeatureCache(tmp_path, P)
    cache.put("mfcc60", "ab" * 32, np.ones(60, np.float32))

    def dies_mid_write(fh, arr, allow_pickle=False):  # noqa: ANN001, ANN202
        fh.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(featcache.np, "save", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        cache.put("mfcc60", "ab" * 32, np.zeros(60, np.float32))
    monkeypatch.undo()
    np.testing.assert_array_equal(cache.get("mfcc60", "ab" * 32), np.ones(60, np.float32))  # old entry intact
    assert not list(tmp_path.rglob("*.tmp"))
    cache.path("mfcc60", "ab" * 32).write_bytes(b"garbage")  # outside damage reads as a miss
    assert cache.get("mfcc60", "ab" * 32) is None


def test_manifest_problems_are_clear_errors(tmp_path: Path) -> None:
    manifest = manifest_for(corpus(tmp_path / "audio", 2))
    with pytest.raises(ManifestError, match="content_hash"):
        extract_features(manifest.drop(columns="content_hash"), P, None, progress=False)
    with pytest.raises(ManifestError, match="duplicate utt_id"):
        extract_features(manifest.assign(utt_id="same"), P, None, progress=False)


def test_stage_writes_exactly_the_declared_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = manifest_for(corpus(tmp_path / "audio", 5))
    monkeypatch.chdir(tmp_path)
    Path("data/prepared").mkdir(parents=True)
    manifest.to_parquet("data/prepared/manifest.parquet", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["features"]["n_jobs"] = 1
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage("features", ["--no-progress"]) == 0

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["features"]
    declared = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"] + stage["metrics"]]
    for out in declared:
        assert Path(out).exists(), out
    written = {str(p) for p in Path("data/features").iterdir()} | {"metrics/features.json"}
    assert written == set(declared)

    meta, X = read_feature_table("data/features/seed498.parquet")
    assert X.shape == (5, 498) and meta.utt_id.tolist() == manifest.utt_id.tolist()
    assert read_feature_table("data/features/extended.parquet")[1].shape == (5, 260)
    _, mats = read_logmel("data/features/logmel.parquet")
    assert [m.shape[1] for m in mats] == [80] * 5
    metrics = json.loads(Path("metrics/features.json").read_text())
    assert metrics["computed"] == 5 and metrics["rejected"] == 0 and metrics["dims"]["extended"] == 260

    assert run_stage("features", ["--no-progress"]) == 0  # re-run: all from cache, same tables
    assert json.loads(Path("metrics/features.json").read_text())["cached"] == 5
    np.testing.assert_array_equal(read_feature_table("data/features/seed498.parquet")[1], X)

    # what `dvc repro` does after 10 files are added: prepare rewrites the manifest, features re-runs
    grown = pd.concat([manifest, manifest_for(corpus(tmp_path / "audio", 10, start=5), start=5)], ignore_index=True)
    grown.sample(frac=1.0, random_state=0).to_parquet("data/prepared/manifest.parquet", index=False)
    assert run_stage("features", ["--no-progress"]) == 0
    metrics = json.loads(Path("metrics/features.json").read_text())
    assert (metrics["computed"], metrics["cached"], metrics["kept"]) == (10, 5, 15)
    meta, X15 = read_feature_table("data/features/seed498.parquet")
    old_rows = meta.utt_id.isin(manifest.utt_id).to_numpy()
    np.testing.assert_array_equal(X15[old_rows][np.argsort(meta.utt_id[old_rows].to_numpy())], X)

    params["features"]["n_mfcc"] = 13
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage("features", ["--no-progress"]) == 2


def test_write_tables_without_rows(tmp_path: Path) -> None:
    manifest = manifest_for(corpus(tmp_path / "audio", 1))
    result = extract_features(manifest, P, None, progress=False)
    result.meta, result.arrays = result.meta.iloc[:0], {k: [] for k in result.arrays}
    paths = write_tables(result, tmp_path / "out")
    assert read_feature_table(tmp_path / "out" / "mfcc60.parquet")[1].shape == (0, 60)
    assert len(paths) == 4
    assert read_logmel(tmp_path / "out" / "logmel.parquet")[1] == []
