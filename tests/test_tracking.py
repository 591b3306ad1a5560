"""voiceid.tracking against a temporary sqlite MLflow store (one per module: creating it costs seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from voiceid import tracking
from voiceid.viz.confusion import confusion_figure


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("mlflow")
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.configure(f"sqlite:///{root}/mlflow.db")
    mp.chdir(root)  # default artifact root ./mlruns lands in the temp dir
    yield uri
    mp.undo()


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _manifest(path: Path, rows: list[tuple[str, str, str, str, str]], extra_path: str = "a") -> Path:
    frame = pd.DataFrame(rows, columns=["utt_id", "speaker", "role", "split", "content_hash"])
    frame["path"] = extra_path
    frame.to_parquet(path)
    return path


def test_configure_prefers_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    try:
        assert tracking.configure("sqlite:///other.db") == f"sqlite:///{tmp_path}/env.db"
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
        assert tracking.configure(None) == tracking.DEFAULT_TRACKING_URI
    finally:
        tracking.configure(store)


@pytest.mark.parametrize("user", [None, "true"])
def test_artifact_downloads_draw_no_progress_bar_unless_the_user_asks(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tmp_path: Path, store: str, user: str | None
) -> None:
    from voiceid.tracking.config import import_mlflow

    if user is None:
        monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", user)
    mlflow = import_mlflow()
    (tmp_path / "a.txt").write_text("x")
    # a client run: the fluent API's active experiment is process state other tests set
    client = mlflow.MlflowClient()
    run_id = client.create_run(client.create_experiment(f"progress-bar-{tmp_path.name}")).info.run_id
    client.log_artifact(run_id, str(tmp_path / "a.txt"))
    client.set_terminated(run_id)
    capfd.readouterr()
    mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="a.txt", dst_path=str(tmp_path / "out"))
    assert ("Downloading artifacts" in capfd.readouterr().err) == (user == "true")


def test_data_hash_ignores_paths_and_row_order_but_not_splits(tmp_path: Path) -> None:
    rows = [("u1", "s1", "enrolled", "train", "h1"), ("u2", "s2", "enrolled", "test", "h2")]
    a = tracking.data_hash(_manifest(tmp_path / "a.parquet", rows))
    b = tracking.data_hash(_manifest(tmp_path / "b.parquet", rows[::-1], extra_path="elsewhere"))
    moved = [("u1", "s1", "enrolled", "val", "h1"), rows[1]]
    c = tracking.data_hash(_manifest(tmp_path / "c.parquet", moved))
    assert a == b
    assert a != c
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        tracking.data_hash(tmp_path / "missing.parquet")


def test_git_commit_outside_a_repository_is_unknown(tmp_path: Path) -> None:
    assert tracking.git_commit(tmp_path) == "unknown"


def test_pip_requirements_pin_installed_versions() -> None:
    import sklearn

    assert tracking.pip_requirements("scikit-learn") == [f"scikit-learn=={sklearn.__version__}"]
    with pytest.raises(ValueError, match="not installed"):
        tracking.pip_requirements("no-such-dist-voiceid")


def test_study_run_nests_trials_and_reopens(store: str) -> None:
    exp = "voiceid/test/study"
    with tracking.start_study_run(exp, "study-x", {"family": "svc"}, {"grid.n_trials": 3}) as study:
        assert not study.resumed
        ok = tracking.log_trial(study, number=0, params={"C": 1.0}, value=0.8, state="COMPLETE",
                                intermediate={25: 0.5, 50: 0.7}, duration_s=0.1, tags={"family": "svc"})
        bad = tracking.log_trial(study, number=1, params={"C": 9.0}, value=None, state="FAIL",
                                 tags={"error": "ValueError: boom"})
    client = _client()
    child = client.get_run(ok)
    assert child.data.tags["mlflow.parentRunId"] == study.run_id
    assert child.data.tags["stage"] == "trial" and child.data.tags["family"] == "svc"
    assert child.data.metrics["objective"] == pytest.approx(0.8)
    steps = [m.step for m in client.get_metric_history(ok, "intermediate_objective")]
    assert sorted(steps) == [25, 50]
    failed = client.get_run(bad)
    assert failed.info.status == "FAILED" and failed.data.tags["trial_state"] == "FAIL"
    assert "objective" not in failed.data.metrics
    with tracking.start_study_run(exp, "study-x", {"family": "svc"}) as again:
        assert again.resumed and again.run_id == study.run_id
        assert again.logged_trials == {0, 1}
    with pytest.raises(ValueError, match="unknown trial state"):
        tracking.log_trial(study, number=2, params={}, value=None, state="DONE")


def test_final_run_logs_model_figure_and_is_found_by_metric(store: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    y = np.array(["a", "b"] * 20)
    X[y == "a"] += 2.0
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    exp = "voiceid/test/final"
    pins = tracking.pip_requirements("scikit-learn", "numpy")
    common = dict(tags={"family": "logreg", "feature_set": "f"}, requirements=pins)
    worse = tracking.log_final_run(exp, "worse", params={"C": 1}, metrics={"val_f1_weighted": 0.5}, **common)
    best = tracking.log_final_run(
        exp, "best", params={"C": 2}, metrics={"val_f1_weighted": 0.9, "test_f1_weighted": float("nan")},
        model=model, input_example=X[:2],
        figures={"confusion_matrix.png": confusion_figure(np.eye(2), ["a", "b"])},
        json_artifacts={"classes.json": list(model.classes_)}, **common,
    )
    found = tracking.search_best_run(exp, "logreg", "val_f1_weighted")
    assert found is not None and found.run_id == best != worse
    assert "test_f1_weighted" not in found.metrics  # NaN skipped, not logged
    assert found.tags["stage"] == "final" and found.model_uri
    assert tracking.search_best_run(exp, "svc") is None
    assert tracking.search_best_run(exp, "logreg", "val_f1_weighted", maximize=False).run_id == worse

    loaded = tracking.load_model(found.model_uri)
    np.testing.assert_allclose(loaded.predict_proba(X[:5]), model.predict_proba(X[:5]), rtol=1e-6)
    artifacts = {a.path for a in _client().list_artifacts(best)}
    assert {"confusion_matrix.png", "classes.json"} <= artifacts
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(found.model_uri))
    # explicit pins (MLflow adds only its own): nothing inferred
    assert set((local / "requirements.txt").read_text().split()) - set(pins) <= {f"mlflow=={mlflow.__version__}"}
    assert set(pins) <= set((local / "requirements.txt").read_text().split())
    mlmodel = (local / "MLmodel").read_text()
    assert "signature:" in mlmodel and "float32" in mlmodel
    assert json.loads((local / "input_example.json").read_text())


def test_pytorch_flavour_round_trips(store: str) -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    x = np.ones((2, 3), dtype=np.float32)
    run_id = tracking.log_final_run(
        "voiceid/test/torch", "ecapa-final", params={}, metrics={"val_eer": 0.1},
        tags={"family": "ecapa"}, model=net, flavor="pytorch", input_example=x,
    )
    record = tracking.search_best_run("voiceid/test/torch", "ecapa", "val_eer", maximize=False)
    assert record is not None and record.run_id == run_id
    loaded = tracking.load_model(record.model_uri, "pytorch")
    with torch.no_grad():
        np.testing.assert_allclose(loaded(torch.from_numpy(x)).numpy(), net(torch.from_numpy(x)).numpy())


def test_experiments_are_model_training_and_final_runs_name_their_manifest(store: str, tmp_path: Path) -> None:
    client = _client()
    old = client.create_experiment("voiceid/test/older")  # made by a voiceid before the kind tag
    mine = client.create_experiment("voiceid/test/chosen", tags={"mlflow.experimentKind": "genai_development"})
    tracking.set_experiment("voiceid/test/older")
    tracking.set_experiment("voiceid/test/chosen")
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(mine).tags["mlflow.experimentKind"] == "genai_development"  # a kind set is kept

    manifest = _manifest(tmp_path / "manifest.parquet", [("u1", "s1", "enrolled", "train", "h1")])
    digest = tracking.data_hash(manifest)  # remembers which file it hashed
    run_id = tracking.log_final_run("voiceid/test/kind", "svc-final", params={}, metrics={},
                                    tags={"family": "svc", "data_hash": digest})
    assert client.get_experiment_by_name("voiceid/test/kind").tags["mlflow.experimentKind"] == "custom_model_development"
    (inp,) = client.get_run(run_id).inputs.dataset_inputs
    assert (inp.dataset.name, inp.dataset.digest) == ("manifest", digest[:12])
    assert json.loads(inp.dataset.source)["uri"] == str(manifest.resolve())
    assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "training"}
    unknown = tracking.log_final_run("voiceid/test/kind", "knn-final", params={}, metrics={}, tags={"data_hash": "f" * 64})
    assert not client.get_run(unknown).inputs.dataset_inputs  # a hash this process never computed: no input
