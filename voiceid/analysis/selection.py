"""The select stage's outputs as tables: open-set metrics per candidate, probe outcomes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from voiceid.scoring.verification import DetPoints

# Column order of the open-set table; other metrics of selection.json follow alphabetically.
OPENSET_COLUMNS = (
    "dir_far_1",
    "dir_far_5",
    "dir",
    "open_set_accuracy",
    "far",
    "frr",
    "eer",
    "min_dcf",
    "accuracy",
    "f1_weighted",
)


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
            "kind": c.get("kind"),
            "feature_set": c.get("feature_set"),
            "threshold": c.get("thresholds", {}).get(rule, np.nan),
            "champion": family == champion.get("family"),
            **keep,
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


def det_curves(det: pd.DataFrame) -> dict[str, DetPoints]:
    """``plots/select/det.csv`` (candidate, p_fa, p_miss per point) as DET points per candidate.

    >>> t = pd.DataFrame({"candidate": ["a", "a"], "p_fa": [1.0, 0.0], "p_miss": [0.0, 1.0]})
    >>> det_curves(t)["a"].p_fa.tolist()
    [1.0, 0.0]
    """
    out = {}
    for name, part in det.groupby("candidate", sort=True):
        p_fa = part["p_fa"].to_numpy(dtype=np.float64)
        out[str(name)] = DetPoints(p_fa, part["p_miss"].to_numpy(dtype=np.float64), np.full(len(p_fa), np.nan))
    return out
