"""params.yaml values are checked at load (enumerations, cross-section rules); dvc.yaml lists every dependency."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest
import yaml

from voiceid.adapt.params import AdaptParams
from voiceid.config import ConfigError, load_section
from voiceid.data.prepare import PrepareParams
from voiceid.ecapa.params import EcapaParams
from voiceid.features.params import FeatureParams
from voiceid.grid.params import GridParams
from voiceid.pipeline import check_params
from voiceid.select.params import SelectParams

REPO = Path(__file__).resolve().parents[1]


def _enumerated_keys(cls: type, prefix: str) -> list[tuple[str, bool]]:
    """Dotted keys of every Literal-typed field (``True``: a list of Literals), nested dataclasses included."""
    out: list[tuple[str, bool]] = []
    for f in dataclasses.fields(cls):
        tp = get_type_hints(cls)[f.name]
        key = f"{prefix}.{f.name}"
        args = [a for a in get_args(tp) if a is not type(None)]
        if get_origin(tp) is Literal:
            out.append((key, False))
        elif get_origin(tp) in (tuple, list) and args and get_origin(args[0]) is Literal:
            out.append((key, True))
        elif get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType")) and any(get_origin(a) is Literal for a in args):
            out.append((key, False))
        elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out += _enumerated_keys(tp, key)
    return out


SECTIONS: dict[str, type] = {
    "prepare": PrepareParams, "features": FeatureParams, "adapt": AdaptParams, "grid": GridParams, "ecapa": EcapaParams,
    "select": SelectParams,
}
ENUMERATED = [k for name, cls in SECTIONS.items() for k in _enumerated_keys(cls, name)]


def _set(params: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    node = params
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value


def test_every_section_has_enumerated_keys_to_check() -> None:
    keys = {k for k, _ in ENUMERATED}
    for expected in ("prepare.adapter", "prepare.order", "prepare.split_by", "features.sets", "grid.families",
                     "grid.objective", "select.families", "select.val_metric", "select.cosine_feature_set",
                     "select.champion_metric", "ecapa.device", "adapt.speakers"):
        assert expected in keys


@pytest.mark.parametrize(("key", "is_list"), ENUMERATED, ids=[k for k, _ in ENUMERATED])
def test_a_typo_in_an_enumerated_param_fails_naming_the_key(key: str, is_list: bool, tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    _set(params, key, ["svm_typo"] if is_list else "svm_typo")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    section = key.split(".")[0]
    with pytest.raises(ConfigError) as info:
        load_section(SECTIONS[section], section, path)  # what the stage of that section does first
    assert f"'{key}" in str(info.value) and "svm_typo" in str(info.value)


def test_the_committed_params_pass() -> None:
    for name, cls in SECTIONS.items():
        load_section(cls, name, REPO / "params.yaml")
    check_params(REPO / "params.yaml")


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        ({"features.sample_rate": 22050}, "features.sample_rate"),
        ({"ecapa.dataset_name": "other"}, "ecapa.dataset_name"),
        ({"ecapa.model.n_mels": 64}, "ecapa.model.n_mels"),
        ({"grid.feature_sets": ["mfcc60", "extended"], "features.sets": ["mfcc60", "logmel"]}, "grid.feature_sets[1]"),
        ({"select.cosine_feature_set": "extended", "features.sets": ["mfcc60", "seed498", "logmel"],
          "grid.feature_sets": ["mfcc60"]}, "select.families"),
        ({"select.joint_feature_sets": ["dvector", "extended"], "features.sets": ["mfcc60", "seed498", "logmel", "dvector"],
          "select.cosine_feature_set": "mfcc60", "grid.feature_sets": ["mfcc60"]}, "select.families"),
        ({"select.joint_feature_sets": ["dvector"]}, "select.joint_feature_sets"),
        ({"select.min_unknown_probes": 0}, "select.min_unknown_probes"),
        ({"prepare.activity_db": -3.0}, "prepare.activity_db"),
        ({"prepare.group_pattern": "no-group"}, "prepare.group_pattern"),
    ],
)
def test_rules_across_and_within_sections_name_the_key(edit: dict[str, Any], key: str, tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for k, v in edit.items():
        _set(params, k, v)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    section = key.split(".")[0]
    with pytest.raises(ConfigError, match=f"'{key.replace('[', '.').replace(']', '.')}"):
        load_section(SECTIONS[section], section, path)
        check_params(path, section)


def test_the_grid_may_name_the_adapted_set_which_features_never_computes(tmp_path: Path) -> None:
    """``dvector_ft`` comes from stage adapt, so it needs no ``features.sets`` entry; a set nobody makes still fails."""
    from voiceid.adapt.params import SET_NAME
    from voiceid.grid.params import GridParams
    from voiceid.pipeline import ADAPTED_SET, problems

    assert ADAPTED_SET == SET_NAME  # pipeline.py keeps its own copy: it must not import stage code
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    _set(params, "grid.feature_sets", ["mfcc60", "dvector_ft"])
    _set(params, "features.sets", ["mfcc60", "logmel", "dvector"])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    assert load_section(GridParams, "grid", path).feature_sets == ("mfcc60", "dvector_ft")
    assert problems(params, "grid") == []
    _set(params, "grid.feature_sets", ["mfcc60", "dvector_ft", "seed498"])
    assert problems(params, "grid") == [
        "'grid.feature_sets[2]' 'seed498' is not computed by 'features.sets' ['mfcc60', 'logmel', 'dvector']"
    ]


# --- dvc.yaml: every module a stage imports is a dependency of that stage -------------------


def _imports(path: Path) -> set[str]:
    """voiceid modules imported anywhere in ``path`` (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("voiceid"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("voiceid"))
    return out


def _module_file(module: str) -> Path | None:
    base = REPO / module.replace(".", "/")
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def stage_modules(script: Path) -> set[Path]:
    """Every voiceid source file the stage script reaches through imports (transitively)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for module in _imports(todo.pop()):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):  # a submodule import runs its packages' __init__ too
                f = _module_file(".".join(parts[:i]))
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append(f)
    return seen


def _deps(stage: dict[str, Any]) -> list[Path]:
    return [REPO / d for d in stage.get("deps", []) if isinstance(d, str) and "${" not in d]


def covered(path: Path, deps: list[Path]) -> bool:
    return any(path == d or d in path.parents for d in deps)


@pytest.mark.parametrize("stage", ["prepare", "features", "adapt", "grid", "ecapa", "select"])
def test_every_imported_module_is_a_dependency_of_its_stage(stage: str) -> None:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    script = REPO / spec["cmd"].split()[1]
    deps = _deps(spec)
    assert covered(script, deps), f"{stage}: its own script {script.name} is not a dependency"
    missing = sorted(str(m.relative_to(REPO)) for m in stage_modules(script) if not covered(m, deps))
    assert not missing, f"dvc.yaml stage {stage!r} lacks dependencies on {missing}"


def test_the_dependency_check_sees_a_missing_module() -> None:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["select"]
    deps = [d for d in _deps(spec) if d.name != "serve"]
    assert any(not covered(m, deps) for m in stage_modules(REPO / "stages" / "selection.py"))


def test_select_depends_on_the_run_ids_of_whatever_families_the_grid_trains() -> None:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    grid_out = next(iter(spec["grid"]["metrics"][0]))
    assert grid_out == "metrics/models/${item.family}.json"
    assert next(iter(spec["ecapa"]["metrics"][0])) == "metrics/models/ecapa.json"
    deps = spec["select"]["deps"]
    assert "metrics/models" in deps and not any(str(d).startswith("metrics/models/") for d in deps)
    assert "grid.families" in spec["select"]["params"]
