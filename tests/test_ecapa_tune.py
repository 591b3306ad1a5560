"""ECAPA experiment: data split, trial protocol, evaluation, params, and the stage end to end with a kill and resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from voiceid.config import ConfigError, from_mapping, load_section
from voiceid.ecapa.data import split_logmel
from voiceid.ecapa.model import ECAPATDNN, EcapaConfig
from voiceid.ecapa.params import EcapaError, EcapaParams
from voiceid.ecapa.tune import Evaluator
from voiceid.features.tables import write_logmel_table

REPO = Path(__file__).resolve().parents[1]
N_MELS = 20
TINY = {
    "dataset_name": "tiny", "device": "cpu", "threads": 1, "p_target": 0.01, "max_nontarget": 5000,
    "model": {"channels": 16, "scale": 4, "se_channels": 8, "attention_channels": 8, "embedding_dim": 16},
    "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 8, "crop_frames": 40, "lr": 0.003, "lr_min": 0.0001,
              "margin": 0.2, "scale": 10.0, "margin_warmup": 0.5, "patience": 2, "seed": 0},
    "search": {"n_trials": 2, "lr": [0.001, 0.005], "margin": [0.1, 0.3], "channels": [16, 32],
               "pruner_warmup_epochs": 3},  # > epochs: no pruning, so every trial returns its result
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic_table(n_enrolled: int = 4, seed: int = 0) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Log-mel-like frames per speaker (spectral envelope + noise): 3 train, 1 val, 1 test each,
    plus 2 unknown speakers in val and 2 in test, one utterance each."""
    rng = np.random.default_rng(seed)
    rows, mats = [], []
    plan = [(f"e{s}", "enrolled", split) for s in range(n_enrolled) for split in ("train",) * 3 + ("val", "test")]
    plan += [(f"u{s}", "unknown", "val" if s < 2 else "test") for s in range(4)]
    envelopes = {spk: rng.normal(0.0, 1.5, N_MELS) for spk, _, _ in plan}
    for i, (spk, role, split) in enumerate(plan):
        n_frames = int(rng.integers(40, 90))
        mats.append((envelopes[spk] + rng.normal(0.0, 0.7, (n_frames, N_MELS)) - 5.0).astype(np.float32))
        rows.append({"utt_id": f"{spk}/{i:03d}", "speaker": spk, "role": role, "split": split, "content_hash": f"h{i}"})
    return pd.DataFrame(rows), mats


def tiny_params() -> EcapaParams:
    return from_mapping(EcapaParams, TINY, "ecapa")


def test_split_uses_enrolled_train_for_training_and_all_held_out_rows() -> None:
    meta, mats = synthetic_table()
    data = split_logmel(meta, mats)
    assert data.n_mels == N_MELS
    assert len(data.train.feats) == 12 and set(data.train.speakers) == {"e0", "e1", "e2", "e3"}
    assert sorted(data.val.speakers) == ["e0", "e1", "e2", "e3", "u0", "u1"]
    assert sorted(data.test.speakers) == ["e0", "e1", "e2", "e3", "u2", "u3"]


def test_split_skips_a_bad_utterance_and_names_it(caplog: pytest.LogCaptureFixture) -> None:
    meta, mats = synthetic_table()
    mats[0] = mats[0].copy()
    mats[0][3, 2] = np.nan
    with caplog.at_level(logging.WARNING):
        data = split_logmel(meta, mats, source="t.parquet")
    assert len(data.train.feats) == 11
    assert "e0/000" in caplog.text and "t.parquet" in caplog.text


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m, x: (m, [x[0][:, :10], *x[1:]]), "one n_mels"),
        (lambda m, x: (m.assign(split=m["split"].replace("train", "val")), x), "no usable enrolled rows in split 'train'"),
        (lambda m, x: (m.assign(split=m["split"].replace("test", "val")), x), "split 'test'"),
        (lambda m, x: (m.assign(speaker="e0"), x), "at least 2 enrolled speakers"),
    ],
)
def test_split_errors_name_the_problem(mutate, message: str) -> None:
    meta, mats = mutate(*synthetic_table())
    with pytest.raises(EcapaError, match=message):
        split_logmel(meta, mats, source="t.parquet")


def test_val_trials_pair_held_out_utterances_with_everything_but_enrollment_pairs() -> None:
    meta, mats = synthetic_table()
    data = split_logmel(meta, mats)
    ev = Evaluator(data, "val", tiny_params())
    n_enroll, n_held = 12, 6
    assert len(ev.trials.labels) == n_held * n_enroll + n_held * (n_held - 1) // 2
    assert np.all(ev.trials.right >= n_enroll)  # left < right, so the held-out side is always right
    # Targets: each enrolled val utterance with its 3 enrollment utterances.
    assert ev.trials.labels.sum() == 4 * 3


