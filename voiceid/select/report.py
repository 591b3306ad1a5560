"""Selection I/O: candidates from MLflow, the champion's pyfunc registration, report and plot tables.

The math of the selection is in :mod:`voiceid.selection`; every MLflow call goes through
:mod:`voiceid.tracking`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from voiceid.scoring import openset
from voiceid.scoring.verification import det_curve, probit
from voiceid.select.candidates import Candidate
from voiceid.select.params import SelectParams
from voiceid.select.protocol import SelectionResult


def flatten_intervals(ci: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{"eer": {"value", "lo", "hi"}}`` -> ``{"eer": v, "eer_lo": lo, "eer_hi": hi}``."""
    out: dict[str, float] = {}
    for k, d in ci.items():
        out[k], out[f"{k}_lo"], out[f"{k}_hi"] = d["value"], d["lo"], d["hi"]
    return out


def _r(x: float) -> float:
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
    if s.kind == "embedding":
        cal_obj = c.scorer.calibrator  # type: ignore[union-attr]
        out["cosine_thresholds"] = {rule: _r(cal_obj.inverse(c.threshold(rule))) for rule in c.thresholds}
    out["val"] = {k: _r(v) for k, v in c.val_report.items()}
    out["test"] = {k: _r(v) for k, v in flatten_intervals(result.test_reports[c.family]).items()}
    out["test_by_rule"] = {rule: {k: _r(v) for k, v in d.items()} for rule, d in result.test_by_rule[c.family].items()}
    return out


def summary(result: SelectionResult, params: SelectParams, skipped: Mapping[str, str]) -> dict[str, Any]:
    """The content of metrics/selection.json (registry fields are added by the stage)."""
    c, e = result.champion, result.embedding
    champ = {
        "family": c.family,
        "threshold_rule": params.threshold_rule,
        "threshold": _r(c.threshold(params.threshold_rule)),
        "champion_metric": params.champion_metric,
        f"val_{params.champion_metric}": _r(c.val_report[params.champion_metric]),
        "test": result.test_reports[c.family],
    }
    return {
        "champion": champ,
        "embedding_model": ({"family": e.family, "threshold": _r(e.threshold(params.threshold_rule))} if e else {}),
        "candidates": {x.family: candidate_summary(x, result, params) for x in result.candidates},
        "skipped": {**dict(skipped), **result.skipped},
        "n_probes": {
            "val_enrolled": int(c.val.known.sum()),
            "val_unknown": int((~c.val.known).sum()),
            "test_enrolled": int(result.test[c.family].known.sum()),
            "test_unknown": int((~result.test[c.family].known).sum()),
        },
    }


def for_json(report: Mapping[str, Any]) -> dict[str, Any]:
    """The full summary with the champion's intervals flattened: reports/selection.json."""
    out = dict(report)
    champ = dict(out["champion"])
    champ["test"] = {k: _r(v) for k, v in flatten_intervals(champ["test"]).items()}
    out["champion"] = champ
    return out


_METRIC_KEYS = ("kind", "feature_set", "thresholds", "test")


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
