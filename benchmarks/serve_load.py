"""Serve the champion with ``mlflow models serve`` on 127.0.0.1 and measure it under a bounded load.

Steps (each bounded in count and time; the whole run stops by itself after ``--max-seconds``):

1. a champion: reused from ``--work-dir`` when it is already registered there, else built in
   ~30 s from ``data/default`` (mfcc60 features of the 13 enrollable LibriSpeech speakers and 62
   single-utterance unknowns, the selection's logreg and cosine candidates, registered as
   ``models:/voiceid-serve-load@champion`` in ``WORK/mlflow.db``); or ``--model URI
   --tracking-uri URI`` for one registered elsewhere;
2. cold start of ``voiceid identify`` (a fresh process, 1 file and 16 files);
3. cold start of the server (``mlflow models serve --env-manager local`` on a free port, the
   venv's ``bin/`` on PATH) until ``/ping`` answers, then the first request;
4. the load: ``--clients`` concurrent clients x ``--requests`` requests, each one 3 s clip sent as
   ``audio_b64`` (a 16-bit WAV), one keep-alive connection per client; then a burst of
   ``--burst`` requests fired at once (waveform rows, one connection each);
5. a request of hostile rows (paths outside the root, a silent and a NaN waveform) beside a good
   one, to show the per-row errors over HTTP;
6. the server's RSS (its process tree) after start-up and after the load; the server is killed.

Usage:
    .venv/bin/python benchmarks/serve_load.py [--work-dir /tmp/voiceid_serve_load] [--clients 4]
        [--requests 200] [--burst 32] [--seconds 3] [--max-seconds 600] [--model URI --tracking-uri URI]

An error is any response other than HTTP 200, or a prediction row with a non-empty ``error``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from local_processes import stop_group  # noqa: E402  (the tests' helper: one way to stop a server)

BIN = Path(sys.executable).parent  # the venv's bin/: mlflow, uvicorn, voiceid
DATA = REPO / "data" / "default"
MODEL_NAME = "voiceid-serve-load"
SR = 16000


def quiet_env(tracking_uri: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MLFLOW_TRACKING_URI": tracking_uri,
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "PYTHONHASHSEED": "0", **extra}
    for key in ("VOICEID_AUDIO_ROOT", "VOICEID_STORE"):
        if key not in extra:
            env.pop(key, None)
    return env


def build_champion(work: Path) -> str:
    """Register a small champion built from data/default in ``work/mlflow.db``; returns its tracking URI."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from voiceid import tracking
    from voiceid.data.audio import content_hash, load_audio
    from voiceid.features.params import FeatureParams
    from voiceid.features.signal import feature_vector
    from voiceid.select.candidates import FeatureBank, Source
    from voiceid.select.params import SelectParams
    from voiceid.select.protocol import make_champion, select
    from voiceid.select.register import register_champion
    from voiceid.select.report import summary

    t0 = time.perf_counter()
    speakers = {d.name: sorted(d.glob("*.flac")) for d in sorted(DATA.iterdir()) if d.is_dir()}
    rows, waves = [], []
    unknown_i = 0
    for spk, files in speakers.items():
        enrolled = len(files) >= 10
        for i, f in enumerate(files):
            if enrolled:
                split = "train" if i < 5 else "val" if i < 8 else "test"
            else:
                split, unknown_i = ("val" if unknown_i % 2 == 0 else "test"), unknown_i + 1
            wave = load_audio(f, SR).wave
            rows.append({"utt_id": f.stem, "speaker": spk, "role": "enrolled" if enrolled else "unknown", "split": split,
                         "content_hash": content_hash(wave), "path": str(f)})
            waves.append(wave)
    meta = pd.DataFrame(rows)
    params = FeatureParams(sets=("mfcc60",))
    X = np.stack([feature_vector("mfcc60", w, SR, params) for w in waves])
    bank = FeatureBank({"mfcc60": (meta.drop(columns="path"), X)})
    Xt, yt = bank.rows("mfcc60", "enrolled", "train")
    logreg = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=1.0, max_iter=2000))]).fit(Xt, yt)
    sel = SelectParams(families=("logreg", "cosine"), n_bootstrap=50, threshold_rule="eer", champion_metric="eer",
                       registered_model=MODEL_NAME, experiment="voiceid/serve-load")
    sources = [(Source("logreg", "classifier", "mfcc60", "bench", None, "val_f1_weighted", 1.0), logreg),
               (Source("cosine", "embedding", "mfcc60"), None)]
    result = select(sources, bank, sel, params)
    champion = make_champion(result, sel, params)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    cwd = Path.cwd()
    os.chdir(work)  # MLflow artifacts land in the work dir
    try:
        tracking.configure(uri)
        register_champion(champion, sel, summary(result, sel, {}), {"data_hash": "serve-load"})
    finally:
        os.chdir(cwd)
    meta.to_csv(work / "manifest.csv", index=False)
    print(f"built and registered a {champion.family} champion from {len(meta)} clips of data/default "
          f"in {time.perf_counter() - t0:.1f} s ({work})")
    return uri


