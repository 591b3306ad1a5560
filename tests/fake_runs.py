"""A small, seeded MLflow store and selection outputs shaped like the pipeline's.

For the fast analysis unit tests (exact run counts, every probe outcome); the notebook,
MLflow UI and real-output analysis tests use a small real pipeline run instead
(tests/pipeline_run.py). Runs are logged through ``voiceid.tracking`` as the grid and ECAPA
stages log them (a study run with nested trial runs and a final run per family and feature
set; one ECAPA final run); the selection outputs are written by the select stage's own report
code (``voiceid.select.report``) from seeded synthetic probes. So the
tests exercise the real layouts without minutes of training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GRID_FAMILIES = ("kmeans", "dbscan", "svc", "mlp", "catboost", "knn", "logreg")
CLUSTERING = frozenset({"kmeans", "dbscan"})
FEATURE_SETS = ("mfcc60", "seed498")
DATASET = "fake"


@dataclass(frozen=True)
class FakeStore:
    root: Path  # plays the repo root: mlflow.db here
    uri: str
    experiments: tuple[str, ...]
    families: tuple[str, ...]


def build_store(
    root: Path,
    *,
    families: tuple[str, ...] = GRID_FAMILIES,
    feature_sets: tuple[str, ...] = FEATURE_SETS,
    n_trials: int = 3,
    seed: int = 0,
    with_ecapa: bool = True,
) -> FakeStore:
    """Log fake study/trial/final runs to ``sqlite:///<root>/mlflow.db`` and return the store."""
    from voiceid import tracking

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    # configure() lets $MLFLOW_TRACKING_URI win (as under dvc repro); callers set it to ``uri``.
    if os.environ.get("MLFLOW_TRACKING_URI", uri) != uri:
        raise RuntimeError("set MLFLOW_TRACKING_URI to the fake store's URI (monkeypatch.setenv) first")
    tracking.configure(uri)
    rng = np.random.default_rng(seed)
    experiments = []
    for fs_index, feature_set in enumerate(feature_sets):
        experiment = tracking.experiment_name(DATASET, feature_set)
        experiments.append(experiment)
        for f_index, family in enumerate(families):
            kind = "clustering" if family in CLUSTERING else "classifier"
            tags = {"family": family, "feature_set": feature_set, "kind": kind, "dataset": DATASET, "seed": str(seed)}
            # a deterministic quality ladder so "best" is well defined in the tests
            base = 0.45 + 0.06 * f_index + 0.05 * fs_index
            with tracking.start_study_run(experiment, f"{DATASET}/{feature_set}/{family}/f1_weighted/abc", tags) as srun:
                for n in range(n_trials):
                    value = float(np.clip(base - 0.1 + 0.05 * n + rng.normal(0, 0.01), 0, 1))
                    tracking.log_trial(
                        srun, number=n, params={"C": 10.0**n}, value=value, state="COMPLETE",
                        tags=tags, metrics={"val_f1_weighted": value}, duration_s=0.1 * (n + 1),
                    )
            metrics = {
                "val_f1_weighted": base, "test_f1_weighted": base - 0.02, "test_f1_macro": base - 0.04,
                "test_accuracy": base, "val_accuracy": base + 0.01, "fit_seconds": 0.05 * (f_index + 1) * (fs_index + 1),
            }
            if kind == "classifier":
                metrics["test_top5_accuracy"] = min(1.0, base + 0.2)
            tracking.log_final_run(
                experiment, f"{family}-final", params={"seed": seed}, metrics=metrics,
                tags={**tags, "study_run_id": srun.run_id, "objective": "ari" if kind == "clustering" else "f1_weighted"},
            )
    if with_ecapa:  # as voiceid/ecapa/tune.py logs it: experiment voiceid/<dataset>/logmel
        experiment = tracking.experiment_name(DATASET, "logmel")
        experiments.append(experiment)
        tags = {"family": "ecapa", "feature_set": "logmel", "kind": "embedder", "dataset": DATASET, "seed": str(seed)}
        with tracking.start_study_run(experiment, f"{DATASET}/logmel/ecapa/eer/abc", tags) as srun:
            for n in range(n_trials):
                value = 0.2 - 0.03 * n
                tracking.log_trial(srun, number=n, params={"lr": 1e-3}, value=value, state="COMPLETE", tags=tags,
                                   metrics={"val_eer": value})
        tracking.log_final_run(
            experiment, "ecapa-final", params={"seed": seed},
            metrics={"eer": 0.1, "val_eer": 0.08, "test_eer": 0.1, "test_min_dcf": 0.4, "test_accuracy": 0.9,
                     "test_f1_weighted": 0.88, "test_f1_macro": 0.87, "val_f1_weighted": 0.9},
            tags={**tags, "study_run_id": srun.run_id, "objective": "val_eer"},
        )
    all_families = families + (("ecapa",) if with_ecapa else ())
    return FakeStore(root, uri, tuple(experiments), all_families)


