"""The one way tests call a DVC stage: ``run_stage("grid", ["--family", "svc"])`` -> its exit code.

``stages/<name>.py`` is loaded by path with importlib, fresh on every call (a new module
object, so nothing a stage caches at module level survives into the next call), and runs
``main(argv)`` in this process: the caller sets the working directory (``monkeypatch.chdir``)
and environment the stage should see.  Nothing is added to ``sys.path``; the module is
registered in ``sys.modules`` under a private name only while the stage runs (dataclasses
and pickling look modules up there) and removed afterwards.  joblib's reusable worker pool
is shut down before and after each stage: its processes keep the working directory they
were started in, and stages resolve relative paths (the manifest's) in those workers; under
``dvc repro`` every stage is a fresh process with fresh workers too.  An MLflow run a stage
leaves active is ended (FAILED) so it cannot leak into the next test; a stage that returns
normally with a run still active is an error.

Named ``stage_runner`` rather than ``stages``: with ``tests/`` on ``sys.path`` a
``tests/stages.py`` would shadow the repository's ``stages/`` folder.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
STAGES = REPO / "stages"
_calls = itertools.count()


def stage_names() -> list[str]:
    """The stage scripts in ``stages/`` (``selection`` is the select stage)."""
    return sorted(p.stem for p in STAGES.glob("*.py") if not p.name.startswith("_"))


def load_stage(name: str) -> ModuleType:
    """A fresh module object of ``stages/<name>.py``, executed; registered in ``sys.modules`` (remove it when done)."""
    path = STAGES / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no stage script {path} (stages: {', '.join(stage_names())})")
    module_name = f"_voiceid_stage_{name}_{next(_calls)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def stop_workers() -> None:
    """Shut down joblib's reusable (loky) worker pool, if one is running; the next parallel call starts fresh workers."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def _active_mlflow_run_ids() -> list[str]:
    if "mlflow" not in sys.modules:  # no stage has imported it: nothing can be active
        return []
    import mlflow

    run = mlflow.active_run()
    return [] if run is None else [run.info.run_id]


def _end_runs_left_active(before: list[str]) -> list[str]:
    """End the MLflow runs started and left active since ``before``; returns their ids."""
    if "mlflow" not in sys.modules:
        return []
    import mlflow

    leaked: list[str] = []
    for _ in range(16):  # runs nest; bounded in case ending one fails and leaves it on the stack
        run = mlflow.active_run()
        if run is None or run.info.run_id in before:
            break
        leaked.append(run.info.run_id)
        try:
            mlflow.end_run("FAILED")
        except Exception:  # its store is gone: nothing more to end cleanly
            break
    return leaked


def run_stage(name: str, argv: Sequence[str]) -> int:
    """``stages/<name>.py``'s ``main(argv)``, loaded fresh; returns its exit code.

    A ``SystemExit`` (argparse rejecting the arguments) becomes its code, as it would for
    ``python stages/<name>.py``.
    """
    stop_workers()  # workers started elsewhere sit in another working directory
    active = _active_mlflow_run_ids()
    module = load_stage(name)
    returned = False
    try:
        try:
            code = int(module.main([str(a) for a in argv]))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        returned = True
        return code
    finally:
        sys.modules.pop(module.__name__, None)
        stop_workers()  # and this stage's workers sit in the caller's (often temporary) one
        leaked = _end_runs_left_active(active)
        if leaked and returned:
            raise AssertionError(f"stage {name} returned with MLflow run(s) {leaked} still active (ended them as FAILED)")