def make_clips(work: Path, seconds: float, n: int = 16) -> list[Path]:
    """``n`` clips of ``seconds`` s (16-bit WAV) from data/default test files of enrolled speakers (tiled if shorter)."""
    import soundfile as sf

    from voiceid.data.audio import load_audio

    manifest = work / "manifest.csv"
    if manifest.is_file():
        import pandas as pd

        meta = pd.read_csv(manifest)
        sources = [Path(p) for p in meta.loc[(meta["role"] == "enrolled") & (meta["split"] == "test"), "path"]]
    else:  # a model from elsewhere: any files of the speakers with many recordings
        sources = [f for d in sorted(DATA.iterdir()) if d.is_dir() and len(list(d.glob("*.flac"))) >= 10
                   for f in sorted(d.glob("*.flac"))[-3:]]
    out_dir = work / "clips"
    out_dir.mkdir(exist_ok=True)
    clips = []
    for i, src in enumerate(sources[:n]):
        wave = load_audio(src, SR).wave
        need = int(seconds * SR)
        wave = np.tile(wave, int(np.ceil(need / len(wave))))[:need]
        path = out_dir / f"clip{i:02d}_{src.parent.name}.wav"
        sf.write(path, wave, SR, subtype="PCM_16")
        clips.append(path)
    return clips


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> str:
    """RSS of the uvicorn worker that holds the model, and of the whole tree (with the ``mlflow`` launcher)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return "gone"
    total = worker = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            rss = p.memory_info().rss
            total += rss
            if "uvicorn" in " ".join(p.cmdline()):
                worker += rss
    return f"{worker / 2**20:.0f} MB worker / {total / 2**20:.0f} MB tree"


@contextlib.contextmanager
def served(model: str, tracking_uri: str, port: int, audio_root: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``mlflow models serve`` in its own process group; killed (group-wide) on exit."""
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", model, "-h", "127.0.0.1", "-p", str(port), "--env-manager", "local"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=quiet_env(tracking_uri, VOICEID_AUDIO_ROOT=str(audio_root)), cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            stop_group(proc)


def wait_ready(proc: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests
    errors: list[str] = field(default_factory=list)
    not_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, latency: float | None, error: str | None) -> None:
        with self.lock:
            if latency is not None:
                self.latencies.append(latency)
            if error:
                self.errors.append(error)


def post(conn: Any, body: bytes) -> tuple[float, str | None]:
    t0 = time.perf_counter()
    conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    latency = time.perf_counter() - t0
    if resp.status != 200:
        return latency, f"HTTP {resp.status}: {data[:200]!r}"
    bad = [p.get("error") for p in json.loads(data)["predictions"] if p.get("error")]
    return latency, (f"row error: {bad[0]}" if bad else None)


