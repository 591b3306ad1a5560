"""tests/stage_runner.py, the one way tests call a stage: fresh module per call, nothing left behind."""

from __future__ import annotations

import sys

import pytest
from stage_runner import load_stage, run_stage, stage_names


def test_every_stage_loads_fresh_and_answers_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert {"prepare", "features", "grid", "ecapa", "selection"} <= set(stage_names())
    path, modules = list(sys.path), set(sys.modules)
    for name in stage_names():
        first, second = load_stage(name), load_stage(name)
        assert first is not second and callable(first.main)
        for module in (first, second):
            sys.modules.pop(module.__name__)
        assert run_stage(name, ["--help"]) == 0  # argparse's exit becomes the return code
        assert "usage:" in capsys.readouterr().out
    assert sys.path == path
    assert not {m for m in set(sys.modules) - modules if m.startswith("_voiceid_stage_")}


def test_unknown_stage_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FileNotFoundError, match="no stage script"):
        run_stage("select", [])  # the select stage's script is stages/selection.py
    assert run_stage("prepare", ["--no-such-option"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err
