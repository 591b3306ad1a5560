from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from voiceid.config import ConfigError, as_dict, from_mapping, load_section
from voiceid.data.prepare import PrepareParams

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Inner:
    rate: float


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = ()
    cap: int | None = None


def test_nested_and_defaults() -> None:
    cfg = from_mapping(Outer, {"name": "x", "inner": {"rate": 1}, "sizes": [1, 2]}, "sec")
    assert cfg == Outer("x", Inner(1.0), "a", (1, 2), None)
    assert as_dict(cfg) == {"name": "x", "inner.rate": 1.0, "mode": "a", "sizes": [1, 2], "cap": None}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "inner": {"rate": 1}, "nmae": 2}, "unknown key 'sec.nmae'"),
        ({"inner": {"rate": 1}}, "missing key 'sec.name'"),
        ({"name": "x", "inner": {"rte": 1}}, "unknown key 'sec.inner.rte'"),
        ({"name": "x", "inner": {"rate": "fast"}}, "'sec.inner.rate' must be a number"),
        ({"name": "x", "inner": {"rate": 1}, "mode": "c"}, "'sec.mode' must be one of"),
        ({"name": "x", "inner": {"rate": 1}, "cap": 1.5}, "'sec.cap'"),
    ],
)
def test_bad_keys_fail_naming_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        from_mapping(Outer, data, "sec")


def test_project_params_load() -> None:
    params = load_section(PrepareParams, "prepare", REPO / "params.yaml")
    assert params.adapter == "folder" and params.train_per_speaker >= 1


def test_broken_params_file_names_key(tmp_path: Path) -> None:
    text = (REPO / "params.yaml").read_text().replace("min_utts:", "min_uts:")
    bad = tmp_path / "params.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="prepare.min_ut"):
        load_section(PrepareParams, "prepare", bad)
    bad.write_text("prepare: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_section(PrepareParams, "prepare", bad)


def test_cross_field_check_names_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="utts_per_speaker"):
        from_mapping(PrepareParams, {"adapter": "folder", "source": "x", "min_utts": 8, "utts_per_speaker": 6,
                                     "train_per_speaker": 5, "val_per_speaker": 2}, "prepare")
