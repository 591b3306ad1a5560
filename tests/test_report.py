"""The first ten minutes, on the session's small real pipeline run (tests/pipeline_run.py).

``voiceid report`` (what ``make run`` ends with) fits 100 columns and names every candidate,
the champion, its threshold and where the results are; the final runs carry the prepared
manifest as their MLflow dataset; the registered champion version describes itself. The browser
view of the same store is tests/test_mlflow_ui.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from configured_candidates import configured_candidates
from pipeline_run import PipelineRun

from voiceid.analysis import summary
from voiceid.serve import cli


def test_report_command_summarises_the_selection(pipeline_run: PipelineRun, capsys: pytest.CaptureFixture[str]) -> None:
    run = pipeline_run
    assert cli.main(["report", "--root", str(run.root)]) == 0
    text = capsys.readouterr().out
    print(f"\n{text}")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= summary.WIDTH, max(lines, key=len)

    selection = run.selection
    champion = selection["champion"]
    table = lines[lines.index(next(line for line in lines if line.startswith("  candidate "))) + 1 :]
    table = table[: next(i for i, line in enumerate(table) if line.startswith("  * champion."))]
    rows = {m.group(2): m.group(1) for line in table if (m := re.match(r"^([* ]) (\w+)\s{2,}", line))}
    assert len(rows) == len(table)
    assert set(rows) == set(selection["candidates"]) >= configured_candidates(run.root / "params.yaml")
    assert [f for f, mark in rows.items() if mark == "*"] == [champion["family"]]
    # the champion's row shows its test EER with the interval, as percentages
    eer = summary.cell("eer", champion["test"])
    assert any(line.startswith(f"* {champion['family']} ") and eer in line for line in lines), eer
    assert f"threshold {summary.fmt('', champion['threshold'])}" in text
    assert f"test FAR {summary.cell('far', champion['test'])} %" in text
    assert f"chosen on val by {champion['champion_metric']}" in text
    assert f"models:/{champion['registered_model']}@champion (version {champion['version']})" in text
    for where in ("plots/select/", "dvc plots show", "voiceid ui", "voiceid identify data/default/", run.uri):
        assert where in text, where


def test_report_without_outputs_says_what_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--root", str(tmp_path)]) == 2
    assert "metrics/selection.json: not found; run the pipeline first (`make run`" in capsys.readouterr().err


def test_summary_of_hand_made_selection_fits_and_marks_skipped() -> None:
    flat = {"accuracy": 1.0, "accuracy_lo": 0.95, "accuracy_hi": 1.0, "eer": 0.123, "eer_lo": 0.05, "eer_hi": 0.2,
            "dir_far_1": 0.5, "dir_far_1_lo": 0.2, "dir_far_1_hi": 0.8, "far": 0.05, "far_lo": 0.0, "far_hi": 0.1,
            "frr": 0.2, "frr_lo": 0.1, "frr_hi": 0.3}
    selection = {
        "champion": {"family": "cosine", "threshold_rule": "fpr", "threshold": 0.61234, "champion_metric": "eer",
                     "champion_metric_reason": "dir_far_1 needs 100 val-unknown probes, val has 5; chose by eer " * 3,
                     "val_eer": 0.1, "test": flat, "registered_model": "voiceid", "version": "3",
                     "threshold_basis": {"target_fpr": 0.05, "far_confidence": 0.8, "val_unknown_probes": 40,
                                         "val_unknown_speakers": 4}},
        "candidates": {"svc": {"feature_set": "mfcc60", "test": flat},
                       "fusion": {"feature_set": "dvector_ft+" * 6 + "mfcc60", "test": flat},  # wider than the table allows
                       "cosine": {"feature_set": "mfcc60", "test": flat}},
        "skipped": {"catboost": "not in grid.families " + "x" * 200},
    }
    report = {"candidates": {"svc": {"val": {"eer": 0.3}}, "fusion": {"val": {"eer": 0.2}}, "cosine": {"val": {"eer": 0.1}}},
              "n_probes": {"test_enrolled": 12, "test_unknown": 5}}
    text = summary.render(selection, report, {}, example="a.flac", prefix=".venv/bin/")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= summary.WIDTH
    order = [m.group(1) for line in lines if (m := re.match(r"^[* ] (svc|fusion|cosine) ", line))]
    assert order == ["cosine", "fusion", "svc"]  # champion first, then by val EER (lower is better)
    # one line per candidate, under one header: a long feature-set name is cut, the row never wraps
    head = next(i for i, line in enumerate(lines) if line.startswith("  candidate  features"))
    fusion = lines[head + 2]
    assert fusion.startswith("  fusion ") and "dvector_ft+dvector_ft..." in fusion
    assert fusion.rstrip().endswith("50.0 [20.0, 80.0]") and lines[head + 3].startswith("  svc ")
    assert "(12 enrolled + 5 unknown probes)" in text and "skipped catboost: not in grid.families" in text
    assert ".venv/bin/voiceid identify a.flac" in text and ".venv/bin/voiceid ui " in text
    # the threshold says what it stands on: the FAR target, for new strangers, and how few strangers set it
    said = " ".join(text.split())
    assert any(line.startswith("champion  cosine on mfcc60: decides at threshold 0.612 (fpr rule on val") for line in lines)
    assert "decides at threshold 0.612 (fpr rule on val: aims to accept at most 5% of new strangers, confidence 0.8, " \
           "from 4 val-unknown speakers; a rough target: only 4 strangers, new ones may be accepted far more " \
           "often)" in said
    from voiceid.select.report import few_strangers_warning

    assert "only 4 strangers" in (few_strangers_warning("fpr", selection["champion"]) or "")  # the select stage prints it
    selection["champion"]["threshold_basis"]["val_unknown_speakers"] = 10  # enough: no warning
    enough = " ".join(summary.render(selection, report, {}, example="a.flac").split())
    assert "from 10 val-unknown speakers)" in enough and "rough" not in enough
    assert few_strangers_warning("fpr", selection["champion"]) is None
    selection["champion"]["threshold_basis"]["val_unknown_speakers"] = 4
    selection["champion"]["threshold_basis"]["far_confidence"] = None
    plain = " ".join(summary.render(selection, report, {}, example="a.flac").split())
    assert "(fpr rule: at most 5% of the 40 val-unknown probes accepted, from 4 speakers; a rough target: only 4 strangers" in plain
    selection["champion"]["threshold_rule"] = "eer"
    assert "(eer rule, fitted on val)" in summary.render(selection, report, {}, example="a.flac")


def test_final_runs_name_their_manifest_dataset(pipeline_run: PipelineRun) -> None:
    """Each final run's MLflow input is the prepared manifest (digest = its data_hash), context training."""
    import mlflow

    client = mlflow.MlflowClient(pipeline_run.uri)
    experiments = [client.get_experiment_by_name(pipeline_run.experiment(fs)) for fs in (*pipeline_run.feature_sets, "logmel")]
    assert all(e.tags.get("mlflow.experimentKind") == "custom_model_development" for e in experiments)
    finals = client.search_runs([e.experiment_id for e in experiments], "tags.stage = 'final'")
    assert {r.data.tags["family"] for r in finals} == set(pipeline_run.families)
    manifest = str((pipeline_run.root / "data" / "prepared" / "manifest.parquet").resolve())
    for r in finals:
        (inp,) = r.inputs.dataset_inputs
        assert inp.dataset.name == "manifest" and r.data.tags["data_hash"].startswith(inp.dataset.digest)
        assert json.loads(inp.dataset.source)["uri"] == manifest
        assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
        assert json.loads(inp.dataset.profile)["num_rows"] > 0


