"""ECAPA across processes: ``torchrun --nproc_per_node 2 stages/ecapa.py`` (gloo on CPU) trains a model select loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO
from pipeline_run import PipelineRun

from voiceid.ecapa import distributed
from voiceid.ecapa.train import TrainConfig, train_embedder

TINY = {"model": {"channels": 16, "se_channels": 8, "attention_channels": 16, "embedding_dim": 32},
        "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 16, "patience": 2},
        "search": {"n_trials": 1, "channels": [16]}, "threads": 2}


def _merge(base: dict, over: dict) -> dict:
    return {**base, **{k: _merge(base[k], v) if isinstance(v, dict) else v for k, v in over.items()}}


def test_shards_split_a_batch_by_rank() -> None:
    parts = [distributed.shard(10, distributed.Context(rank=r, world=3)) for r in range(3)]
    assert [(p.start, p.stop) for p in parts] == [(0, 4), (4, 7), (7, 10)]
    assert distributed.shard(16, distributed.Context()) == slice(0, 16)
    assert not distributed.current().distributed  # no process group in the test process


def test_one_process_records_the_loss_of_every_step(one_torch_thread: None) -> None:
    from voiceid.ecapa.model import EcapaConfig

    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(40, 12)).astype(np.float32) + (i % 3) for i in range(12)]
    config = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=6, crop_frames=20, patience=2)
    result = train_embedder(feats, [i % 3 for i in range(12)], EcapaConfig(n_mels=12, channels=8, se_channels=4,
                            attention_channels=8, embedding_dim=8), config)
    assert len(result.step_losses) == 4
    assert np.mean(result.step_losses[:2]) == pytest.approx(result.history[0]["loss"])


def test_torchrun_two_processes_train_a_model_select_loads(pipeline_run: PipelineRun, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "repo"
    for rel in ("data/prepared/manifest.parquet", "data/features/logmel.parquet"):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).symlink_to(pipeline_run.root / rel)
    params = yaml.safe_load((pipeline_run.root / "params.yaml").read_text())
    params["ecapa"] = _merge(params["ecapa"], TINY)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    uri = f"sqlite:///{work}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "stages/ecapa.py")], cwd=work, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("ecapa: ") == 1  # rank 0 alone reports (and logs)
    summary = json.loads((work / "metrics/models/ecapa.json").read_text())

    import mlflow

    run = mlflow.MlflowClient(tracking_uri=uri).get_run(summary["final_run_id"])
    assert run.data.tags["world_size"] == "2" and run.data.tags["family"] == "ecapa"
    assert len(list((work / "checkpoints/ecapa").glob("trial-*.pt"))) == 1

    # what the select stage does with it: find the run this stage recorded, load the network, embed
    from voiceid import tracking
    from voiceid.ecapa.embed import embed
    from voiceid.features.tables import read_logmel
    from voiceid.select.params import SelectParams
    from voiceid.select.sources import find_sources, load_sources

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.configure()
    sources, skipped = find_sources(SelectParams(families=("ecapa",)), work / "metrics/models", ["ecapa"])
    assert skipped == {} and sources[0].run_id == summary["final_run_id"]
    ((_, model),) = load_sources(sources)
    _, mats = read_logmel(work / "data/features/logmel.parquet")
    vectors = embed(model, mats[:3])
    assert vectors.shape == (3, TINY["model"]["embedding_dim"]) and np.isfinite(vectors).all()
