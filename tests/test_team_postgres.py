"""Team mode for real: two grid workers share Optuna studies on PostgreSQL and log to an ``mlflow server`` on it.

A throw-away PostgreSQL (tests/team_servers.py; ``make postgres`` installs Debian's package)
holds the Optuna storage and the MLflow backend store; ``mlflow server`` proxies artifacts to
a temp folder. Two processes of ``python stages/grid.py --family logreg`` run at once on the
feature tables of the session's small pipeline run, then ``stages/selection.py`` picks and
registers the champion from that server. Skips, with the reason, only where PostgreSQL
cannot run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import team_servers
import yaml
from conftest import REPO
from pipeline_run import PipelineRun

N_TRIALS = 8
FEATURE_SETS = ("mfcc60", "seed498")

# A worker that arrives after a study's round is final starts a new round (its own trials and
# refit), as a late `dvc repro` on another machine should. These trials take milliseconds, so a
# worker whose imports ran a few seconds late on a loaded CI machine found the first worker done
# (two final run ids, a flaky failure). The launcher imports the heavy modules, then waits until
# the shared start time before running the stage.
GATED = (
    "import runpy, sys, time; import mlflow, optuna, voiceid.grid.run, voiceid.tracking; "
    "time.sleep(max(0.0, float(sys.argv[1]) - time.time())); "
    "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(Optuna storage URL, MLflow tracking URI) of a fresh PostgreSQL + mlflow server."""
    reason = team_servers.unavailable()
    if reason:
        pytest.skip(f"team mode needs a local PostgreSQL: {reason}")
    with team_servers.postgres() as pg:
        optuna_url = pg.create_database("optuna")
        mlflow_url = pg.create_database("mlflow")
        with team_servers.mlflow_server(mlflow_url, tmp_path_factory.mktemp("mlflow-server")) as server:
            yield optuna_url, server.uri


def test_racing_claims_on_postgresql_have_one_winner(team: tuple[str, str]) -> None:
    import threading

    import optuna

    from voiceid import study as studies

    storage, _ = team
    open_ = lambda: studies.open_study("race", storage, seed=0, startup_trials=1, pruner=optuna.pruners.NopPruner())  # noqa: E731
    open_()
    made: list[int] = []
    seen: list[object] = []

    def worker(k: int) -> None:
        seen.append(studies.claim_attr(open_(), "voiceid/x", lambda: made.append(k) or k)[1])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and seen == [made[0]] * 6


def _workspace(root: Path, run: PipelineRun, storage: str) -> Path:
    """The small pipeline run's manifest and feature tables, with params for one grid family on PostgreSQL."""
    for rel in ("data/prepared/manifest.parquet", *(f"data/features/{fs}.parquet" for fs in ("mfcc60", "seed498", "logmel"))):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(run.root / rel)
    params = yaml.safe_load((run.root / "params.yaml").read_text())
    params["grid"].update(families=["logreg"], feature_sets=list(FEATURE_SETS), n_trials=N_TRIALS, timeout_s=120,
                          storage=storage, dataset_name="team")
    params["ecapa"]["dataset_name"] = "team"
    params["select"].update(families=["logreg", "cosine"], n_bootstrap=20)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _env(uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def test_two_workers_share_studies_and_select_registers_the_champion(
    team: tuple[str, str], pipeline_run: PipelineRun, tmp_path: Path
) -> None:
    storage, uri = team
    work = _workspace(tmp_path / "repo", pipeline_run, storage)
    start = time.perf_counter()
    go = time.time() + 20.0  # both start working together (see GATED)
    workers = [
        subprocess.Popen([sys.executable, "-c", GATED, str(go), str(REPO / "stages/grid.py"), "--family", "logreg",
                          "--metrics-dir", f"metrics/w{i}"],
                         cwd=work, env=_env(uri), stdout=(work / f"w{i}.log").open("w"), stderr=subprocess.STDOUT)
        for i in range(2)
    ]
    codes = [w.wait(timeout=240) for w in workers]
    logs = "\n".join((work / f"w{i}.log").read_text()[-3000:] for i in range(2))
    assert codes == [0, 0], logs
    grid_s = time.perf_counter() - start

    import mlflow
    import optuna

    reports = [json.loads((work / f"metrics/w{i}/logreg.json").read_text()) for i in range(2)]
    assert set(reports[0]) == set(FEATURE_SETS)
    client = mlflow.MlflowClient(tracking_uri=uri)
    contributors: set[str] = set()
    for fs in FEATURE_SETS:
        # both workers report the one final run
        assert reports[0][fs]["final_run_id"] == reports[1][fs]["final_run_id"]
        exp = client.get_experiment_by_name(f"voiceid/team/{fs}")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        by_stage: dict[str, list] = {}
        for r in runs:
            by_stage.setdefault(r.data.tags.get("stage", ""), []).append(r)
        assert len(by_stage["study"]) == 1, [r.info.run_id for r in by_stage["study"]]
        assert len(by_stage["final"]) == 1 and by_stage["final"][0].info.run_id == reports[0][fs]["final_run_id"]
        parent = by_stage["study"][0].info.run_id
        assert by_stage["final"][0].data.tags["study_run_id"] == parent

        study = optuna.load_study(study_name=by_stage["final"][0].data.tags["study_name"], storage=storage)
        states = optuna.trial.TrialState
        counted = [t for t in study.trials if t.state in (states.COMPLETE, states.PRUNED)]
        assert len(counted) == N_TRIALS, [(t.number, t.state.name) for t in study.trials]
        logged = [t for t in study.trials if "surplus" not in t.user_attrs and t.state.is_finished()]
        trials = by_stage["trial"]
        numbers = sorted(int(r.data.tags["trial_number"]) for r in trials)
        assert numbers == sorted(t.number for t in logged)  # each trial logged once
        assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent}
        contributors |= {r.data.tags["worker"] for r in trials}
        assert reports[0][fs]["n_trials_complete"] + reports[0][fs]["n_trials_pruned"] == N_TRIALS
    assert len(contributors) == 2, f"one worker ran every trial: {contributors}"

    select = subprocess.run([sys.executable, str(REPO / "stages/selection.py")], cwd=work, env=_env(uri),
                            capture_output=True, text=True, timeout=240)
    assert select.returncode == 0, select.stdout[-2000:] + select.stderr[-3000:]
    version = client.get_model_version_by_alias("voiceid", "champion")
    selection = json.loads((work / "metrics/selection.json").read_text())
    assert str(version.version) == str(selection["champion"]["version"])
    print(f"grid: 2 workers in {grid_s:.1f} s; select + register in {time.perf_counter() - start - grid_s:.1f} s")
