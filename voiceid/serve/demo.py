"""``voiceid demo``: a local web page on the champion -- identify, enroll, and what the model is.

    voiceid demo [--port 8765 | --port 0] [--host 127.0.0.1] [--model URI] [--tracking-uri URI] [--store DIR]

One page (``demo_page.html`` beside this module) served by Starlette under uvicorn, both already
installed with MLflow (its tracking server is built on them), so the demo adds no dependency:

* **Identify**: upload a file or record from the microphone (the page records with
  MediaRecorder, decodes the recording with the browser's own Web Audio decoder and uploads it
  as 16-bit PCM WAV, which soundfile reads); the answer is the champion's
  (:meth:`Champion.identify`, with the enrollment store as its gallery, exactly as ``voiceid
  identify``), shown with its calibrated score against the threshold, the three best-scoring
  speakers (:func:`speaker_scores`), the clip's duration and waveform.  Unusable audio gets the
  :class:`voiceid.data.audio.AudioError` reason in words (too short, silent, not audio...).
* **Enroll**: a name and several clips, enrolled by :func:`voiceid.serve.enroll.enroll_speaker`
  into the same store as ``voiceid enroll`` (same checks, same defaults, no retraining); the
  store's speakers are listed and can be removed.
* **About the model**: family, feature set, threshold, test FAR/FRR (the registered version's
  select run, else ``reports/selection.json``) and a link to that run in the MLflow UI.

Limits: each upload at most ``--max-mb`` (10) MB and ``--max-seconds`` (60) s of audio; an
enrollment at most :data:`MAX_ENROLL_CLIPS` clips.  The server binds 127.0.0.1 unless ``--host``
says otherwise, answers only requests addressed to the host it was started on (no DNS
rebinding) and refuses state-changing requests from other origins.

``--port 0`` takes a free port; the URL is printed on stdout (``voiceid demo: open http://...``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import ipaddress
import logging
import math
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from voiceid.data.audio import AudioError, Clip, load_audio, validate_clip
from voiceid.serve.champion import Champion, ClassifierScorer, EmbeddingScorer
from voiceid.serve.request import describe

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

_log = logging.getLogger(__name__)

DEFAULT_PORT = 8765


DEFAULT_MLFLOW_URL = "http://127.0.0.1:5000"


MAX_ENROLL_CLIPS = 10


WAVE_POINTS = 600  # (min, max) pairs drawn as the clip's waveform


PAGE = "demo_page.html"


DRAIN_FACTOR = 4  # a body up to this many times the limit is read through before the 413, so the client sees the message


# The page's words for each AudioError reason (the reason tag and details follow in brackets).
PLAIN: dict[str, str] = {
    "unreadable": "This is not audio the server can decode: upload WAV, FLAC or OGG (or record from the microphone)",
    "empty": "The file holds no audio samples",
    "too_short": "The clip is too short to recognise a voice",
    "too_long": "The clip is too long for the demo",
    "silent": "No speech found: the clip is silent, or noise/hum only",
    "invalid_samples": "The audio contains invalid samples (NaN or infinity)",
}


class DemoError(Exception):
    """A request the page answers with a message (never a stack trace): HTTP ``status``, ``reason`` tag."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status, self.reason = status, reason
        super().__init__(message)


