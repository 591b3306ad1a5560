"""Selection report: the summary of a selection, its JSON and metrics views, and the plot tables.

The math of the selection is in :mod:`voiceid.select.protocol` and
:mod:`voiceid.select.candidates`; reading runs from MLflow is in :mod:`voiceid.select.sources`
and the champion's registration in :mod:`voiceid.select.register`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, SupportsFloat

import numpy as np
import pandas as pd

from voiceid.scoring import openset
from voiceid.scoring.verification import det_curve, probit
from voiceid.select.candidates import NO_LDA, Candidate
from voiceid.select.params import SelectParams
from voiceid.select.protocol import SelectionResult


def flatten_intervals(ci: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{"eer": {"value", "lo", "hi"}}`` -> ``{"eer": v, "eer_lo": lo, "eer_hi": hi}``."""
    out: dict[str, float] = {}
    for k, d in ci.items():
        out[k], out[f"{k}_lo"], out[f"{k}_hi"] = d["value"], d["lo"], d["hi"]
    return out


def _r(x: SupportsFloat) -> float:
    return round(float(x), 6)


def candidate_summary(c: Candidate, result: SelectionResult, params: SelectParams) -> dict[str, Any]:
    s = c.source
    out: dict[str, Any] = {"kind": s.kind, "feature_set": s.feature_set, "run_id": s.run_id or ""}
    if s.val_metric:
        out[s.val_metric] = _r(s.val_value or float("nan"))
    cal = {k: (_r(v) if isinstance(v, float) else v) for k, v in c.calibration.items() if k != "losses"}
    cal.update({f"{m}_{k}": _r(v) for m, d in c.calibration.get("losses", {}).items() for k, v in d.items()})
    out["calibration"] = cal
    out["thresholds"] = {rule: _r(c.threshold(rule)) for rule in c.thresholds}
    point = getattr(c.thresholds.get("fpr"), "point_threshold_", None)
    if params.far_confidence is not None and point is not None:  # the plain fpr rule's, to show the margin
        out["thresholds"]["fpr_point"] = _r(point)
    if s.kind == "embedding":
        cal_obj = c.scorer.calibrator  # type: ignore[union-attr]
        out["cosine_thresholds"] = {rule: _r(cal_obj.inverse(c.threshold(rule))) for rule in c.thresholds}
    out["val"] = {k: _r(v) for k, v in c.val_report.items()}
    if c.later_eer is not None:  # val-unknown speakers enrolled as later speakers, through the variant that serves them best
        out["later"] = {"eer": _r(c.later_eer), "backend": c.for_enrolling.calibration.get("backend")}
    elif c.store is not None:  # not measurable: the store avoids LDA
        out["later"] = {"eer": None, "backend": c.store.calibration.get("backend"), "chosen_by": store_basis(c, params)}
    out["test"] = {k: _r(v) for k, v in flatten_intervals(result.test_reports[c.family]).items()}
    paired = {k: v for k, v in result.test_vs_champion[c.family].items() if k in _PAIRED_KEYS}
    out["test_minus_champion"] = {k: _r(v) for k, v in flatten_intervals(paired).items()}
    out["test_by_rule"] = {rule: {k: _r(v) for k, v in d.items()} for rule, d in result.test_by_rule[c.family].items()}
    return out


def summary(result: SelectionResult, params: SelectParams, skipped: Mapping[str, str]) -> dict[str, Any]:
    """The content of metrics/selection.json (registry fields are added by the stage).

    Every configured family appears: under ``candidates`` when it was scored, else under
    ``skipped`` with the reason.
    """
    c, e = result.champion, result.embedding
    metric = result.champion_metric or params.champion_metric
    champ = {
        "family": c.family,
        "threshold_rule": params.threshold_rule,
        "threshold": _r(c.threshold(params.threshold_rule)),
        "champion_metric": metric,
        "champion_metric_reason": result.champion_metric_reason,
        f"val_{metric}": _r(c.val_report[metric]),
        "test": result.test_reports[c.family],
        # what the fpr threshold stands on: a FAR target set from few strangers is a rough one
        "threshold_basis": {
            "target_fpr": params.target_fpr,
            "far_confidence": params.far_confidence,
            "val_unknown_probes": int((~c.val.known).sum()),
            "val_unknown_speakers": int(len(set(c.val.true[~c.val.known]))),
        },
    }
    if result.runner_up is not None:
        r = result.runner_up
        diff = result.test_vs_champion[r.family][metric]
        champ["runner_up"] = {
            "family": r.family,
            f"val_{metric}": _r(r.val_report[metric]),
            f"test_{metric}_minus_champion": {k: _r(v) for k, v in diff.items()},
            # the paired 95% interval of the test difference excludes 0
            "distinguishable_on_test": bool(diff["lo"] > 0 or diff["hi"] < 0),
        }
    return {
        "champion": champ,
        "embedding_model": _embedding_model(e, params) if e else {},
        "candidates": {x.family: candidate_summary(x, result, params) for x in result.candidates},
        "skipped": {f: why for f, why in {**dict(skipped), **result.skipped}.items()},
        "n_probes": {
            "val_enrolled": int(c.val.known.sum()),
            "val_unknown": int((~c.val.known).sum()),
            "test_enrolled": int(result.test[c.family].known.sum()),
            "test_unknown": int((~result.test[c.family].known).sum()),
        },
        "bootstrap": {"n": params.n_bootstrap, "seed": params.seed, "paired": True},
    }


