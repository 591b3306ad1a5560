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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.stats import norm

from voiceid import tracking
from voiceid.config import load_section

BAR_METRICS = ("f1_weighted", "f1_macro", "accuracy")
METRIC_LABELS = {"accuracy": "accuracy (= f1_micro)"}
EMBEDDING_FAMILIES = frozenset({"ecapa", "cosine"})
# Column order of the open-set table; other metrics of selection.json follow alphabetically.
OPENSET_COLUMNS = (
    "dir_far_1", "dir_far_5", "dir", "open_set_accuracy", "far", "frr", "eer", "min_dcf", "accuracy", "f1_weighted",
)
_IDENTITY = {
    "tags.mlflow.runName": "run_name", "tags.stage": "stage", "tags.family": "family",
    "tags.feature_set": "feature_set", "tags.kind": "kind", "tags.mlflow.parentRunId": "parent_run_id",
    "tags.data_hash": "data_hash", "tags.objective": "objective_name",
}


@dataclass(frozen=True)
class Sources:
    """Where the notebook reads from; every path is absolute."""

    repo_root: Path
    tracking_uri: str
    selection_json: Path
    select_plots: Path


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
    if uri.startswith(prefix) and not Path(uri[len(prefix):]).is_absolute():
        uri = prefix + str(root / uri[len(prefix):])
    return Sources(root, uri, root / "metrics" / "selection.json", root / "plots" / "select")


# --- runs ------------------------------------------------------------------------------------


