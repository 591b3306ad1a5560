"""Every docstring example in voiceid/ runs in ``make test``, and importing voiceid changes nothing.

pyproject.toml puts ``voiceid`` in ``testpaths`` and ``--doctest-modules`` in ``addopts``, so
pytest runs each module's ``>>>`` examples as doctests.  These tests fail when an example
would silently not run: a module pytest does not collect (config changed, an import error
hiding a module), or a ``>>>`` line the doctest finder never sees (in a comment, in a nested
function, in an object whose ``__module__`` is another module).  Collecting doctests imports
every voiceid module, so they also check that importing them has no side effects.
"""

from __future__ import annotations

import doctest
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

VOICEID = REPO / "voiceid"
EXAMPLE_LINE = re.compile(r"^\s*>>>(?: |$)", re.MULTILINE)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def examples_in_source() -> dict[str, int]:
    """{module: number of ``>>>`` lines} for every voiceid source file that has any."""
    counts = {module_name(p): len(EXAMPLE_LINE.findall(p.read_text(encoding="utf-8"))) for p in sorted(VOICEID.rglob("*.py"))}
    return {name: n for name, n in counts.items() if n}


def test_voiceid_has_docstring_examples() -> None:
    assert len(examples_in_source()) >= 10  # the scan itself works (paths, pattern)


def test_doctest_finds_every_example_line() -> None:
    finder = doctest.DocTestFinder(exclude_empty=True)
    missed = {}
    for name, n_lines in examples_in_source().items():
        found = sum(len(t.examples) for t in finder.find(importlib.import_module(name)))
        if found != n_lines:
            missed[name] = f"{n_lines} '>>>' lines in the source, {found} examples found by doctest"
    assert not missed, missed


def test_pytest_collects_the_doctests_of_every_module_with_examples(pytestconfig: pytest.Config) -> None:
    """``make test`` runs pytest without paths: testpaths, with addopts' --doctest-modules."""
    assert "voiceid" in pytestconfig.getini("testpaths")
    assert pytestconfig.getoption("doctestmodules"), "pyproject addopts lost --doctest-modules"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "voiceid"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # items read "voiceid/scoring/verification.py::voiceid.scoring.verification.eer"
    collected = {module_name(REPO / line.split("::")[0]) for line in done.stdout.splitlines() if line.startswith("voiceid/")}
    missing = sorted(set(examples_in_source()) - collected)
    assert not missing, f"docstring examples pytest does not collect: {missing}"


# A child process imports every voiceid module (after the libraries they use, whose own import
# effects are theirs) and reports what changed.  MPLBACKEND=svg makes a forced backend visible.
PROBE = r"""
import importlib, json, logging, os, pkgutil, sys, warnings
for lib in ("numpy", "pandas", "scipy.stats", "sklearn", "torch", "mlflow", "mlflow.pyfunc", "optuna", "catboost",
            "librosa", "matplotlib.pyplot", "soundfile", "soxr", "pyarrow.parquet", "joblib", "tqdm", "yaml"):
    importlib.import_module(lib)
import matplotlib, numpy, torch

def state():
    return {"cwd": os.getcwd(), "files": sorted(os.listdir(".")), "sys.path": list(sys.path), "env": dict(os.environ),
            "matplotlib backend": matplotlib.get_backend(), "torch threads": torch.get_num_threads(),
            "torch default dtype": str(torch.get_default_dtype()), "numpy errstate": numpy.geterr(),
            "root logger": [logging.getLogger().level, len(logging.getLogger().handlers)],
            "warning filters": len(warnings.filters)}

before = state()
import voiceid
names = sorted(m.name for m in pkgutil.walk_packages(voiceid.__path__, "voiceid."))
for name in names:
    importlib.import_module(name)
after = state()
keys = set(before["env"]) | set(after["env"])
changed = {k: [before[k], after[k]] for k in before if k != "env" and before[k] != after[k]}
changed["env"] = {k: after["env"].get(k) for k in sorted(keys) if before["env"].get(k) != after["env"].get(k)}
print(json.dumps({"modules": names, "changed": changed}))
"""

# Known, deliberate import effects: mlflow reads its telemetry switch at import, so
# voiceid.tracking sets it (setdefault) first, with artifact progress bars off; voiceid/viz/bars.py
# selects the Agg backend.
ALLOWED_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
ALLOWED = {"matplotlib backend": ["svg", "Agg"]}


def test_importing_every_voiceid_module_has_no_side_effects(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ALLOWED_ENV and not k.startswith("PYTEST_")}
    env |= {"MPLBACKEND": "svg", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report["modules"]) >= 60 and "voiceid.scoring.verification" in report["modules"]
    changed = report["changed"]
    env_changed = changed.pop("env")
    assert {k: v for k, v in env_changed.items() if ALLOWED_ENV.get(k) != v} == {}
    assert {k: v for k, v in changed.items() if ALLOWED.get(k) != v} == {}
    assert list(tmp_path.iterdir()) == []  # nothing written to the working directory