def test_registered_champion_version_describes_itself(pipeline_run: PipelineRun) -> None:
    import mlflow

    champion = pipeline_run.selection["champion"]
    client = mlflow.MlflowClient(pipeline_run.uri, registry_uri=pipeline_run.uri)
    version = client.get_model_version_by_alias(champion["registered_model"], "champion")
    assert str(version.version) == champion["version"]
    tags, text = version.tags, version.description
    family = champion["family"]
    feature_set = pipeline_run.selection["candidates"][family]["feature_set"]
    assert tags["family"] == family and tags["feature_set"] == feature_set
    assert float(tags["threshold"]) == pytest.approx(champion["threshold"], rel=1e-4)
    assert tags["champion_metric"] == champion["champion_metric"] and f"val_{champion['champion_metric']}" in tags
    assert {"test_accuracy", "test_eer", "test_dir_far_1", "test_far", "test_frr", "data_hash", "git_commit"} <= set(tags)
    from voiceid.select.report import threshold_basis

    basis = threshold_basis(champion["threshold_rule"], champion)  # the summary's words for the threshold
    for needed in (f"**{family}**", f"`{feature_set}`", basis, tags["data_hash"], "EER", "DIR@FAR1%", "git commit"):
        assert needed in text, (needed, text)
    model = client.get_registered_model(champion["registered_model"])
    assert "open-set speaker identification" in model.description and "@champion" in model.description
    assert model.tags["task"] == "open-set speaker identification"