@dataclass(frozen=True)
class Limits:
    """What one upload may be (identify and each enrollment clip)."""

    max_bytes: int = 10 * 2**20
    max_seconds: float = 60.0
    min_seconds: float = 0.25  # identify (voiceid identify --min-duration)
    enroll_min_seconds: float = 0.5  # enroll (voiceid enroll --min-duration)
    enroll_min_files: int = 3  # voiceid enroll --min-files
    silence_db: float = -50.0

    @property
    def enroll_body_bytes(self) -> int:
        """An enrollment request: MAX_ENROLL_CLIPS clips of max_bytes, base64 in JSON."""
        return MAX_ENROLL_CLIPS * (4 * (self.max_bytes // 3 + 1) + 1024) + 64 * 1024


def speaker_scores(champion: Champion, wave: np.ndarray, sample_rate: int, gallery: Any = None) -> list[tuple[str, float]]:
    """Every speaker the decision of :meth:`Champion.identify` considers, with its calibrated score, best first.

    The scorer is the one ``identify`` uses: the primary one without a gallery, the embedding
    one with a gallery.  Embedding scorers: the calibrator applied to the cosine (AS-normed when
    the champion has AS-norm) with each centroid; classifiers: ``ClassifierScorer.speaker_scores``;
    fusion: the detection probability of each speaker, ranked by the fused identification score.
    The top speaker is the one ``identify`` names (when its score clears the threshold).
    """
    scorer: Any = champion.primary if gallery is None else champion.embedding
    if scorer is None:
        raise ValueError("this champion has no embedding model, so it cannot use a gallery")
    x = scorer.front(wave, sample_rate)
    if isinstance(scorer, EmbeddingScorer):
        cents, cos = scorer.cosines(scorer.embedder.embed([x]), gallery)
        names, scores = list(cents.speakers), np.asarray(scorer.calibrator.predict_proba(cos[0]), dtype=np.float64)
        order = np.argsort(-cos[0], kind="stable")
    elif isinstance(scorer, ClassifierScorer):
        names = scorer.speakers
        scores = scorer.speaker_scores([x])[0]
        order = np.argsort(-scores, kind="stable")
    else:  # FusionScorer (voiceid.serve.fusion): who by the identify weights, how sure by the detect weights
        trials = scorer.pair_scores([x])
        names, scores = scorer.speakers, scorer.detection(trials)[0]
        order = np.argsort(-scorer.fused(trials)[0], kind="stable")
    return [(str(names[i]), float(scores[i])) for i in order]


def wave_peaks(wave: NDArray[np.float32], points: int = WAVE_POINTS) -> list[list[float]]:
    """(min, max) of ``points`` equal slices of ``wave``: enough to draw it, a few kB of JSON.

    >>> wave_peaks(np.array([0.0, 0.5, -0.25, 1.0], dtype=np.float32), points=2)
    [[0.0, 0.5], [-0.25, 1.0]]
    """
    n = len(wave)
    if n == 0:
        return []
    edges = np.linspace(0, n, min(points, n) + 1).astype(int)
    return [[round(float(wave[a:b].min()), 4), round(float(wave[a:b].max()), 4)] for a, b in zip(edges[:-1], edges[1:])]


def safe_name(name: str, fallback: str = "clip") -> str:
    """A file name from a client (no folders, no odd characters), kept readable for messages.

    >>> safe_name("../../etc/passwd"), safe_name("my clip (1).WAV"), safe_name("")
    ('passwd', 'my_clip_1_.WAV', 'clip')
    """
    base = re.split(r"[\\/]", name)[-1]
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:80]
    return clean or fallback


def _suffix(name: str) -> str:
    """Client bytes are decoded by libsndfile only (it sniffs the format): a .wav/.flac/.ogg name, no fallback decoders."""
    suffix = Path(name).suffix.lower()
    return suffix if suffix in (".wav", ".flac", ".ogg") else ".wav"


def _audio_message(exc: AudioError, label: str) -> str:
    return f"{PLAIN.get(exc.reason, 'The audio cannot be used')} [{describe(exc, label)}]"


@dataclass
class Demo:
    """The model, the store and the limits behind the page; the HTTP layer is :func:`build_app`."""

    champion: Champion
    info: dict[str, Any]  # voiceid.serve.cli.load_model's identity of the model
    store_root: Path
    limits: Limits = field(default_factory=Limits)
    about_info: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # one model call at a time
    _live: Any = None

    def __post_init__(self) -> None:
        from voiceid.serve.request import LiveGallery

        emb = self.champion.embedding
        self._live = LiveGallery(self.store_root, emb.embedder_id if emb is not None else None)

    # -- identify ---------------------------------------------------------------------------
    def decode(self, data: bytes, filename: str, min_seconds: float) -> Clip:
        """Upload bytes -> validated clip, or DemoError with the reason in words."""
        label = safe_name(filename, "upload")
        if len(data) > self.limits.max_bytes:
            raise DemoError(413, "too_large", self._too_large(label, len(data)))
        if not data:
            raise DemoError(422, "empty", f"{PLAIN['empty']} [{label}: 0 bytes]")
        with tempfile.NamedTemporaryFile(prefix="voiceid-demo-", suffix=_suffix(filename)) as f:
            f.write(data)
            f.flush()
            try:
                clip = load_audio(f.name, self.champion.sample_rate)
                validate_clip(clip, f.name, min_seconds, self.limits.max_seconds, self.limits.silence_db)
            except AudioError as exc:
                raise DemoError(422, exc.reason, _audio_message(exc, label)) from None
        return clip

    def _too_large(self, label: str, size: int) -> str:
        mb = self.limits.max_bytes / 2**20
        return f"The file is too large: uploads are limited to {mb:g} MB and {self.limits.max_seconds:g} s [{label}: {size / 2**20:.1f} MB]"

    def gallery(self) -> Any:
        from voiceid.serve.store import EnrollmentError

        try:
            return self._live.get()
        except EnrollmentError as exc:
            raise DemoError(409, "store", f"The enrollment store cannot be used with this model: {exc}") from None

    def identify(self, data: bytes, filename: str) -> dict[str, Any]:
        start = time.perf_counter()
        clip = self.decode(data, filename, self.limits.min_seconds)
        gallery = self.gallery()
        with self._lock:
            try:
                decision = self.champion.identify(clip.wave, clip.sample_rate, gallery)
                ranked = speaker_scores(self.champion, clip.wave, clip.sample_rate, gallery)
            except ValueError as exc:  # e.g. a clip the front end cannot frame
                raise DemoError(422, "invalid", f"The audio cannot be used [{exc}]") from None
        return {
            "file": safe_name(filename, "upload"),
            "speaker": decision.speaker,
            "known": decision.known,
            "score": round(decision.score, 6),
            "threshold": round(decision.threshold, 6),
            "top": [{"speaker": s, "score": round(p, 6)} for s, p in ranked[:3]],
            "n_speakers": len(ranked),
            "duration": round(clip.duration, 3),
            "sample_rate": clip.orig_sample_rate,
            "channels": clip.orig_channels,
            "peaks": wave_peaks(clip.wave),
            "elapsed_ms": round(1000 * (time.perf_counter() - start), 1),
        }

    # -- enroll -----------------------------------------------------------------------------
    def enroll(self, name: str, clips: list[tuple[str, bytes]], append: bool = False) -> dict[str, Any]:
        from voiceid.serve.enroll import EnrollParams, enroll_speaker
        from voiceid.serve.store import EnrollmentError, EnrollmentStore

        if not clips:
            raise DemoError(400, "no_clips", f"Choose the speaker's recordings (at least {self.limits.enroll_min_files} clips)")
        if len(clips) > MAX_ENROLL_CLIPS:
            raise DemoError(413, "too_many", f"At most {MAX_ENROLL_CLIPS} clips per enrollment, found {len(clips)}")
        for filename, data in clips:
            if len(data) > self.limits.max_bytes:
                raise DemoError(413, "too_large", self._too_large(safe_name(filename), len(data)))
        params = EnrollParams(
            self.limits.enroll_min_files, self.limits.enroll_min_seconds, self.limits.max_seconds, self.limits.silence_db
        )
        model = {k: self.info[k] for k in ("uri", "version", "run_id", "family") if self.info.get(k)}
        with tempfile.TemporaryDirectory(prefix="voiceid-demo-enroll-") as tmp:
            paths = []
            for i, (filename, data) in enumerate(clips):
                path = Path(tmp) / f"{i:02d}-{Path(safe_name(filename)).stem}{_suffix(filename)}"
                path.write_bytes(data)
                paths.append(path)
            try:
                with self._lock:
                    speaker, skipped = enroll_speaker(
                        EnrollmentStore(self.store_root), self.champion, name, paths, params, model, append=append
                    )
            except EnrollmentError as exc:
                raise DemoError(422, "enroll", _untemp(str(exc), tmp)) from None
        return {
            "speaker": speaker.name,
            "n_utterances": speaker.n_utterances,
            "version": speaker.version,
            "skipped": [_untemp(m, tmp) for m in skipped],
            "note": (
                f"{speaker.name!r} is also one of the model's own speakers: these recordings replace its centroid"
                if speaker.name in self.champion.label_map
                else ""
            ),
        }

    def speakers(self) -> dict[str, Any]:
        from voiceid.serve.store import EnrollmentError, EnrollmentStore

        store = EnrollmentStore(self.store_root)
        try:
            state = store.load()
        except EnrollmentError as exc:
            raise DemoError(409, "store", str(exc)) from None
        return {
            "store": str(self.store_root),
            "version": state.version,
            "speakers": [{"name": s.name, "n_utterances": s.n_utterances, "updated": s.updated} for s in store.speakers(state)],
            "model_speakers": list(self.champion.label_map),
        }

    def remove(self, name: str) -> dict[str, Any]:
        from voiceid.serve.store import EnrollmentError, EnrollmentStore

        try:
            version = EnrollmentStore(self.store_root).remove(name)
        except EnrollmentError as exc:
            raise DemoError(404, "no_speaker", str(exc)) from None
        return {"removed": name, "version": version}

    def about(self) -> dict[str, Any]:
        limits = {
            "max_bytes": self.limits.max_bytes,
            "max_seconds": self.limits.max_seconds,
            "min_seconds": self.limits.min_seconds,
            "enroll_min_files": self.limits.enroll_min_files,
            "max_enroll_clips": MAX_ENROLL_CLIPS,
        }
        return {**self.about_info, "limits": limits}


def _untemp(message: str, tmp: str) -> str:
    """Enrollment messages name the uploaded files, not the server's temporary copies."""
    return re.sub(re.escape(tmp) + r"/\d\d-", "", message)


# -- about the model ------------------------------------------------------------------------------
TEST_FIGURES = ("far", "frr", "eer", "dir_far_1", "accuracy")


def describe_model(
    champion: Champion, info: dict[str, Any], mlflow_url: str, selection: Path | None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """What the About panel shows: the champion itself, and its test figures from MLflow or the report."""
    primary = champion.primary
    out: dict[str, Any] = {
        "uri": info.get("uri"),
        "version": info.get("version"),
        "run_id": info.get("run_id") or champion.run_id,
        "family": champion.family,
        "kind": getattr(primary, "kind", ""),
        "feature_set": getattr(primary.front, "feature_set", ""),
        "threshold": round(champion.threshold, 6),
        "threshold_rule": champion.threshold_rule,
        "speakers": list(champion.label_map),
        "embedding": None,
        "test": {},
        "test_source": "",
        "run_url": None,
    }
    emb = champion.embedding
    if emb is not None:
        out["embedding"] = {
            "feature_set": emb.front.feature_set,
            "embedder_id": emb.embedder_id,
            "threshold": round(float(champion.embedding_threshold or 0.0), 6),
        }
    run_id = info.get("run_id")
    if run_id:  # the registered version's run: the select stage logged test_<figure> there
        try:
            from voiceid import tracking

            with tracking.uri_override(tracking_uri):
                tracking.configure()
                run = tracking.get_runs([run_id])[0]
                # The UI's run page is addressed by experiment id (its /runs/<id> route answers 404 in MLflow 3.17).
                frame = tracking.runs_frame(experiment_prefix=run.experiment)
            out["test"] = _figures({k[len("test_") :]: v for k, v in run.metrics.items() if k.startswith("test_")})
            out["test_source"] = f"MLflow run {run_id}"
            ids = [] if frame.empty else frame.loc[frame["run_id"] == run_id, "experiment_id"].tolist()
            if ids:
                out["run_url"] = f"{mlflow_url.rstrip('/')}/#/experiments/{ids[0]}/runs/{run_id}"
        except Exception as exc:  # the page still works without them
            _log.warning("run %s not readable: %s", run_id, exc)
    if not out["test"] and selection is not None and selection.is_file():
        import json

        try:
            report = json.loads(selection.read_text(encoding="utf-8"))
            champ = report.get("champion", {})
            if champ.get("family") == champion.family:
                out["test"] = _figures(champ.get("test", {}))
                out["test_source"] = str(selection)
        except (OSError, ValueError, AttributeError) as exc:
            _log.warning("%s not readable: %s", selection, exc)
    return out


def _figures(flat: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{"far": v, "far_lo": lo, ...}`` -> ``{"far": {"value", "lo", "hi"}}`` for :data:`TEST_FIGURES`."""
    out = {}
    for k in TEST_FIGURES:
        v = flat.get(k)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = {"value": float(v), **{b: float(flat[f"{k}_{b}"]) for b in ("lo", "hi") if f"{k}_{b}" in flat}}
    return out


# -- HTTP -----------------------------------------------------------------------------------------
def page_html() -> str:
    return resources.files("voiceid.serve").joinpath(PAGE).read_text(encoding="utf-8")


async def _read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused (413) as soon as it exceeds ``limit`` bytes."""
    too_big = DemoError(413, "too_large", f"{what} too large: uploads are limited to {limit / 2**20:.0f} MB")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > DRAIN_FACTOR * limit:
        raise too_big  # not worth reading: the client sees the connection closed
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_FACTOR * limit:
            raise too_big
        if size <= limit:
            chunks.append(chunk)
    # A body somewhat over the limit is read to its end (and dropped), so the client gets the message, not a reset.
    if size > limit:
        raise too_big
    return b"".join(chunks)


def build_app(demo: Demo, allowed_hosts: frozenset[str] | None = None) -> Starlette:
    """The page and its JSON API (``/api/...``).

    ``allowed_hosts``: the ``Host`` headers answered (None: any); a request with an ``Origin``
    must come from the page this server served (same host), whatever ``allowed_hosts`` is.
    """
    from urllib.parse import unquote, urlsplit

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    html = page_html()

    def handler(fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                host, origin = request.headers.get("host", ""), request.headers.get("origin")
                if (allowed_hosts is not None and host not in allowed_hosts) or (
                    origin is not None and urlsplit(origin).netloc != host  # another site's page in the user's browser
                ):
                    raise DemoError(403, "forbidden", "this demo answers only its own page")
                result = await fn(request)
                return result if not isinstance(result, dict) else JSONResponse(result)
            except DemoError as exc:
                return JSONResponse({"error": str(exc), "reason": exc.reason}, status_code=exc.status)
            except Exception as exc:  # a bug: logged on the server, a one-line message on the page
                _log.exception("%s %s failed", request.method, request.url.path)
                return JSONResponse(
                    {"error": f"internal error ({type(exc).__name__}); see the server log", "reason": "internal"}, status_code=500
                )

        return endpoint

    async def index(request: Request) -> Response:
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def identify(request: Request) -> dict[str, Any]:
        data = await _read_body(request, demo.limits.max_bytes, "The file is")
        filename = unquote(request.headers.get("x-filename", "") or "upload.wav")
        return await run_in_threadpool(demo.identify, data, filename)

    async def enroll(request: Request) -> dict[str, Any]:
        import json

        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise DemoError(415, "bad_request", "enroll takes application/json")
        body = await _read_body(request, demo.limits.enroll_body_bytes, "The enrollment is")
        try:
            doc = json.loads(body)
            name = doc["name"]
            items = doc["clips"]
            if not isinstance(name, str) or not isinstance(items, list):
                raise TypeError("name must be a string and clips a list")
            clips = [(str(c.get("name", f"clip{i}")), base64.b64decode(c["data"], validate=True)) for i, c in enumerate(items)]
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise DemoError(400, "bad_request", f"enroll expects {{name, clips: [{{name, data (base64)}}]}}: {exc}") from None
        return await run_in_threadpool(demo.enroll, name, clips, bool(doc.get("append", False)))

    async def speakers(request: Request) -> dict[str, Any]:
        return await run_in_threadpool(demo.speakers)

    async def remove(request: Request) -> dict[str, Any]:
        return await run_in_threadpool(demo.remove, unquote(request.path_params["name"]))

    async def about(request: Request) -> dict[str, Any]:
        return demo.about()

    async def health(request: Request) -> dict[str, Any]:
        return {"ok": True}

    routes = [
        Route("/", handler(index)),
        Route("/api/identify", handler(identify), methods=["POST"]),
        Route("/api/enroll", handler(enroll), methods=["POST"]),
        Route("/api/speakers", handler(speakers), methods=["GET"]),
        Route("/api/speakers/{name:path}", handler(remove), methods=["DELETE"]),
        Route("/api/model", handler(about), methods=["GET"]),
        Route("/api/health", handler(health), methods=["GET"]),
    ]
    return Starlette(routes=routes)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def allowed_host_names(host: str, port: int) -> frozenset[str] | None:
    """Host headers a loopback server answers (None -- any -- once ``--host`` opens it to a network).

    >>> sorted(allowed_host_names("127.0.0.1", 8765))
    ['127.0.0.1:8765', 'localhost:8765']
    >>> allowed_host_names("0.0.0.0", 8765) is None
    True
    """
    if not _is_loopback(host):
        return None
    names = {f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"}
    if ":" in host:  # IPv6 literal
        names = {f"[{host}]:{port}", f"localhost:{port}"}
    return frozenset(names)


def bound_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), handed to uvicorn so the printed port is the real one."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock


def _warm_up(demo: Demo) -> None:
    """One pass of a synthetic voiced tone: lazy imports and numba kernels are paid before the first request."""
    sr = demo.champion.sample_rate
    t = np.arange(sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 140.0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t))).astype(np.float32)
    try:
        demo.champion.identify(tone, sr)
        speaker_scores(demo.champion, tone, sr)
    except Exception as exc:  # the first real request will say what is wrong
        _log.warning("warm-up failed: %s", exc)


def cmd_demo(args: argparse.Namespace) -> int:
    """Load the model (``voiceid identify``'s rules), then serve the page until interrupted."""
    import uvicorn

    from voiceid.serve.cli import CliError, load_model

    if args.max_mb <= 0 or args.max_seconds <= 0:
        raise CliError("demo: --max-mb and --max-seconds must be > 0")
    try:  # first: a busy port fails before the seconds a model load costs
        sock = bound_socket(args.host, args.port)
    except OSError as exc:
        raise CliError(f"demo: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    with contextlib.closing(sock):
        champion, info = load_model(args.model, args.tracking_uri)  # CliError -> exit 2 with the reason (cli.main)
        limits = Limits(max_bytes=int(args.max_mb * 2**20), max_seconds=args.max_seconds, silence_db=args.silence_db)
        demo = Demo(champion, info, Path(args.store), limits)
        demo.about_info = describe_model(
            champion, info, args.mlflow_url, Path(args.selection) if args.selection else None, args.tracking_uri
        )
        _warm_up(demo)
        port = int(sock.getsockname()[1])
        app = build_app(demo, allowed_host_names(args.host, port))
        shown = f"[{args.host}]" if ":" in args.host else args.host
        version = f" v{info['version']}" if info.get("version") else ""
        print(f"voiceid demo: model {info['uri']}{version} ({champion.family}), store {demo.store_root}", flush=True)
        if not _is_loopback(args.host):
            print(
                f"voiceid demo: listening on {args.host}: anyone who can reach it can identify, enroll and remove speakers",
                flush=True,
            )
        print(f"voiceid demo: open http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``demo`` to the ``voiceid`` subcommands (``common``: the --model/--tracking-uri/--store/--silence-db options)."""
    p = sub.add_parser("demo", help="a local web page: identify (upload or microphone), enroll, about the model")
    common(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 takes a free one)")
    p.add_argument("--mlflow-url", default=DEFAULT_MLFLOW_URL, help="the MLflow UI, for the link to the model's run")
    p.add_argument(
        "--selection",
        default="reports/selection.json",
        help="the select stage's report: test FAR/FRR when the model's run has none",
    )
    p.add_argument("--max-mb", type=float, default=10.0, help="largest upload (MB, default 10)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="longest clip (s, default 60)")
    p.set_defaults(run=cmd_demo)
