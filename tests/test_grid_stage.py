"""stages/grid.py end to end on small synthetic feature tables, temp MLflow + Optuna stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from stage_runner import run_stage

from voiceid import tracking

N_SPK = 5
# synthetic tables under two real set names (grid.feature_sets only accepts those; dvector_ft is stage adapt's
# table, which the grid reads like any other); the widths are small on purpose
SETS = {"mfcc60": 8, "dvector_ft": 40}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo-like folder: manifest, two feature tables, params.yaml; cwd and MLflow point at it."""
    root = tmp_path_factory.mktemp("grid")
    rng = np.random.default_rng(0)
    rows = []
    for s in range(N_SPK + 1):
        for u in range(10 if s < N_SPK else 2):
            split = ("train" if u < 5 else "val" if u < 7 else "test") if s < N_SPK else "val"
            rows.append((f"s{s}-u{u}", f"s{s}", "enrolled" if s < N_SPK else "unknown", split, f"h{s}{u}"))
    meta = pd.DataFrame(rows, columns=["utt_id", "speaker", "role", "split", "content_hash"])
    (root / "data/prepared").mkdir(parents=True)
    (root / "data/features").mkdir(parents=True)
    meta.assign(path="x.wav", duration=1.0).to_parquet(root / "data/prepared/manifest.parquet")
    codes = meta["speaker"].str[1:].astype(int).to_numpy()
    for name, dim in SETS.items():
        centres = rng.normal(size=(N_SPK + 1, dim)) * 2.0
        X = (centres[codes] + rng.normal(size=(len(meta), dim))).astype(np.float32)
        feats = pd.DataFrame(X, columns=[f"{name}_{i}" for i in range(dim)])
        pd.concat([meta, feats], axis=1).to_parquet(root / f"data/features/{name}.parquet")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    grid = {**params["grid"], "dataset_name": "synth", "feature_sets": list(SETS), "n_trials": 3,
            "storage": f"sqlite:///{root}/optuna.db", "families": ["svc", "kmeans"]}
    (root / "params.yaml").write_text(yaml.safe_dump({"grid": grid, "tracking": {"uri": "sqlite:///unused.db"}}))
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")  # wins over tracking.uri
    yield root
    mp.undo()


def grid(*argv: str) -> int:
    """``stages/grid.py`` in the workdir, writing ``metrics/<family>.json`` there."""
    return run_stage("grid", ["--metrics-dir", "metrics", *argv])


@pytest.fixture(scope="module")
def svc_report(workdir: Path) -> dict:
    """metrics/svc.json of one ``grid --family svc`` run in ``workdir`` (the run the rerun test resumes)."""
    assert grid("--family", "svc") == 0
    return json.loads((workdir / "metrics/svc.json").read_text())


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _children(exp_id: str, parent: str) -> list:
    return _client().search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent}'")


def test_classifier_family_logs_studies_trials_and_final_runs(workdir: Path, svc_report: dict) -> None:
    report = svc_report
    assert set(report) == set(SETS)
    entry = report["mfcc60"]
    for key in ("val_f1_weighted", "test_f1_weighted", "test_f1_macro", "test_accuracy", "test_top5_accuracy",
                "fit_seconds", "final_run_id"):
        assert key in entry, key
    assert entry["n_trials_complete"] == 3

    client = _client()
    exp = client.get_experiment_by_name("voiceid/synth/mfcc60")
    final = client.get_run(entry["final_run_id"])
    study = client.get_run(final.data.tags["study_run_id"])
    assert study.data.tags["stage"] == "study" and study.data.tags["family"] == "svc"
    trials = _children(exp.experiment_id, study.info.run_id)
    assert len(trials) == 3 and {t.data.tags["stage"] for t in trials} == {"trial"}

    tags = final.data.tags
    assert tags["stage"] == "final" and tags["family"] == "svc" and tags["feature_set"] == "mfcc60"
    assert tags["data_hash"] == tracking.data_hash(workdir / "data/prepared/manifest.parquet")
    assert tags["git_commit"] and tags["seed"] == str(yaml.safe_load((workdir / "params.yaml").read_text())["grid"]["seed"])
    assert final.data.metrics["val_f1_weighted"] == pytest.approx(entry["val_f1_weighted"])
    assert final.data.metrics["test_f1_weighted"] == pytest.approx(entry["test_f1_weighted"])
    for name in ("f1_weighted", "f1_macro", "accuracy", "top5_accuracy"):  # the bare names = test
        assert final.data.metrics[name] == pytest.approx(final.data.metrics[f"test_{name}"])
    assert final.data.params["seed"] and final.data.params["C"]
    artifacts = {a.path for a in client.list_artifacts(final.info.run_id)}
    assert {"confusion_matrix.png", "classes.json", "feature_columns.json"} <= artifacts

    model = tracking.load_model(tags["model_uri"])
    table = pd.read_parquet(workdir / "data/features/mfcc60.parquet")
    test = table[(table["split"] == "test") & (table["role"] == "enrolled")]
    proba = model.predict_proba(test.filter(like="mfcc60_").to_numpy(np.float32))
    assert proba.shape == (len(test), N_SPK)
    assert list(model.classes_) == [f"s{i}" for i in range(N_SPK)]


def test_rerun_resumes_the_finished_study(workdir: Path, svc_report: dict) -> None:
    client = _client()
    first = svc_report["mfcc60"]
    assert grid("--family", "svc") == 0
    again = json.loads((workdir / "metrics/svc.json").read_text())["mfcc60"]
    assert again["final_run_id"] != first["final_run_id"]
    tags_first = client.get_run(first["final_run_id"]).data.tags
    tags_again = client.get_run(again["final_run_id"]).data.tags
    assert tags_again["study_name"] == tags_first["study_name"]
    assert tags_again["study_run_id"] == tags_first["study_run_id"]  # the study run was reopened
    exp = client.get_experiment_by_name("voiceid/synth/mfcc60")
    assert len(_children(exp.experiment_id, tags_again["study_run_id"])) == 3  # no extra trials


def test_clustering_family_reports_ari(workdir: Path) -> None:
    assert grid("--family", "kmeans") == 0
    entry = json.loads((workdir / "metrics/kmeans.json").read_text())["dvector_ft"]
    assert 0.0 <= entry["val_ari"] <= 1.0 and "test_ari" in entry and "test_f1_weighted" in entry
    final = _client().get_run(entry["final_run_id"])
    assert final.data.tags["kind"] == "clustering" and final.data.tags["family"] == "kmeans"


def test_bad_inputs_fail_with_a_message(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert grid("--family", "xgboost") == 2
    assert "xgboost" in capsys.readouterr().err
    assert grid("--family", "knn", "--features-dir", "nowhere") == 1
    assert "nowhere/mfcc60.parquet" in capsys.readouterr().err