class MeanPool(torch.nn.Module):
    """A stand-in embedder: each utterance's mean log-mel frame, level removed (what the envelope says)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # embed() reads the device from a parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=1)  # (B, n_mels)
        return m - m.mean(dim=1, keepdim=True)


def test_evaluation_of_a_separating_embedder_is_perfect() -> None:
    meta, mats = synthetic_table(n_enrolled=12)
    data = split_logmel(meta, mats)
    ev = Evaluator(data, "test", tiny_params())
    result = ev.full(MeanPool())
    m = result.metrics
    assert {"eer", "min_dcf", "accuracy", "f1_weighted", "f1_macro", "top5_accuracy"} <= set(m)
    assert m["eer"] == 0.0 and m["min_dcf"] == 0.0
    assert m["accuracy"] == 1.0 and m["f1_macro"] == 1.0 and m["top5_accuracy"] == 1.0
    assert m["n_target_trials"] == 12 * 3  # each enrolled test utterance with its 3 enrollment utterances
    assert ev.eer(MeanPool()) == m["eer"]
    assert result.centroids.speakers == [f"e{s}" for s in sorted(range(12), key=str)]
    assert result.det.p_fa[0] == 1.0 and result.det.p_miss[-1] == 1.0


def test_evaluation_of_shuffled_labels_is_chance() -> None:
    """The same frames under shuffled speaker labels: targets score like non-targets."""
    meta, mats = synthetic_table(n_enrolled=12)
    perm = np.random.default_rng(0).permutation(len(mats))
    data = split_logmel(meta, [mats[i] for i in perm])
    for split in ("val", "test"):
        m = Evaluator(data, split, tiny_params()).full(MeanPool()).metrics
        assert 0.35 < m["eer"] < 0.65, (split, m["eer"])
        if split == "test":
            assert m["accuracy"] <= 0.25  # chance is 1/12


def test_an_untrained_network_runs_through_the_evaluator() -> None:
    meta, mats = synthetic_table()
    data = split_logmel(meta, mats)
    torch.manual_seed(0)
    model = ECAPATDNN(EcapaConfig(n_mels=N_MELS, channels=16, scale=4, se_channels=8, attention_channels=8, embedding_dim=16))
    result = Evaluator(data, "test", tiny_params()).full(model)
    assert result.centroids.speakers == ["e0", "e1", "e2", "e3"]
    assert result.metrics["eer"] == Evaluator(data, "test", tiny_params()).eer(model)


def test_repo_params_section_loads() -> None:
    params = load_section(EcapaParams, "ecapa", REPO / "params.yaml")
    assert params.model.channels in params.search.channels


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {**TINY["model"], "channels": 24}}, "not among search.channels"),
        ({"train": {**TINY["train"], "lr": 0.1}}, "inside search.lr"),
        ({"search": {**TINY["search"], "channels": [16, 30]}}, "divisible by model.scale"),
        ({"search": {**TINY["search"], "lr": [0.00001, 0.005]}}, "below train.lr_min"),
        ({"train": {**TINY["train"], "epoch": 3}}, "unknown key 'ecapa.train.epoch'"),
    ],
)
def test_params_mistakes_are_config_errors(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping(EcapaParams, {**TINY, **change}, "ecapa")


def _write_inputs(tmp_path: Path) -> dict[str, Path]:
    meta, mats = synthetic_table()
    paths = {"logmel": tmp_path / "logmel.parquet", "manifest": tmp_path / "manifest.parquet",
             "params": tmp_path / "params.yaml"}
    write_logmel_table(paths["logmel"], meta, mats)
    meta.to_parquet(paths["manifest"])
    paths["params"].write_text(yaml.safe_dump({"ecapa": TINY, "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}}))
    return paths


def _stage_args(paths: dict[str, Path], tmp_path: Path) -> list[str]:
    return ["--params", str(paths["params"]), "--logmel", str(paths["logmel"]), "--manifest", str(paths["manifest"]),
            "--checkpoints", str(tmp_path / "ckpt"), "--metrics", str(tmp_path / "metrics" / "ecapa.json")]


def test_stage_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stages.ecapa import main

    paths = _write_inputs(tmp_path)
    paths["logmel"].write_text("not parquet")
    assert main(_stage_args(paths, tmp_path)) == 2
    assert "logmel.parquet" in capsys.readouterr().err


def test_stage_killed_mid_trial_resumes_from_its_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill the stage during trial 1; the rerun returns trial 0 at once and continues trial 1 from its checkpoint."""
    from stages.ecapa import main
    from voiceid import tracking
    from voiceid.ecapa import tune
    from voiceid.ecapa.embed import embed

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = _write_inputs(tmp_path)
    real_train = tune.train_embedder
    calls: list[dict] = []  # one per train_embedder call: configs, inputs, result
    kill_call = {"index": 1}  # the first run dies after epoch 1 of its second trial

    def spy(feats, labels, model_cfg, train_cfg, **kw):
        call = {"model": model_cfg, "train": train_cfg, "feats": feats, "labels": labels, "ckpt": Path(kw["checkpoint"])}
        calls.append(call)
        if len(calls) - 1 == kill_call["index"]:
            def die_after_epoch_1(record: dict[str, float]) -> None:
                if record["epoch"] == 1:  # its checkpoint is written: this is a kill between epochs
                    raise KeyboardInterrupt
            kw["on_epoch"] = die_after_epoch_1
        call["result"] = real_train(feats, labels, model_cfg, train_cfg, **kw)
        return call["result"]

    monkeypatch.setattr(tune, "train_embedder", spy)
    with pytest.raises(KeyboardInterrupt):
        main(_stage_args(paths, tmp_path))
    assert len(calls) == 2 and "result" in calls[0] and "result" not in calls[1]
    # The first trial is the configured one.
    first = calls[0]
    assert (first["model"].channels, first["train"].lr, first["train"].margin) == (16, 0.003, 0.2)
    assert first["result"].resumed_at_epoch == 0 and len(first["result"].history) == 2
    killed = torch.load(calls[1]["ckpt"], map_location="cpu", weights_only=True)
    assert killed["epoch"] == 1 and not killed["done"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted({calls[0]["ckpt"].name, calls[1]["ckpt"].name})
    assert not (tmp_path / "metrics" / "ecapa.json").exists()

    kill_call["index"] = -1
    assert main(_stage_args(paths, tmp_path)) == 0
    (_, _, again0, again1) = calls
    # The seeded study proposes the same two trials: the same settings, the same checkpoints.
    assert (again0["model"], again0["train"], again0["ckpt"]) == (calls[0]["model"], calls[0]["train"], calls[0]["ckpt"])
    assert (again1["model"], again1["train"], again1["ckpt"]) == (calls[1]["model"], calls[1]["train"], calls[1]["ckpt"])
    # The finished trial returns at once (no epoch trained), with its first result.
    assert again0["result"].resumed_at_epoch == 2 == len(again0["result"].history)
    assert again0["result"].history == first["result"].history
    # The killed trial continues after epoch 1 and ends where an uninterrupted run ends.
    assert again1["result"].resumed_at_epoch == 1 and len(again1["result"].history) == 2
    straight = real_train(again1["feats"], again1["labels"], again1["model"], again1["train"], device=torch.device("cpu"))
    assert [r["loss"] for r in again1["result"].history] == pytest.approx([r["loss"] for r in straight.history], rel=1e-5)

    summary = json.loads((tmp_path / "metrics" / "ecapa.json").read_text())
    assert {"val_eer", "test_eer", "test_min_dcf", "test_accuracy", "n_parameters", "final_run_id"} <= set(summary)
    tracking.configure(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = tracking.experiment_name("tiny", "logmel")
    (study,) = tracking.search_runs(experiment, stage="study")  # the killed study run was reopened
    trials = tracking.search_runs(experiment, stage="trial")
    assert sorted(int(t.tags["trial_number"]) for t in trials) == [0, 1]  # trial 0 logged once, before the kill
    (final,) = tracking.search_runs(experiment, family="ecapa")
    assert final.run_id == summary["final_run_id"] and final.tags["stage"] == "final"
    assert final.tags["feature_set"] == "logmel" and final.tags["study_run_id"] == study.run_id
    assert {"eer", "min_dcf", "accuracy", "f1_weighted", "f1_macro", "val_eer"} <= set(final.metrics)
    assert final.params["embedding_dim"] == "16" and int(final.params["n_parameters"]) > 0

    meta, mats = synthetic_table()
    model = tracking.load_model(final.model_uri, "pytorch")
    emb = embed(model, [mats[0], mats[1][:7]])  # any length goes through the logged graph
    assert emb.shape == (2, 16)


def test_model_logging_rejects_an_example_that_would_freeze_an_axis() -> None:
    from voiceid import tracking

    model = ECAPATDNN(EcapaConfig(n_mels=N_MELS, channels=16, scale=4, se_channels=8, attention_channels=8, embedding_dim=16))
    # torch.export treats a size-1 axis as a constant: a batch of one would forbid batches later.
    with pytest.raises(ValueError, match="need size >= 2"):
        tracking.log_pytorch_model("no-run", model, np.zeros((1, 50, N_MELS), np.float32), variable_axes=(0, 1))
