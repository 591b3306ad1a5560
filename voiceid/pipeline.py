"""Rules across params.yaml sections, checked by the stage whose section they involve.

Every section loads strictly on its own (:func:`voiceid.config.load_section`: unknown keys,
types, enumerations, ranges).  These rules tie sections together, so a value that would only
fail (or silently do nothing) stages later fails now, naming the dotted key.  They read the
other sections as plain values from the file: a stage imports no other stage's code, so
``dvc.yaml`` can keep each stage's dependencies to what it runs.  A rule whose keys are
absent from the file is not checked (tests write partial params files).

Example:
    >>> problems({"prepare": {"sample_rate": 16000}, "features": {"sample_rate": 8000}}, "features")
    ["'features.sample_rate' 8000 must equal 'prepare.sample_rate' 16000 (content hashes and every feature assume the prepared rate)"]
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from voiceid.config import MISSING as _MISSING
from voiceid.config import ConfigError, read_params
from voiceid.config import lookup as _get

Rule = Callable[[dict[str, Any]], list[str]]


# stage adapt's feature set (voiceid.adapt.params.SET_NAME, not imported: see above), never in features.sets
ADAPTED_SET = "dvector_ft"


def _sample_rates(raw: dict[str, Any]) -> list[str]:
    a, b = _get(raw, "features.sample_rate"), _get(raw, "prepare.sample_rate")
    if _MISSING in (a, b) or a == b:
        return []
    return [
        f"'features.sample_rate' {a} must equal 'prepare.sample_rate' {b} (content hashes and every feature assume the prepared rate)"
    ]


def _dataset_names(raw: dict[str, Any]) -> list[str]:
    a, b = _get(raw, "ecapa.dataset_name"), _get(raw, "grid.dataset_name")
    if _MISSING in (a, b) or a == b:
        return []
    return [f"'ecapa.dataset_name' {a!r} must equal 'grid.dataset_name' {b!r} (one MLflow experiment family per dataset)"]


def _n_mels(raw: dict[str, Any]) -> list[str]:
    a, b = _get(raw, "ecapa.model.n_mels"), _get(raw, "features.logmel.n_mels")
    if _MISSING in (a, b) or a == b:
        return []
    return [
        f"'ecapa.model.n_mels' {a} differs from 'features.logmel.n_mels' {b}: ECAPA takes the logmel band count; drop the key"
    ]


def _grid_sets(raw: dict[str, Any]) -> list[str]:
    grid, sets = _get(raw, "grid.feature_sets"), _get(raw, "features.sets")
    if _MISSING in (grid, sets):
        return []
    return [
        f"'grid.feature_sets[{i}]' {fs!r} is not computed by 'features.sets' {sets}"
        for i, fs in enumerate(grid)
        if fs not in sets and fs != ADAPTED_SET
    ]


def _select_sets(raw: dict[str, Any]) -> list[str]:
    families, sets = _get(raw, "select.families"), _get(raw, "features.sets")
    if _MISSING in (families, sets):
        return []
    cosine, joint = _get(raw, "select.cosine_feature_set"), _get(raw, "select.joint_feature_sets")
    joint_ft = _get(raw, "select.joint_ft_feature_sets")
    needs = {
        "cosine": ["mfcc60" if cosine is _MISSING else cosine],
        "dvector": ["dvector"],
        "joint": ["dvector", "mfcc60"] if joint is _MISSING else list(joint),
        "joint_ft": ["dvector_ft", "mfcc60"] if joint_ft is _MISSING else list(joint_ft),
        "ecapa": ["logmel"],
    }
    return [
        f"'select.families' has {fam!r}, which needs feature set {fs!r} in 'features.sets' {sets}"
        for fam, need in needs.items()
        for fs in need
        if fam in families and fs not in sets and fs != ADAPTED_SET
    ]


# rule -> the sections it involves: each stage checks the rules of its own section
RULES: dict[Rule, tuple[str, ...]] = {
    _sample_rates: ("prepare", "features"),
    _dataset_names: ("grid", "ecapa"),
    _n_mels: ("ecapa", "features"),
    _grid_sets: ("grid", "features"),
    _select_sets: ("select", "features"),
}


def problems(raw: dict[str, Any], section: str | None = None) -> list[str]:
    """Every violated rule involving ``section`` (all rules when None), each naming its dotted key."""
    return [p for rule, sections in RULES.items() if section is None or section in sections for p in rule(raw)]


def check_params(path: str | Path = "params.yaml", section: str | None = None) -> None:
    """Raise :class:`ConfigError` for the first violated rule involving ``section``."""
    for problem in problems(read_params(path), section):
        raise ConfigError(f"params.yaml: {problem}")