def _embedding_model(e: Candidate, params: SelectParams) -> dict[str, Any]:
    """The system that serves the enrollment store, and why it was chosen (:mod:`voiceid.select.later`)."""
    store = e.for_enrolling
    out: dict[str, Any] = {
        "family": e.family,
        "backend": store.calibration.get("backend"),
        "threshold": _r(store.threshold(params.threshold_rule)),
    }
    out["chosen_by"] = store_basis(e, params)
    if e.later_eer is not None:
        out["later_eer"] = _r(e.later_eer)
    return out


def store_basis(e: Candidate, params: SelectParams) -> str:
    """Why the enrollment store serves through ``e.for_enrolling``'s back-end, in words (:mod:`voiceid.select.later`)."""
    if e.later_eer is not None:
        return f"later_eer: identification EER of val-unknown speakers enrolled from {params.enroll_files} clips"
    if e.store is not None:
        return NO_LDA
    return "val champion metric: too few val-unknown speakers with two clips to enroll them as later speakers"


# Fewer val-unknown speakers than this make the fpr rule's FAR a rough one, and the summary says so.
# Simulated (tests/test_thresholds.py's set-up): with 10 speakers the confidence-0.8 threshold met
# a 5% target for new strangers in most draws; with 2 it let in 15.5% on average.
FEW_STRANGERS = 10


def threshold_basis(rule: str, champ: Mapping[str, Any]) -> str:
    """What the champion's threshold stands on, in words.

    ``champ`` is the summary's ``champion``.  For the fpr rule: its FAR target and how many
    strangers set it; fewer than :data:`FEW_STRANGERS` are called out (a target set from three
    strangers is a rough one).
    """
    b = champ.get("threshold_basis") or {}
    if rule != "fpr" or not b:
        return f"{rule} rule, fitted on val"
    target, k = float(b["target_fpr"]), int(b["val_unknown_speakers"])
    rough = f"; a rough target: only {k} strangers, new ones may be accepted far more often" if _few(rule, champ) else ""
    if b.get("far_confidence") is None:
        n = int(b["val_unknown_probes"])
        return f"fpr rule: at most {target:.0%} of the {n} val-unknown probes accepted, from {k} speakers{rough}"
    c = float(b["far_confidence"])
    return (
        f"fpr rule on val: aims to accept at most {target:.0%} of new strangers, confidence {c:g}, "
        f"from {k} val-unknown speakers{rough}"
    )


def few_strangers_warning(rule: str, champ: Mapping[str, Any]) -> str | None:
    """What the select stage warns when fewer than :data:`FEW_STRANGERS` val-unknown speakers set the fpr threshold."""
    return f"the threshold stands on {threshold_basis(rule, champ)}" if _few(rule, champ) else None


def _few(rule: str, champ: Mapping[str, Any]) -> bool:
    """Whether fewer than :data:`FEW_STRANGERS` val-unknown speakers set the champion's fpr threshold."""
    b = champ.get("threshold_basis") or {}
    return rule == "fpr" and bool(b) and int(b["val_unknown_speakers"]) < FEW_STRANGERS


def for_json(report: Mapping[str, Any]) -> dict[str, Any]:
    """The full summary with the champion's intervals flattened: reports/selection.json."""
    out = dict(report)
    champ = dict(out["champion"])
    champ["test"] = {k: _r(v) for k, v in flatten_intervals(champ["test"]).items()}
    out["champion"] = champ
    return out


_METRIC_KEYS = ("kind", "feature_set", "thresholds", "test", "test_minus_champion")
_PAIRED_KEYS = ("accuracy", "eer", "dir_far_1", "dir_far_5", "min_dcf", "far", "frr")


def metrics_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """metrics/selection.json: the champion and each candidate's test figures with intervals.

    Calibration losses, val figures, per-rule FAR/FRR and run ids stay in the full report, so
    ``dvc metrics show`` lists the open-set numbers rather than every fitted quantity.
    """
    full = for_json(report)
    return {
        "champion": full["champion"],
        "embedding_model": full["embedding_model"],
        "candidates": {f: {k: c[k] for k in _METRIC_KEYS if k in c} for f, c in full["candidates"].items()},
        "skipped": full["skipped"],
    }


def plot_tables(result: SelectionResult, params: SelectParams) -> dict[str, pd.DataFrame]:
    """det.csv, roc.csv (every candidate, test), scores.csv and confusion.csv (the champion, test)."""
    det_rows, roc_rows = [], []
    for c in result.candidates:
        p = result.test[c.family]
        p_fa, p_miss, _ = det_curve(p.score, p.known.astype(int))
        # ``point`` keeps the threshold order, so a curve is drawn along it rather than sorted by x.
        for i, (fa, miss) in enumerate(zip(p_fa, p_miss)):
            det_rows.append((c.family, i, _r(fa), _r(miss), _r(probit(fa)), _r(probit(miss))))
            roc_rows.append((c.family, i, _r(fa), _r(1 - miss)))
    champ = result.champion
    p = result.test[champ.family]
    t = champ.threshold(params.threshold_rule)
    scores = pd.DataFrame(
        {
            "score": np.round(p.score, 6),
            "group": np.where(p.known, "enrolled", "unknown"),
            "threshold": _r(t),
        }
    )
    actual = np.where(p.known, p.true, openset.UNKNOWN)
    confusion = pd.DataFrame({"actual": actual, "predicted": openset.decide(p, t)})
    return {
        "det.csv": pd.DataFrame(det_rows, columns=["candidate", "point", "p_fa", "p_miss", "p_fa_probit", "p_miss_probit"]),
        "roc.csv": pd.DataFrame(roc_rows, columns=["candidate", "point", "fpr", "tpr"]),
        "scores.csv": scores,
        "confusion.csv": confusion,
    }
