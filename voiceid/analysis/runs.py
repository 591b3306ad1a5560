"""Analysis behind notebooks/compare_runs.ipynb: runs from MLflow, selection outputs, figures.

Inputs (all read-only):

* the MLflow store of the last ``dvc repro`` (:func:`load_runs`, through ``voiceid.tracking``):
  grid studies (tag ``stage=study``) with nested trial runs (``stage=trial``, metric
  ``objective`` on the fixed val split: the stand-in for the seed work's cross-validation
  scores) and final runs (``stage=final``, metrics ``val_*``/``test_*``/``fit_seconds``, tags
  ``family``/``feature_set``);
* the select stage's ``metrics/selection.json`` (:func:`openset_table`) and its plot tables
  ``plots/select/{det,scores,confusion}.csv`` (:func:`det_figure`, :func:`score_figure`).

Every figure is a bare :class:`matplotlib.figure.Figure` (no pyplot state, nothing saved);
tables are DataFrames. f1_micro equals accuracy for single-label predictions, so the bar
charts show accuracy once, labelled as both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from voiceid import tracking
from voiceid.config import load_section

_IDENTITY = {
    "tags.mlflow.runName": "run_name",
    "tags.stage": "stage",
    "tags.family": "family",
    "tags.feature_set": "feature_set",
    "tags.kind": "kind",
    "tags.mlflow.parentRunId": "parent_run_id",
    "tags.data_hash": "data_hash",
    "tags.objective": "objective_name",
}


@dataclass(frozen=True)
class Sources:
    """Where the notebook reads from; every path is absolute."""

    repo_root: Path
    tracking_uri: str
    selection_json: Path
    select_plots: Path
    runs_dir: Path  # metrics/models: the final run ids of the last dvc repro, as select read them


def sources(repo_root: str | Path = ".", tracking_uri: str | None = None) -> Sources:
    """Inputs of a repo: ``tracking_uri`` or ``$MLFLOW_TRACKING_URI`` or params.yaml's ``tracking.uri``.

    A relative sqlite path is taken relative to ``repo_root`` (where ``dvc repro`` ran), not to
    the notebook's folder.
    """
    root = Path(repo_root).resolve()
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        params = root / "params.yaml"
        uri = load_section(tracking.TrackingParams, "tracking", params).uri if params.is_file() else None
    uri = uri or tracking.DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not Path(uri[len(prefix) :]).is_absolute():
        uri = prefix + str(root / uri[len(prefix) :])
    return Sources(root, uri, root / "metrics" / "selection.json", root / "plots" / "select", root / "metrics" / "models")


def pipeline_run_ids(runs_dir: str | Path) -> set[str] | None:
    """The final run ids the grid/ECAPA stages of the last ``dvc repro`` wrote (what select compared).

    None when the folder does not exist (a store filled some other way).
    """
    folder = Path(runs_dir)
    if not folder.is_dir():
        return None
    ids: set[str] = set()
    for path in sorted(folder.glob("*.json")):
        summary = json.loads(path.read_text(encoding="utf-8"))
        entries = [summary] if "final_run_id" in summary else [e for e in summary.values() if isinstance(e, dict)]
        ids.update(str(e["final_run_id"]) for e in entries if "final_run_id" in e)
    return ids


def load_runs(tracking_uri: str, experiment_prefix: str = "voiceid/") -> pd.DataFrame:
    """Every run of the project's experiments as a tidy table (:func:`tidy_runs`)."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///") :]).is_file():
        raise FileNotFoundError(f"{tracking_uri}: no MLflow store there (run `dvc repro` first)")
    # configure() lets $MLFLOW_TRACKING_URI win; the caller's URI is the one meant here.
    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        tracking.configure(tracking_uri)
        raw = tracking.runs_frame(experiment_prefix=experiment_prefix)
    finally:
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return tidy_runs(raw)


