"""``voiceid ui``: MLflow's own UI server over the project's store, opened on the training runs.

MLflow 3.17/3.18's UI picks an experiment's view from the ``workflowType`` URL parameter, or
the GenAI / Model training choice the browser remembered (default GenAI: an empty traces
overview); it does not read the ``mlflow.experimentKind`` tag voiceid sets on its experiments.
So this command starts ``mlflow ui`` (the engine, unchanged) and opens -- or prints -- links
that ask for the training runs (:data:`ML_VIEW`), which in-app navigation keeps.

Example:
    >>> training_runs_url("http://127.0.0.1:5000", "3")
    'http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning'
    >>> ui_command("sqlite:///mlflow.db", "127.0.0.1", 5000)[-6:]
    ['--backend-store-uri', 'sqlite:///mlflow.db', '--host', '127.0.0.1', '--port', '5000']
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
import webbrowser
from collections.abc import Collection, Mapping
from typing import Any

ML_VIEW = "workflowType=machine_learning"
HOST, PORT = "127.0.0.1", 5000  # `mlflow ui`'s own defaults
UI_URL = f"http://{HOST}:{PORT}"


def training_runs_url(base: str, experiment_id: str) -> str:
    """The link that opens experiment ``experiment_id`` on its training-runs table."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{ML_VIEW}"


def ui_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """``mlflow ui`` over ``tracking_uri``, run by this interpreter (the project's MLflow)."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", host, "--port", str(port)]


def pick_experiment(
    experiments: Mapping[str, str], wanted: str | None, with_models: Collection[str] = ()
) -> tuple[str, str] | None:
    """(name, id) to open: ``wanted``, else the first experiment (lowest id) holding trained models.

    ``with_models``: experiments with final runs (the grid's and ECAPA's); without any, the first
    experiment other than ``voiceid/select``. The ``adapt`` stage's experiment (its one
    fine-tuning run) is created before the grid's, which is why "lowest id" alone is not enough.

    >>> ids = {"voiceid/select": "5", "voiceid/default/dvector_ft": "1", "voiceid/default/mfcc60": "2"}
    >>> pick_experiment(ids, None, {"voiceid/default/mfcc60"}), pick_experiment(ids, None)
    (('voiceid/default/mfcc60', '2'), ('voiceid/default/dvector_ft', '1'))
    """
    if wanted is not None:
        return (wanted, experiments[wanted]) if wanted in experiments else None
    training = (
        {n: i for n, i in experiments.items() if n in with_models}
        or {n: i for n, i in experiments.items() if n != "voiceid/select"}
        or dict(experiments)
    )
    if not training:
        return None
    name = min(training, key=lambda n: int(training[n]) if training[n].isdigit() else 0)
    return name, training[name]


def _healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def cmd_ui(args: argparse.Namespace) -> int:
    from voiceid.tracking.config import configure
    from voiceid.tracking.query import experiment_ids, search_final_runs

    uri = configure(args.tracking_uri)
    experiments = experiment_ids("voiceid/")
    base = f"http://{args.host}:{args.port}"
    env = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    # its own process group, so the server and the workers it forks stop together (and Ctrl-C
    # reaches this process, which stops them); its log goes to this terminal
    proc = subprocess.Popen(ui_command(uri, args.host, args.port), env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops the server too (via finally)
    try:
        if not _healthy(base, proc, args.start_timeout):
            print(f"voiceid ui: mlflow ui did not answer on {base}/health (exit code {proc.poll()})", file=sys.stderr)
            return 2
        chosen = pick_experiment(experiments, args.experiment, {r.experiment for r in search_final_runs()})
        if args.experiment is not None and chosen is None:
            print(f"voiceid ui: no experiment {args.experiment!r} in {uri} (have {sorted(experiments)})", file=sys.stderr)
            return 2
        for name, eid in sorted(experiments.items(), key=lambda kv: kv[1]):
            print(f"  {name:32s} {training_runs_url(base, eid)}")
        target = training_runs_url(base, chosen[1]) if chosen else base
        print(f"MLflow UI over {uri}: {target}", flush=True)
        if not args.no_browser:
            webbrowser.open(target)
        return int(proc.wait())
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def add_ui_command(sub: Any) -> None:
    """Register ``voiceid ui`` on the ``voiceid`` command's subparsers."""
    p = sub.add_parser("ui", help="MLflow's UI over the project's runs, opened on an experiment's training runs")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--host", default=HOST, help=f"address to bind (default {HOST}: this machine only)")
    p.add_argument("--port", type=int, default=PORT)
    p.add_argument("--experiment", default=None, help="experiment to open (default: the first training experiment)")
    p.add_argument("--no-browser", action="store_true", help="print the links, open no browser")
    p.add_argument("--start-timeout", type=float, default=120.0, help="seconds to wait for the server (default 120)")
    p.set_defaults(run=cmd_ui)