def load_runs(tracking_uri: str, experiment_prefix: str = "voiceid/") -> pd.DataFrame:
    """Every run of the project's experiments as a tidy table (:func:`tidy_runs`)."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
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
    metrics = {c: c[len("metrics."):] for c in frame.columns if c.startswith("metrics.")}
    clash = sorted(set(metrics.values()) & set(frame.columns))
    if clash:
        raise ValueError(f"metric names clash with run columns: {', '.join(clash)}")
    frame = frame.rename(columns=metrics)
    head = ["run_id", "experiment", *_IDENTITY.values(), "status", "start_time"]
    rest = [c for c in frame.columns if c not in head and c not in metrics.values()]
    return frame[head + sorted(metrics.values()) + rest].reset_index(drop=True)


def final_runs(runs: pd.DataFrame, *, latest_data: bool = True) -> pd.DataFrame:
    """The newest final run per (family, feature set), optionally only runs of the newest data.

    Repeated ``dvc repro`` runs pile up in the store; ``latest_data`` keeps the ``data_hash``
    of the most recent final run so another dataset's runs are not mixed in.
    """
    finals = runs[runs["stage"] == "final"].sort_values("start_time", ascending=False)
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


def summary_table(finals: pd.DataFrame, metrics: Sequence[str] = ("val_f1_weighted", "test_f1_weighted",
                  "test_f1_macro", "test_accuracy", "test_top5_accuracy", "test_eer", "test_min_dcf",
                  "fit_seconds")) -> pd.DataFrame:
    """Final runs indexed by (family, feature_set) with the metrics that exist in the store."""
    present = [m for m in metrics if m in finals.columns]
    return finals.set_index(["family", "feature_set"])[present].sort_index()


# --- figures over runs -----------------------------------------------------------------------


def metric_bars(finals: pd.DataFrame, metrics: Sequence[str] = BAR_METRICS, split: str = "test") -> Figure:
    """Grouped bars: ``<split>_<metric>`` per family, one panel per feature set.

    Runs lacking the first metric are left out; ECAPA (closed-set scores of its centroids) gets a logmel panel.
    """
    columns = [f"{split}_{m}" for m in metrics]
    data = finals[finals[columns[0]].notna()] if columns[0] in finals.columns else finals.iloc[0:0]
    sets, axes = _panels(data, per_family=0.9, height=4.2)
    fig = axes[0].figure
    width = 0.8 / len(metrics)
    for ax, fs in zip(axes, sets):
        part = data[data["feature_set"] == fs].sort_values("family")
        x = np.arange(len(part))
        for i, (m, col) in enumerate(zip(metrics, columns)):
            values = part[col].to_numpy(dtype=float) if col in part.columns else np.full(len(part), np.nan)
            ax.bar(x + (i - (len(metrics) - 1) / 2) * width, values, width, label=METRIC_LABELS.get(m, m))
        ax.set_xticks(x, part["family"].tolist(), rotation=45, ha="right")
        ax.set_title(f"feature set {fs}")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"{split} score")
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Final runs: {split} metrics per family")
    return fig


def _panels(table: pd.DataFrame, per_family: float, height: float) -> tuple[list[str], list[Axes]]:
    """One panel per feature set, each as wide as its number of families (ECAPA's logmel: one)."""
    sets = sorted(table["feature_set"].dropna().unique()) or ["(none)"]
    counts = [max(table.loc[table["feature_set"] == fs, "family"].nunique(), 1) for fs in sets]
    fig = Figure(figsize=(max(6.0, per_family * sum(counts) + 1.5), height), layout="constrained")
    axes = fig.subplots(1, len(sets), sharey=True, squeeze=False, gridspec_kw={"width_ratios": counts})[0]
    return sets, list(axes)


def fit_time_figure(finals: pd.DataFrame, metric: str = "val_f1_weighted") -> Figure:
    """Training time (``fit_seconds`` of the refit) of each family's best final run by ``metric``."""
    best = best_per_family(finals, metric)
    if "fit_seconds" in best.columns:
        best = best[best["fit_seconds"].notna()]
    fig = Figure(figsize=(7, 0.45 * max(len(best), 2) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    if best.empty or "fit_seconds" not in best.columns:
        ax.text(0.5, 0.5, f"no final run with {metric} and fit_seconds", ha="center", transform=ax.transAxes)
        return fig
    best = best.sort_values("fit_seconds")
    y = np.arange(len(best))
    ax.barh(y, best["fit_seconds"], color="tab:blue")
    ax.set_yticks(y, [f"{f} ({fs})" for f, fs in zip(best["family"], best["feature_set"])])
    for yi, (secs, score) in enumerate(zip(best["fit_seconds"], best[metric])):
        ax.annotate(f" {secs:.3g} s, {metric} {score:.3f}", (secs, yi), va="center", fontsize=8)
    if best["fit_seconds"].max() / max(best["fit_seconds"].min(), 1e-9) > 50:
        ax.set_xscale("log")  # clustering fits in ms, boosted trees in minutes
    ax.set_xlabel("fit seconds (refit of the best configuration)")
    ax.set_title(f"Training time of each family's best model (by {metric})")
    ax.margins(x=0.35)
    return fig


def trial_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed trials: family, feature_set, trial number, objective, objective name."""
    trials = runs[(runs["stage"] == "trial")]
    if "objective" not in trials.columns:
        return pd.DataFrame(columns=["family", "feature_set", "trial", "objective", "objective_name"])
    trials = trials[trials["objective"].notna()]
    names = (
        runs[runs["stage"] == "final"].dropna(subset=["objective_name"])
        .drop_duplicates(["family"]).set_index("family")["objective_name"]
    )
    number = trials["tags.trial_number"] if "tags.trial_number" in trials.columns else pd.Series(np.nan, trials.index)
    return pd.DataFrame({
        "family": trials["family"], "feature_set": trials["feature_set"],
        "trial": pd.to_numeric(number, errors="coerce"), "objective": trials["objective"].astype(float),
        "objective_name": trials["family"].map(names).fillna("objective"),
    }).reset_index(drop=True)


def trial_figure(trials: pd.DataFrame) -> Figure:
    """Validation objective of every trial per family (box + points), one panel per feature set.

    The grid tunes on a fixed val split (README "Experiment grid"), so these trial scores
    take the place of the seed work's cross-validation scores.
    """
    sets, axes = _panels(trials, per_family=0.9, height=4.2)
    fig = axes[0].figure
    rng = np.random.default_rng(0)  # jitter only
    for ax, fs in zip(axes, sets):
        part = trials[trials["feature_set"] == fs]
        families = sorted(part["family"].dropna().unique())
        groups = [part.loc[part["family"] == f, "objective"].to_numpy() for f in families]
        ax.boxplot([g if len(g) else [np.nan] for g in groups], widths=0.5, showfliers=False)
        for i, g in enumerate(groups, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(g)), g, s=12, alpha=0.7, color="tab:orange", zorder=3)
        labels = [f"{f}\n({_objective_of(part, f)})" for f in families]
        ax.set_xticks(np.arange(1, len(families) + 1), labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"feature set {fs}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("validation objective per trial")
    fig.suptitle("Optuna trials (nested runs): validation objective per family")
    return fig


def _objective_of(part: pd.DataFrame, family: str) -> str:
    names = part.loc[part["family"] == family, "objective_name"].dropna().unique()
    return str(names[0]) if len(names) else "-"


# --- selection outputs -----------------------------------------------------------------------


def read_json(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: not found (run `dvc repro select` first)")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from exc


def read_table(path: str | Path, columns: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV plot table, with a clear error naming the file when it or a needed column is missing."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: not found (run `dvc repro select` first)")
    table = pd.read_csv(p)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{p}: missing column(s) {', '.join(missing)}")
    return table


def openset_table(selection: Mapping[str, Any], *, intervals: bool = False) -> pd.DataFrame:
    """One row per selection candidate: its test open-set metrics at the chosen threshold.

    Columns: kind, feature_set, threshold (the stage's rule), champion (bool), then the test
    metrics (:data:`OPENSET_COLUMNS` first). ``intervals`` adds ``<m>_lo``/``<m>_hi`` (bootstrap).
    """
    champion = selection.get("champion", {})
    rule = champion.get("threshold_rule")
    rows = {}
    for family, c in selection.get("candidates", {}).items():
        test = c.get("test", {})
        keep = {k: v for k, v in test.items() if intervals or not k.endswith(("_lo", "_hi"))}
        rows[family] = {
            "kind": c.get("kind"), "feature_set": c.get("feature_set"),
            "threshold": c.get("thresholds", {}).get(rule, np.nan),
            "champion": family == champion.get("family"), **keep,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "candidate"
    if table.empty:
        return table
    base = [m for m in OPENSET_COLUMNS if m in table.columns]
    others = sorted(c for c in table.columns if c not in {"kind", "feature_set", "threshold", "champion", *base})
    ordered = [*base, *others]
    if intervals:
        ordered = [c for m in base for c in (m, f"{m}_lo", f"{m}_hi") if c in table.columns] + [
            c for c in others if not any(c in (f"{m}_lo", f"{m}_hi") for m in base)
        ]
    metric = champion.get("champion_metric")
    table = table[["kind", "feature_set", "threshold", "champion", *ordered]]
    if metric in table.columns:
        table = table.sort_values(metric, ascending=metric in ("eer", "min_dcf", "far", "frr"))
    return table


def probe_outcomes(scores: pd.DataFrame, confusion: pd.DataFrame | None = None) -> pd.DataFrame:
    """``scores`` (score, group, threshold) with an ``outcome`` per probe.

    With ``true``/``pred`` columns the outcome is the top-1 answer (right/wrong speaker)
    whatever the threshold; otherwise, with the champion's ``confusion`` table (actual,
    predicted; the select stage writes both tables from the same probes in the same order),
    it is the decision at the threshold: identified, misidentified or rejected. Unknown
    speakers' probes are "unknown" either way.
    """
    out = scores.copy()
    enrolled = out["group"].to_numpy() == "enrolled"
    outcome = np.where(enrolled, "enrolled", "unknown").astype(object)
    if {"true", "pred"} <= set(out.columns):
        right = out["true"].astype(str).to_numpy() == out["pred"].astype(str).to_numpy()
        outcome[enrolled & right] = "enrolled, top-1 right"
        outcome[enrolled & ~right] = "enrolled, top-1 wrong"
    elif confusion is not None:
        if len(confusion) != len(out):
            raise ValueError(f"scores ({len(out)} rows) and confusion ({len(confusion)} rows) describe different probes")
        actual = confusion["actual"].astype(str).to_numpy()
        predicted = confusion["predicted"].astype(str).to_numpy()
        if np.any((actual == "unknown") == enrolled):
            raise ValueError("scores and confusion rows are not aligned (enrolled/unknown differ)")
        outcome[enrolled & (predicted == actual)] = "enrolled, identified"
        outcome[enrolled & (predicted == "unknown")] = "enrolled, rejected"
        outcome[enrolled & (predicted != actual) & (predicted != "unknown")] = "enrolled, misidentified"
    out["outcome"] = outcome
    return out


def score_figure(outcomes: pd.DataFrame, title: str = "") -> Figure:
    """Score histograms of enrolled vs unknown probes (left) and by outcome (right), with the threshold."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2, sharex=True)
    bins = np.linspace(min(0.0, outcomes["score"].min()), max(1.0, outcomes["score"].max()), 31)
    for ax, column in ((left, "group"), (right, "outcome")):
        for name, part in outcomes.groupby(column, sort=True):
            ax.hist(part["score"], bins=bins, histtype="step", linewidth=1.8, density=True,
                    label=f"{name} (n={len(part)})")
        ax.set_xlabel("open-set score of the top-1 speaker")
    if "threshold" in outcomes.columns and outcomes["threshold"].notna().any():
        t = float(outcomes["threshold"].dropna().iloc[0])
        for ax in (left, right):
            ax.axvline(t, color="black", linestyle="--", linewidth=1, label=f"threshold {t:.3f}")
    for ax in (left, right):
        ax.legend(fontsize=8, loc="best")
    left.set_ylabel("density")
    left.set_title("enrolled vs unknown speakers")
    right.set_title("by outcome")
    fig.suptitle(title or "Score distributions of the champion (test probes)")
    return fig


_DET_TICKS = np.array([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8])
_DET_CLIP = 1e-3


def det_figure(det: pd.DataFrame, eers: Mapping[str, float] | None = None) -> Figure:
    """Open-set DET (unknown accepted vs enrolled rejected) of every candidate on normal-deviate axes.

    Embedding models (ECAPA, cosine) are drawn solid and thick, classifiers dashed, so ECAPA's
    curve reads against the classifiers'. ``eers`` (candidate -> EER) labels the legend.
    """
    fig = Figure(figsize=(6.5, 6), layout="constrained")
    ax = fig.add_subplot()
    for name, part in det.groupby("candidate", sort=True):
        x = norm.ppf(np.clip(part["p_fa"].to_numpy(float), _DET_CLIP, 1 - _DET_CLIP))
        y = norm.ppf(np.clip(part["p_miss"].to_numpy(float), _DET_CLIP, 1 - _DET_CLIP))
        embedding = name in EMBEDDING_FAMILIES
        label = f"{name} (EER {eers[name]:.1%})" if eers and name in eers else str(name)
        ax.plot(x, y, linestyle="-" if embedding else "--", linewidth=2.6 if embedding else 1.4, label=label)
    ticks = norm.ppf(_DET_TICKS)
    labels = [f"{100 * t:g}" for t in _DET_TICKS]
    lim = (norm.ppf(_DET_CLIP), norm.ppf(0.8))
    ax.plot(lim, lim, color="grey", linewidth=0.8, linestyle=":", label="EER line")
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("unknown speakers accepted, P_fa (%)")
    ax.set_ylabel("enrolled speakers rejected, P_miss (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("DET on test probes: ECAPA / cosine (solid) vs classifiers (dashed)")
    return fig


def candidate_eers(selection: Mapping[str, Any]) -> dict[str, float]:
    """Test EER of each selection candidate (for :func:`det_figure`'s legend)."""
    return {f: float(c["test"]["eer"]) for f, c in selection.get("candidates", {}).items() if "eer" in c.get("test", {})}