def tidy_runs(raw: pd.DataFrame) -> pd.DataFrame:
    """MLflow's search_runs frame with identity tags as plain columns and metrics unprefixed.

    Columns: run_id, experiment, run_name, stage, family, feature_set, kind, parent_run_id,
    data_hash, objective_name, status, start_time, then one column per metric; ``params.*``
    and the other ``tags.*`` columns are kept as they are.
    """
    frame = raw.copy()
    for column in ("run_id", "experiment", "status", "start_time", *_IDENTITY):
        if column not in frame.columns:
            frame[column] = None
    frame = frame.rename(columns=_IDENTITY)
    metrics = {c: c[len("metrics.") :] for c in frame.columns if c.startswith("metrics.")}
    clash = sorted(set(metrics.values()) & set(frame.columns))
    if clash:
        raise ValueError(f"metric names clash with run columns: {', '.join(clash)}")
    frame = frame.rename(columns=metrics)
    head = ["run_id", "experiment", *_IDENTITY.values(), "status", "start_time"]
    rest = [c for c in frame.columns if c not in head and c not in metrics.values()]
    return frame[head + sorted(metrics.values()) + rest].reset_index(drop=True)


def final_runs(runs: pd.DataFrame, *, run_ids: Collection[str] | None = None, latest_data: bool = True) -> pd.DataFrame:
    """One final run per (family, feature set): exactly ``run_ids`` when given, else the newest.

    Repeated ``dvc repro`` runs pile up in the store. Pass :func:`pipeline_run_ids` to show the
    very runs the select stage compared; without it the newest run of each family is shown
    and ``latest_data`` keeps the ``data_hash`` of the most recent final run so another
    dataset's runs are not mixed in.
    """
    finals = runs[runs["stage"] == "final"].sort_values("start_time", ascending=False)
    if run_ids is not None:
        finals = finals[finals["run_id"].isin(set(run_ids))]
    if latest_data and finals["data_hash"].notna().any():
        newest = finals["data_hash"].dropna().iloc[0]
        finals = finals[finals["data_hash"].isna() | (finals["data_hash"] == newest)]
    finals = finals.drop_duplicates(["family", "feature_set"], keep="first")
    return finals.sort_values(["feature_set", "family"]).reset_index(drop=True)


def best_per_family(finals: pd.DataFrame, metric: str = "val_f1_weighted", *, maximize: bool = True) -> pd.DataFrame:
    """For each family the final run with the best ``metric`` over feature sets (runs lacking it dropped)."""
    if metric not in finals.columns:
        return finals.iloc[0:0]
    usable = finals[finals[metric].notna()]
    ordered = usable.sort_values(metric, ascending=not maximize)
    return ordered.drop_duplicates("family", keep="first").sort_values("family").reset_index(drop=True)


def summary_table(
    finals: pd.DataFrame,
    metrics: Sequence[str] = (
        "val_f1_weighted",
        "test_f1_weighted",
        "test_f1_macro",
        "test_accuracy",
        "test_top5_accuracy",
        "test_eer",
        "test_min_dcf",
        "fit_seconds",
    ),
) -> pd.DataFrame:
    """Final runs indexed by (family, feature_set) with the metrics that exist in the store."""
    present = [m for m in metrics if m in finals.columns]
    return finals.set_index(["family", "feature_set"])[present].sort_index()


def trial_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed trials: family, feature_set, trial number, objective, objective name."""
    trials = runs[(runs["stage"] == "trial")]
    if "objective" not in trials.columns:
        return pd.DataFrame(columns=["family", "feature_set", "trial", "objective", "objective_name"])
    trials = trials[trials["objective"].notna()]
    names = (
        runs[runs["stage"] == "final"]
        .dropna(subset=["objective_name"])
        .drop_duplicates(["family"])
        .set_index("family")["objective_name"]
    )
    number = trials["tags.trial_number"] if "tags.trial_number" in trials.columns else pd.Series(np.nan, trials.index)
    return pd.DataFrame(
        {
            "family": trials["family"],
            "feature_set": trials["feature_set"],
            "trial": pd.to_numeric(number, errors="coerce"),
            "objective": trials["objective"].astype(float),
            "objective_name": trials["family"].map(names).fillna("objective"),
        }
    ).reset_index(drop=True)
