"""Figures of the analysis notebook: metric bars, fit times, trial distributions, score histograms, DET."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

BAR_METRICS = ("f1_weighted", "f1_macro", "accuracy")


METRIC_LABELS = {"accuracy": "accuracy (= f1_micro)"}


def metric_bars(finals: pd.DataFrame, metrics: Sequence[str] = BAR_METRICS, split: str = "test") -> Figure:
    """Grouped bars: ``<split>_<metric>`` per family, one panel per feature set.

    Runs lacking the first metric are left out; ECAPA (closed-set scores of its centroids) gets a logmel panel.
    """
    columns = [f"{split}_{m}" for m in metrics]
    data = finals[finals[columns[0]].notna()] if columns[0] in finals.columns else finals.iloc[0:0]
    fig, sets, axes = _panels(data, per_family=0.9, height=4.2)
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


def _panels(table: pd.DataFrame, per_family: float, height: float) -> tuple[Figure, list[str], list[Axes]]:
    """A figure with one panel per feature set, each as wide as its number of families (ECAPA's logmel: one)."""
    sets = sorted(table["feature_set"].dropna().unique()) or ["(none)"]
    counts = [max(table.loc[table["feature_set"] == fs, "family"].nunique(), 1) for fs in sets]
    fig = Figure(figsize=(max(6.0, per_family * sum(counts) + 1.5), height), layout="constrained")
    axes = fig.subplots(1, len(sets), sharey=True, squeeze=False, gridspec_kw={"width_ratios": counts})[0]
    return fig, sets, list(axes)


def fit_time_figure(best: pd.DataFrame, metric: str = "val_f1_weighted") -> Figure:
    """Training time (``fit_seconds`` of the refit) of each family's best final run by ``metric``.

    ``best``: one final run per family, e.g. :func:`voiceid.analysis.runs.best_per_family`.
    """
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


def trial_figure(trials: pd.DataFrame) -> Figure:
    """Validation objective of every trial per family (box + points), one panel per feature set.

    The grid tunes on a fixed val split (README "Experiment grid"), so these trial scores
    take the place of the seed work's cross-validation scores.
    """
    fig, sets, axes = _panels(trials, per_family=0.9, height=4.2)
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


def score_figure(outcomes: pd.DataFrame, title: str = "") -> Figure:
    """Score histograms of enrolled vs unknown probes (left) and by outcome (right), with the threshold."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2, sharex=True)
    bins = np.linspace(min(0.0, outcomes["score"].min()), max(1.0, outcomes["score"].max()), 31)
    for ax, column in ((left, "group"), (right, "outcome")):
        for name, part in outcomes.groupby(column, sort=True):
            ax.hist(part["score"], bins=bins, histtype="step", linewidth=1.8, density=True, label=f"{name} (n={len(part)})")
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


def _objective_of(part: pd.DataFrame, family: str) -> str:
    names = part.loc[part["family"] == family, "objective_name"].dropna().unique()
    return str(names[0]) if len(names) else "-"
