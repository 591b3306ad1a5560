"""Throw-away team-mode servers for tests and benchmarks: a local PostgreSQL and an ``mlflow server`` on it.

``postgres()`` starts a private PostgreSQL cluster (``initdb`` + ``pg_ctl``) in a fresh temp
folder, listening on 127.0.0.1 only (no Unix socket outside that folder), trust auth; when
this process is root the cluster runs as the ``postgres`` user (PostgreSQL refuses root).
``mlflow_server(pg)`` runs ``mlflow server`` with a PostgreSQL backend store and a local
artifact destination on a free port. Both are context managers that stop and delete
everything on exit. ``unavailable()`` says why PostgreSQL cannot run here (None when it can):
``make postgres`` installs Debian's ``postgresql`` package where it is root with apt.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from local_processes import stop_group, wait_healthy

PG_USER = "voiceid"


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return candidates[-1] if candidates else None


def _run_as() -> list[str]:
    """Prefix that runs a server command as a non-root user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def unavailable() -> str | None:
    """Why a throw-away PostgreSQL cannot be started here, or None."""
    missing = [n for n in ("initdb", "pg_ctl") if _pg_bin(n) is None]
    if missing:
        return f"PostgreSQL server binaries ({', '.join(missing)}) not found; `make postgres` installs Debian's postgresql (needs root and apt-get)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root without runuser to drop to the 'postgres' user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg (the PostgreSQL driver) is not installed: pip install -e . -c constraints.txt"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Postgres:
    port: int
    root: Path

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` (SQLAlchemy 2.1 picks the psycopg 3 driver)."""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def postgres(timeout_s: float = 60) -> Iterator[Postgres]:
    """A private PostgreSQL cluster on 127.0.0.1:<free port>; stopped and deleted on exit."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="voiceid-pg-", dir="/tmp"))
    data = root / "data"
    prefix = _run_as()
    if prefix:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    log = root / "server.log"
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    assert initdb and pg_ctl
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    started = False
    try:
        subprocess.run([*prefix, initdb, "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, env=env, cwd=root, timeout=timeout_s)
        opts = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", str(int(timeout_s)), "start"],
                       check=True, capture_output=True, env=env, cwd=root, timeout=timeout_s + 10)
        started = True
        yield Postgres(port, root)
    except subprocess.CalledProcessError as exc:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr!r}\n{tail}") from exc
    finally:
        if started:
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, env=env, cwd=root, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class MlflowServer:
    uri: str
    artifacts: Path
    log: Path


def _mlflow_bin() -> str:
    return str(Path(sys.executable).with_name("mlflow"))


@contextlib.contextmanager
def mlflow_server(backend_uri: str, workdir: Path, timeout_s: float = 120) -> Iterator[MlflowServer]:
    """``mlflow server`` on 127.0.0.1:<free port> with ``backend_uri`` as its store (and registry),
    artifacts proxied to ``workdir/artifacts``; terminated on exit."""
    artifacts = workdir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "mlflow-server.log"
    # No job-execution runner (a huey consumer process competing for the cores): voiceid queues no jobs.
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [_mlflow_bin(), "server", "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, f"{uri}/health", log, timeout_s, "mlflow server")
        yield MlflowServer(uri, artifacts, log)
    finally:
        stop_group(proc)
