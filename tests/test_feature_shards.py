"""stages/features.py --shard i/n: machines fill the shared content-hash cache, a last run assembles the tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import synth_voice, write_wav
from stage_runner import run_stage

from voiceid.data.audio import content_hash, load_audio
from voiceid.features.extract import in_shard, parse_shard

SETS = ["mfcc60", "logmel"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rows = []
    for k in range(8):
        path = write_wav(tmp_path / "audio" / f"spk{k % 2}" / f"u{k}.wav", synth_voice(seed=k, seconds=0.6))
        clip = load_audio(path)
        rows.append(dict(utt_id=f"u{k}", path=str(path), speaker=f"spk{k % 2}", role="enrolled", split="train",
                         duration=clip.duration, sample_rate=16000, channels=1, content_hash=content_hash(clip.wave), text=None))
    (tmp_path / "data/prepared").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(tmp_path / "data/prepared/manifest.parquet")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"features": {"sets": SETS, "n_jobs": 1}}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_shards_fill_the_cache_and_the_full_run_computes_nothing(workdir: Path) -> None:
    manifest = pd.read_parquet(workdir / "data/prepared/manifest.parquet")
    shards = [in_shard(manifest, i, 2) for i in range(2)]
    assert (shards[0] ^ shards[1]).all() and shards[0].any() and shards[1].any()  # a partition, both non-empty here

    for i in range(2):
        assert run_stage("features", ["--no-progress", "--shard", f"{i}/2"]) == 0
        assert not (workdir / "data/features/mfcc60.parquet").exists()  # shards write the cache only
        assert not (workdir / "metrics/features.json").exists()
    assert run_stage("features", ["--no-progress"]) == 0
    report = json.loads((workdir / "metrics/features.json").read_text())
    assert (report["computed"], report["cached"], report["kept"]) == (0, 8, 8)
    assert {p.name for p in (workdir / "data/features").glob("*.parquet")} == {f"{s}.parquet" for s in SETS}


def test_bad_shard_specs_are_refused(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_shard("3/4") == (3, 4)
    for spec in ("4/4", "-1/2", "1", "a/b"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(spec)
    assert run_stage("features", ["--no-progress", "--shard", "2/2"]) == 2
    assert "0 <= i < n" in capsys.readouterr().err