def client(port: int, bodies: list[bytes], n: int, offset: int, outcome: Outcome, deadline: float) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for i in range(n):
            if time.monotonic() > deadline:
                with outcome.lock:
                    outcome.not_sent += n - i
                return
            try:
                outcome.add(*post(conn, bodies[(offset + i) % len(bodies)]))
            except (OSError, http.client.HTTPException) as exc:
                outcome.add(None, f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    finally:
        conn.close()


def one_shot(port: int, body: bytes, outcome: Outcome, start: threading.Barrier) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        start.wait()
        outcome.add(*post(conn, body))
    except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as exc:
        outcome.add(None, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def summarise(name: str, outcome: Outcome, wall: float, sent: int) -> str:
    ms = np.asarray(outcome.latencies) * 1000.0
    pct = (lambda q: float(np.percentile(ms, q))) if ms.size else (lambda q: float("nan"))
    return (f"{name:8s} {sent:5d} req {wall:7.1f} s {len(ms) / wall if wall else 0:7.1f} req/s  "
            f"p50 {pct(50):7.1f}  p95 {pct(95):7.1f}  p99 {pct(99):7.1f} ms  errors {len(outcome.errors)}"
            + (f"  not sent {outcome.not_sent}" if outcome.not_sent else ""))


def cold_identify(model: str, tracking_uri: str, files: list[Path], work: Path) -> float:
    cmd = [str(BIN / "voiceid"), "identify", "--json", "--model", model, "--tracking-uri", tracking_uri,
           "--store", str(work / "empty-store"), *map(str, files)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=quiet_env(tracking_uri), cwd=REPO, capture_output=True, timeout=300)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"voiceid identify exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    results = json.loads(done.stdout)["results"]
    assert len(results) == len(files) and not any(r["error"] for r in results), results
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/voiceid_serve_load"))
    parser.add_argument("--model", default=None, help=f"a registered model URI (default: build models:/{MODEL_NAME}@champion)")
    parser.add_argument("--tracking-uri", default=None, help="with --model: its MLflow store")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="per client")
    parser.add_argument("--burst", type=int, default=32, help="requests fired at once after the load")
    parser.add_argument("--seconds", type=float, default=3.0, help="clip length")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="the whole run stops sending after this")
    args = parser.parse_args(argv)
    t_start = time.monotonic()
    deadline = t_start + args.max_seconds
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)

    if args.model:
        model, tracking_uri = args.model, args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    else:
        model, tracking_uri = f"models:/{MODEL_NAME}@champion", f"sqlite:///{work / 'mlflow.db'}"
        if not (work / "mlflow.db").is_file() or not (work / "manifest.csv").is_file():
            build_champion(work)
        else:
            print(f"reusing the champion registered in {work / 'mlflow.db'}")
    clips = make_clips(work, args.seconds)
    encoded = [base64.b64encode(p.read_bytes()).decode("ascii") for p in clips]
    bodies = [json.dumps({"dataframe_records": [{"audio_b64": e}]}).encode() for e in encoded]

    ident_1 = cold_identify(model, tracking_uri, clips[:1], work)
    ident_16 = cold_identify(model, tracking_uri, clips[:16], work)
    print(f"cold `voiceid identify` (new process, model from the registry): 1 file {ident_1:.1f} s, "
          f"{len(clips[:16])} files {ident_16:.1f} s")

    port = free_port()
    log = work / "server.log"
    with served(model, tracking_uri, port, work / "clips", log) as proc:
        t0 = time.perf_counter()
        if not wait_ready(proc, port, min(deadline, time.monotonic() + 180)):
            print(f"server did not come up (exit {proc.poll()}); last lines of {log}:\n{log.read_text()[-3000:]}")
            return 2
        ready = time.perf_counter() - t0
        first = Outcome()
        client(port, bodies[:1], 1, 0, first, deadline)
        rss_start = rss_mb(proc.pid)
        first_ms = first.latencies[0] * 1000 if first.latencies else float("nan")
        print(f"server cold start: /ping after {ready:.1f} s; first request {first_ms:.0f} ms "
              f"({'ok' if not first.errors else first.errors[0]}); RSS {rss_start}")

        load = Outcome()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            for c in range(args.clients):
                pool.submit(client, port, bodies, args.requests, c * 7, load, deadline)
        load_wall = time.perf_counter() - t0
        rss_load = rss_mb(proc.pid)

        rng = np.random.default_rng(0)
        import soundfile as sf

        burst_bodies = []
        for i in range(args.burst):
            wave, _ = sf.read(clips[i % len(clips)], dtype="float32")
            wave = wave * np.float32(rng.uniform(0.6, 1.0))
            burst_bodies.append(json.dumps({"dataframe_records": [{"waveform": wave.tolist(), "sample_rate": SR}]}).encode())
        burst = Outcome()
        start = threading.Barrier(args.burst)
        t0 = time.perf_counter()
        threads = [threading.Thread(target=one_shot, args=(port, b, burst, start)) for b in burst_bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic()))
        burst_wall = time.perf_counter() - t0
        rss_end = rss_mb(proc.pid)

        hostile_rows_in: list[dict[str, Any]] = [
            {"path": "../../../../etc/passwd"}, {"path": "/etc/passwd"}, {"waveform": [0.0] * SR, "sample_rate": SR},
            {"waveform": [float("nan")] * SR, "sample_rate": SR}, {"path": clips[0].name}, {"audio_b64": encoded[1]}]
        hostile = {"dataframe_records": hostile_rows_in}
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/invocations", json.dumps(hostile).encode(), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        hostile_rows = json.loads(resp.read())["predictions"] if resp.status == 200 else []
        conn.close()

    print(f"\nload: {args.clients} clients x {args.requests} requests of one {args.seconds:.0f} s clip (audio_b64, "
          f"{len(bodies[0]) // 1024} KiB), then {args.burst} requests at once (waveform JSON, "
          f"{len(burst_bodies[0]) // 1024} KiB each)")
    print(summarise("load", load, load_wall, args.clients * args.requests))
    print(summarise("burst", burst, burst_wall, args.burst))
    for name, outcome in (("load", load), ("burst", burst)):
        for e in sorted(set(outcome.errors))[:5]:
            print(f"  {name} error: {e}")
    print(f"server RSS: {rss_start} after start-up; {rss_load} after the load; {rss_end} after the burst")
    print(f"\nhostile request (HTTP {resp.status}), one answer per row:")
    for row, answer in zip(hostile_rows_in, hostile_rows):
        shown = {k: (v if k != "waveform" else f"[{len(v)} samples]") for k, v in row.items()}
        shown = {k: (v[:16] + "..." if isinstance(v, str) and len(v) > 40 else v) for k, v in shown.items()}
        print(f"  {json.dumps(shown)[:70]:70s} -> {answer['error'] or answer['speaker']}")
    print(f"\nserver stopped; total {time.monotonic() - t_start:.0f} s; server log {log}")
    return 0 if not load.errors and not burst.errors and not load.not_sent else 1


if __name__ == "__main__":
    raise SystemExit(main())
