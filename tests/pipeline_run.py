"""A small but real pipeline run, for the notebook, MLflow UI and analysis tests.

``build(workspace)`` symlinks a subset of the embedded LibriSpeech data (``data/default``:
6 multi-utterance speakers to enrol, 10 single-utterance speakers as unknowns) into a temp
workspace, writes a params.yaml derived from the repo's with tiny budgets (2 trials per
study, small CatBoost, one short ECAPA trial, 50 bootstrap resamples), and runs the real
stage entry points there in order (``stage_runner.run_stage``): prepare, features, adapt,
grid --family F for every ``grid.families``, ecapa, select. They run in one child process (cwd = the workspace, so
every default output path lands there) that imports the libraries once; its
``$MLFLOW_TRACKING_URI`` and ``grid.storage`` point at the workspace, so the repo's own
stores are never touched. ``tests/conftest.py`` builds it once per test session.

``python tests/pipeline_run.py WORKSPACE`` runs the stages in WORKSPACE (what ``build`` calls).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from stage_runner import run_stage

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "default"
N_ENROLLED = 6
N_UNKNOWN = 10
N_BACKGROUND = 4  # single-utterance speakers as background (AS-norm cohort, ECAPA training)

# Tiny budgets over the repo's params.yaml (every other value, including the families, stays).
SMALL: dict[str, Any] = {
    "prepare": {"utts_per_speaker": 8, "train_per_speaker": 4, "val_per_speaker": 2, "unknown_utts_per_speaker": 1,
                "n_background": N_BACKGROUND, "n_jobs": 2},
    "features": {"n_jobs": 2},
    "adapt": {"steps": 4, "batch_size": 8},
    "grid": {"n_trials": 2, "timeout_s": 30, "tpe_startup_trials": 2, "pruner_startup_trials": 1,
             "catboost": {"iterations_min": 10, "iterations_max": 20, "depth_min": 2, "depth_max": 3}},
    "ecapa": {"max_nontarget": 2000,
              "model": {"channels": 32, "se_channels": 16, "attention_channels": 32, "embedding_dim": 64},
              "train": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 16, "patience": 1},
              "search": {"n_trials": 1, "channels": [32]}},
    "select": {"n_bootstrap": 50},
}


@dataclass(frozen=True)
class PipelineRun:
    root: Path  # the workspace: plays the repo root (params.yaml, mlflow.db, metrics/, plots/)
    uri: str  # the MLflow store the stages logged to
    grid_families: tuple[str, ...]  # grid.families of the repo's params.yaml
    feature_sets: tuple[str, ...]
    dataset: str  # experiments are voiceid/<dataset>/<feature set>
    selection: dict[str, Any]  # metrics/selection.json
    seconds: dict[str, float]  # wall time per stage

    @property
    def families(self) -> tuple[str, ...]:
        """Every family with a final run: the grid's and ECAPA."""
        return (*self.grid_families, "ecapa")

    def experiment(self, feature_set: str) -> str:
        return f"voiceid/{self.dataset}/{feature_set}"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key not in base:  # a renamed repo param must fail here, not silently add a key
            raise KeyError(f"tests/pipeline_run.py: params.yaml has no key {key!r}")
        out[key] = _merge(base[key], value) if isinstance(value, dict) else value
    return out


def _speakers() -> tuple[list[str], list[str]]:
    """The first N_ENROLLED multi-utterance and N_UNKNOWN + N_BACKGROUND single-utterance speakers (sorted)."""
    with (DATA / "metadata.csv").open(newline="") as f:
        roles = {row["speaker"]: row["role"] for row in csv.DictReader(f)}
    multi = sorted(s for s, r in roles.items() if r == "multi")[:N_ENROLLED]
    single = sorted(s for s, r in roles.items() if r == "single")[: N_UNKNOWN + N_BACKGROUND]
    if len(multi) < N_ENROLLED or len(single) < N_UNKNOWN + N_BACKGROUND:
        raise RuntimeError(f"{DATA}: expected {N_ENROLLED} multi- and {N_UNKNOWN} single-utterance speakers")
    return multi, single


def build(workspace: Path, timeout_s: float = 600) -> PipelineRun:
    """Run the pipeline on the data subset in ``workspace`` and describe what it left there."""
    workspace.mkdir(parents=True, exist_ok=True)
    data = workspace / "data" / "default"
    data.mkdir(parents=True)
    for speaker in [s for group in _speakers() for s in group]:
        (data / speaker).mkdir()
        for audio in (DATA / speaker).iterdir():  # per file: the folder scan does not follow linked folders
            (data / speaker / audio.name).symlink_to(audio)
    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    small = {**SMALL, "grid": {**SMALL["grid"], "storage": f"sqlite:///{workspace / 'optuna.db'}"},
             "tracking": {"uri": uri}}
    params = _merge(params, small)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    # $MLFLOW_TRACKING_URI wins over tracking.uri: set it so an outer value cannot redirect the runs
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "true", "OMP_NUM_THREADS": "2"}
    try:
        proc = subprocess.run([sys.executable, __file__, str(workspace)], cwd=workspace, env=env,
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"pipeline run in {workspace} took over {timeout_s} s") from exc
    (workspace / "pipeline.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline run failed ({proc.returncode}); log {workspace / 'pipeline.log'}:\n"
                           f"{(proc.stdout + proc.stderr)[-4000:]}")
    return PipelineRun(
        root=workspace, uri=uri, grid_families=tuple(params["grid"]["families"]),
        feature_sets=tuple(params["grid"]["feature_sets"]), dataset=params["grid"]["dataset_name"],
        selection=json.loads((workspace / "metrics" / "selection.json").read_text()),
        seconds=json.loads((workspace / "stage_seconds.json").read_text()),
    )


def _run_stages(workspace: Path) -> int:
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    calls = [("prepare", []), ("features", ["--no-progress"]), ("adapt", [])]
    calls += [(f"grid@{f}", ["--family", f]) for f in params["grid"]["families"]]
    calls += [("ecapa", []), ("select", [])]
    seconds = {}
    for name, argv in calls:
        start = time.perf_counter()
        module = {"select": "selection"}.get(name, name.split("@")[0])
        rc = run_stage(module, argv)
        seconds[name] = round(time.perf_counter() - start, 2)
        print(f"pipeline_run: {name} rc {rc} in {seconds[name]} s", flush=True)
        if rc != 0:
            return rc
    (workspace / "stage_seconds.json").write_text(json.dumps(seconds, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.chdir(sys.argv[1])
    raise SystemExit(_run_stages(Path(sys.argv[1])))