SELECT_FAMILIES = ("svc", "mlp", "catboost", "knn", "logreg", "ecapa", "cosine")


def _probes(rng: np.random.Generator, skill: float, n_speakers: int = 6, per_speaker: int = 4, n_unknown: int = 12) -> Any:
    """Synthetic test probes: enrolled scores rise with ``skill``, unknown scores stay low."""
    from voiceid.scoring.openset import Probes

    speakers = np.repeat([f"s{i}" for i in range(n_speakers)], per_speaker)
    right = rng.random(len(speakers)) < 0.6 + 0.3 * skill
    pred = np.where(right, speakers, np.roll(speakers, per_speaker))
    known_score = np.clip(rng.normal(0.45 + 0.3 * skill, 0.2, len(speakers)), 0, 1)
    unknown_score = np.clip(rng.normal(0.35, 0.15, n_unknown), 0, 1)
    return Probes(
        np.r_[speakers, [f"u{i}" for i in range(n_unknown)]],
        np.r_[pred, rng.choice(speakers, n_unknown)],
        np.r_[known_score, unknown_score],
        np.r_[np.ones(len(speakers), bool), np.zeros(n_unknown, bool)],
    )


def write_selection(root: Path, families: tuple[str, ...] = SELECT_FAMILIES, seed: int = 0) -> dict[str, Any]:
    """metrics/selection.json and plots/select/*.csv under ``root``, as stages/selection.py writes them."""
    from types import SimpleNamespace

    from voiceid.scoring import openset
    from voiceid.select.candidates import Candidate, Source
    from voiceid.select.params import SelectParams
    from voiceid.select.protocol import SelectionResult
    from voiceid.select.report import for_json, plot_tables, summary

    params = SelectParams(families=families, n_bootstrap=20)
    rng = np.random.default_rng(seed)
    candidates, test = [], {}
    for i, family in enumerate(families):
        kind = "embedding" if family in ("ecapa", "cosine") else "classifier"
        val, probes = _probes(rng, i / len(families)), _probes(rng, i / len(families))
        rules = {r: SimpleNamespace(threshold_=0.5 + 0.01 * k) for k, r in enumerate(("fbeta", "fpr", "eer"))}
        scorer = SimpleNamespace(calibrator=SimpleNamespace(inverse=lambda x: x))  # embedding summaries invert it
        source = Source(family, kind, "logmel" if family == "ecapa" else "mfcc60", f"run-{family}", None,
                        params.val_metric, 0.5)
        report = openset.report(val, rules[params.threshold_rule].threshold_)
        candidates.append(Candidate(source, scorer, {"method": "sigmoid", "losses": {}}, val, rules, report))
        test[family] = probes
    champion = max(candidates, key=lambda c: c.val_report[params.champion_metric])
    embedding = [c for c in candidates if c.source.kind == "embedding"]
    result = SelectionResult(candidates, champion, embedding[0] if embedding else None, test=test)
    thresholds = {c.family: c.threshold(params.threshold_rule) for c in candidates}
    result.test_reports, result.test_vs_champion = openset.paired_bootstrap(
        test, lambda name, p: openset.report(p, thresholds[name]), champion.family, params.n_bootstrap, seed
    )
    result.champion_metric = params.champion_metric
    for c in candidates:
        result.test_by_rule[c.family] = {r: dict(zip(("far", "frr"), openset.far_frr(test[c.family], c.threshold(r))))
                                         for r in c.thresholds}
    report = for_json(summary(result, params, {}))
    (root / "metrics").mkdir(parents=True, exist_ok=True)
    (root / "metrics" / "selection.json").write_text(json.dumps(report, indent=2) + "\n")
    plots = root / "plots" / "select"
    plots.mkdir(parents=True, exist_ok=True)
    for name, table in plot_tables(result, params).items():
        table.to_csv(plots / name, index=False)
    return report
