"""voiceid.analysis: run tables, selection tables and the notebook's figures.

Units run over hand-made frames and a seeded store (tests/fake_runs.py: exact counts, every
probe outcome); ``test_real_pipeline_outputs`` over the session's small real pipeline run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from configured_candidates import configured_candidates
from fake_runs import build_store, write_selection
from matplotlib.figure import Figure
from pipeline_run import PipelineRun

from voiceid.analysis import runs as run_tables
from voiceid.analysis import selection as selection_tables
from voiceid.grid import clustering
from voiceid.select.candidates import EMBEDDING_FAMILIES
from voiceid.viz import compare
from voiceid.viz.det import det_figure


def _raw_runs() -> pd.DataFrame:
    """A search_runs-shaped frame: two data versions, repeated finals, trials."""
    rows = []

    def add(family: str, fs: str, stage: str, t: int, data: str = "new", **metrics: float) -> None:
        rows.append({
            "run_id": f"r{len(rows)}", "experiment": f"voiceid/d/{fs}", "experiment_id": "1", "status": "FINISHED",
            "start_time": pd.Timestamp("2026-01-01") + pd.Timedelta(minutes=t),
            "tags.mlflow.runName": f"{family}-{stage}", "tags.stage": stage, "tags.family": family,
            "tags.feature_set": fs, "tags.kind": "classifier", "tags.data_hash": data,
            "tags.objective": "f1_weighted" if stage == "final" else None, "params.C": "1",
            **{f"metrics.{k}": v for k, v in metrics.items()},
        })

    add("svc", "mfcc60", "final", 1, test_f1_weighted=0.5, val_f1_weighted=0.5, fit_seconds=1.0)
    add("svc", "mfcc60", "final", 5, test_f1_weighted=0.7, val_f1_weighted=0.6, fit_seconds=2.0)  # newest: wins
    add("svc", "seed498", "final", 4, test_f1_weighted=0.8, val_f1_weighted=0.9, fit_seconds=3.0)
    add("knn", "mfcc60", "final", 3, test_f1_weighted=0.4, val_f1_weighted=0.4, fit_seconds=0.1)
    add("knn", "mfcc60", "final", 9, data="other", test_f1_weighted=0.99, val_f1_weighted=0.99)  # newest, other data
    for v in (0.3, 0.5, 0.6):
        add("svc", "mfcc60", "trial", 0, objective=v)
    return pd.DataFrame(rows)


def test_tidy_runs_names_identity_columns_and_unprefixes_metrics() -> None:
    runs = run_tables.tidy_runs(_raw_runs())
    assert list(runs.columns[:5]) == ["run_id", "experiment", "run_name", "stage", "family"]
    assert {"test_f1_weighted", "objective", "fit_seconds", "params.C"} <= set(runs.columns)
    assert not any(c.startswith("metrics.") for c in runs.columns)
    with pytest.raises(ValueError, match="clash"):
        run_tables.tidy_runs(_raw_runs().assign(**{"metrics.family": 1.0}))


def test_final_runs_keep_newest_run_of_newest_data() -> None:
    runs = run_tables.tidy_runs(_raw_runs())
    finals = run_tables.final_runs(runs)
    # the newest final run has data_hash "other": only its data is kept
    assert finals[["family", "feature_set"]].values.tolist() == [["knn", "mfcc60"]]
    every = run_tables.final_runs(runs[runs["data_hash"] == "new"])
    assert len(every) == 3
    svc = every[(every["family"] == "svc") & (every["feature_set"] == "mfcc60")]
    assert svc["test_f1_weighted"].item() == pytest.approx(0.7)  # newer of the two repeats
    best = run_tables.best_per_family(every)
    assert dict(zip(best["family"], best["feature_set"])) == {"knn": "mfcc60", "svc": "seed498"}


def test_metric_bars_draw_one_bar_per_family_and_metric() -> None:
    runs = run_tables.tidy_runs(_raw_runs())
    finals = run_tables.final_runs(runs[runs["data_hash"] == "new"]).assign(test_f1_macro=0.3, test_accuracy=0.6)
    fig = compare.metric_bars(finals)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.patches]
    assert [ax.get_title() for ax in axes] == ["feature set mfcc60", "feature set seed498"]
    heights = sorted(round(p.get_height(), 3) for p in axes[0].patches)
    assert heights == [0.3, 0.3, 0.4, 0.6, 0.6, 0.7]  # knn, svc x (f1_weighted, f1_macro, accuracy)
    labels = [t.get_text() for t in axes[-1].get_legend().get_texts()]
    assert labels == ["f1_weighted", "f1_macro", "accuracy (= f1_micro)"]


def test_fit_time_and_trial_figures() -> None:
    runs = run_tables.tidy_runs(_raw_runs())
    finals = run_tables.final_runs(runs[runs["data_hash"] == "new"])
    fig = compare.fit_time_figure(run_tables.best_per_family(finals))
    bars = fig.axes[0].patches
    assert sorted(p.get_width() for p in bars) == [0.1, 3.0]  # knn's and svc's best (seed498) refits
    trials = run_tables.trial_table(runs)
    assert trials["objective"].tolist() == [0.3, 0.5, 0.6]
    assert set(trials["objective_name"]) == {"f1_weighted"}
    tfig = compare.trial_figure(trials)
    assert len(tfig.axes[0].collections[0].get_offsets()) == 3  # one point per trial


def test_sources_resolve_relative_store_against_repo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text("tracking:\n  uri: sqlite:///runs/mlflow.db\n")
    src = run_tables.sources(tmp_path)
    assert src.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'runs' / 'mlflow.db'}"
    assert src.selection_json == tmp_path.resolve() / "metrics" / "selection.json"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/m.db")
    assert run_tables.sources(tmp_path).tracking_uri == "sqlite:////elsewhere/m.db"
    assert run_tables.sources(tmp_path, "http://127.0.0.1:5000").tracking_uri == "http://127.0.0.1:5000"


def test_selection_outputs_as_the_select_stage_writes_them(tmp_path: Path) -> None:
    report = write_selection(tmp_path)
    src = run_tables.sources(tmp_path, "sqlite:///unused.db")
    table = selection_tables.openset_table(selection_tables.read_json(src.selection_json))
    assert set(table.index) == set(report["candidates"])
    assert table["champion"].sum() == 1 and table.index[table["champion"]][0] == report["champion"]["family"]
    assert table["dir_far_1"].is_monotonic_decreasing  # sorted by the champion metric
    assert not any(c.endswith(("_lo", "_hi")) for c in table.columns)
    wide = selection_tables.openset_table(selection_tables.read_json(src.selection_json), intervals=True)
    assert (wide["eer_lo"] <= wide["eer"]).all() and (wide["eer"] <= wide["eer_hi"]).all()

    scores = selection_tables.read_table(src.select_plots / "scores.csv", ["score", "group", "threshold"])
    confusion = selection_tables.read_table(src.select_plots / "confusion.csv", ["actual", "predicted"])
    out = selection_tables.probe_outcomes(scores, confusion)
    assert set(out["outcome"]) == {"enrolled, identified", "enrolled, misidentified", "enrolled, rejected", "unknown"}
    assert (out.loc[out["group"] == "unknown", "outcome"] == "unknown").all()
    rejected = out[out["outcome"] == "enrolled, rejected"]
    assert (rejected["score"] < rejected["threshold"]).all()
    fig = compare.score_figure(out)
    threshold = float(scores["threshold"].iloc[0])
    assert all(any(line.get_xdata()[0] == threshold for line in ax.lines) for ax in fig.axes)

    det = selection_tables.read_table(src.select_plots / "det.csv", ["candidate", "p_fa", "p_miss"])
    dfig = det_figure(selection_tables.det_curves(det), emphasize=EMBEDDING_FAMILIES)
    curves = {line.get_label().split(" ")[0]: line for line in dfig.axes[0].lines if not line.get_label().startswith("_")}
    assert set(curves) == set(report["candidates"])
    assert curves["ecapa"].get_linestyle() == "-" and curves["svc"].get_linestyle() == "--"
    assert curves["ecapa"].get_linewidth() > curves["svc"].get_linewidth()


def test_probe_outcomes_top1_columns_and_misaligned_tables() -> None:
    scores = pd.DataFrame({"score": [0.9, 0.8, 0.2], "group": ["enrolled", "enrolled", "unknown"], "threshold": 0.5,
                           "true": ["a", "b", "x"], "pred": ["a", "a", "a"]})
    assert selection_tables.probe_outcomes(scores)["outcome"].tolist() == ["enrolled, top-1 right", "enrolled, top-1 wrong", "unknown"]
    plain = scores.drop(columns=["true", "pred"])
    confusion = pd.DataFrame({"actual": ["a", "b", "unknown"], "predicted": ["a", "unknown", "unknown"]})
    assert selection_tables.probe_outcomes(plain, confusion)["outcome"].tolist() == [
        "enrolled, identified", "enrolled, rejected", "unknown"]
    with pytest.raises(ValueError, match="not aligned"):
        selection_tables.probe_outcomes(plain, confusion.iloc[::-1].reset_index(drop=True))
    with pytest.raises(ValueError, match="different probes"):
        selection_tables.probe_outcomes(plain, confusion.iloc[:2])


def test_missing_inputs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="selection.json"):
        selection_tables.read_json(tmp_path / "metrics" / "selection.json")
    (tmp_path / "det.csv").write_text("candidate,p_fa\nsvc,0.1\n")
    with pytest.raises(ValueError, match=r"det\.csv: missing column\(s\) p_miss"):
        selection_tables.read_table(tmp_path / "det.csv", ["candidate", "p_fa", "p_miss"])
    with pytest.raises(FileNotFoundError, match="no MLflow store"):
        run_tables.load_runs(f"sqlite:///{tmp_path / 'absent.db'}")


def test_load_runs_reads_the_store_through_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    build_store(tmp_path, families=("svc", "kmeans"), feature_sets=("mfcc60",), n_trials=2)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////nonexistent/other.db")  # the explicit URI must win
    runs = run_tables.load_runs(uri)
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////nonexistent/other.db"  # restored
    assert runs["stage"].value_counts().to_dict() == {"trial": 6, "study": 3, "final": 3}
    finals = run_tables.final_runs(runs)
    assert sorted(finals["family"]) == ["ecapa", "kmeans", "svc"]
    trials = run_tables.trial_table(runs)
    assert dict(trials.groupby("family")["objective_name"].first()) == {
        "ecapa": "val_eer", "kmeans": "ari", "svc": "f1_weighted"}
    nested = runs[runs["stage"] == "trial"]["parent_run_id"]
    assert set(nested) == set(runs.loc[runs["stage"] == "study", "run_id"])


def test_real_pipeline_outputs(pipeline_run: PipelineRun, monkeypatch: pytest.MonkeyPatch) -> None:
    """The analysis reads what the real stages wrote (tests/pipeline_run.py), located from the repo root alone."""
    run = pipeline_run
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    src = run_tables.sources(run.root)  # tracking.uri of the run's params.yaml
    assert src.tracking_uri == run.uri
    runs = run_tables.load_runs(src.tracking_uri)

    finals = run_tables.final_runs(runs)
    expected = {(f, fs) for f in run.grid_families for fs in run.feature_sets} | {("ecapa", "logmel")}
    assert set(zip(finals["family"], finals["feature_set"])) == expected and len(finals) == len(expected)
    assert finals.loc[finals["family"] != "ecapa", "test_f1_weighted"].between(0, 1).all()
    assert finals.loc[finals["family"] == "ecapa", "test_eer"].between(0, 1).all()

    trials = run_tables.trial_table(runs)
    assert set(zip(trials["family"], trials["feature_set"])) == expected  # every study logged its trials
    objective = dict(trials.groupby("family")["objective_name"].first())
    for family in run.grid_families:
        assert objective[family] == ("ari" if family in clustering.FAMILIES else "f1_weighted"), family
    assert objective["ecapa"] == "val_eer"
    assert set(runs.loc[runs["stage"] == "trial", "parent_run_id"]) <= set(runs.loc[runs["stage"] == "study", "run_id"])

    selection = selection_tables.read_json(src.selection_json)
    table = selection_tables.openset_table(selection)
    configured = configured_candidates(run.root / "params.yaml")  # select.families, not selection.json
    assert configured <= set(table.index), f"selection lost {sorted(configured - set(table.index))}"
    assert table["champion"].sum() == 1 and table.index[table["champion"]][0] in configured | {"fusion"}
    skipped = json.loads((run.root / "reports" / "selection.json").read_text())["skipped"]
    assert not configured & set(skipped), {f: skipped[f] for f in configured & set(skipped)}
    scores = selection_tables.read_table(src.select_plots / "scores.csv", ["score", "group", "threshold"])
    confusion = selection_tables.read_table(src.select_plots / "confusion.csv", ["actual", "predicted"])
    out = selection_tables.probe_outcomes(scores, confusion)
    assert len(out) == len(scores) and set(out["group"]) == {"enrolled", "unknown"}
    assert (out.loc[out["group"] == "unknown", "outcome"] == "unknown").all()
    det = selection_tables.read_table(src.select_plots / "det.csv", ["candidate", "p_fa", "p_miss"])
    dfig = det_figure(selection_tables.det_curves(det), emphasize=EMBEDDING_FAMILIES)
    curves = {line.get_label().split(" ")[0] for line in dfig.axes[0].lines if not line.get_label().startswith("_")}
    assert configured <= curves and curves == set(table.index)
