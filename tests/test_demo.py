"""``voiceid demo`` in headless Debian Chromium: identify real clips, a silent one, enroll and identify a newcomer.

The champion is built in a few seconds from real LibriSpeech clips of ``data/default`` (as
tests/test_cli.py builds one from synthetic voices: selection of a logistic regression and the
cosine baseline on ``mfcc60``, registered as ``models:/voiceid@champion`` in a temp MLflow
store), then ``python -m voiceid.serve.cli demo --port 0`` serves it on loopback and Chromium
(same setup as tests/test_mlflow_ui.py, plus a fake microphone playing a real clip) drives the
page.  Screenshots land in the test's temp folder; their paths and the warm answer time of a
5 s clip are printed (``pytest -s``).  Skips only where Chromium or its driver is missing.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import REPO, write_wav
from local_processes import CHROMEDRIVER, CHROMIUM, stop_group
from local_processes import chromium as local_chromium

from voiceid.serve.cli import main

needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian chromium and chromium-driver are not installed (`make browser` or "
    "`apt-get install chromium chromium-driver`); the demo page check needs a real browser",
)

DATA = REPO / "data" / "default"
DEMO_ARGS = (
    "--window-size=1500,1100",
    # a fake microphone (no permission prompt) that plays the file given below
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
)
WAIT_S = 30
CROP_S = 3.0  # training clips are cut to 3 s: the champion builds in seconds


@dataclass
class World:
    root: Path
    uri: str  # the temp MLflow store holding models:/voiceid@champion
    enrolled_probe: Path  # a clip of a model speaker it was not trained on
    five_s: Path  # 5 s WAV of another model speaker
    mic: Path  # what the fake microphone plays (a third model speaker)
    speakers: dict[str, str]  # clip -> its speaker
    newcomer: list[Path]  # four clips of a speaker the model never saw
    champion: Any
    result: Any  # the SelectionResult: every candidate's scorer
    bank: Any  # the FeatureBank it was selected on
    params: Any  # SelectParams


def _clips(speaker: str) -> list[Path]:
    return sorted((DATA / speaker).glob("*.flac"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from synthetic_select import fit_logreg

    from voiceid import tracking
    from voiceid.data.audio import load_audio
    from voiceid.features.params import FeatureParams
    from voiceid.features.signal import feature_vector
    from voiceid.select.candidates import FeatureBank, Source
    from voiceid.select.params import SelectParams
    from voiceid.select.protocol import make_champion, select
    from voiceid.select.register import register_champion
    from voiceid.select.report import summary

    with (DATA / "metadata.csv").open(newline="") as f:
        roles = {row["speaker"]: row["role"] for row in csv.DictReader(f)}
    multi = sorted(s for s, r in roles.items() if r == "multi")
    single = sorted(s for s, r in roles.items() if r == "single")
    model_speakers, newcomer = multi[:5], multi[5]
    rows = []
    for s in model_speakers:  # 3 train, 2 val, 1 test clips each (one session: the other session's clips are probes)
        for i, path in enumerate(_clips(s)[:6]):
            rows.append({"path": path, "speaker": s, "role": "enrolled", "split": "train" if i < 3 else "val" if i < 5 else "test"})
    for j, s in enumerate(single[:16]):  # strangers: 10 for the val thresholds, 6 for the test figures
        rows.append({"path": _clips(s)[0], "speaker": s, "role": "unknown", "split": "val" if j < 10 else "test"})
    meta = pd.DataFrame(rows)
    meta["utt_id"] = meta["content_hash"] = [p.stem for p in meta["path"]]
    features = FeatureParams(sets=("mfcc60",))
    X = np.stack([feature_vector("mfcc60", load_audio(p, 16000).wave[: int(CROP_S * 16000)], 16000, features) for p in meta["path"]])
    bank = FeatureBank({"mfcc60": (meta, X)})
    params = SelectParams(families=("logreg", "cosine"), n_bootstrap=20, threshold_rule="eer", champion_metric="eer",
                          registered_model="voiceid")
    sources = [(Source("logreg", "classifier", "mfcc60", "run-1", None, "val_f1_weighted", 1.0), fit_logreg(bank)),
               (Source("cosine", "embedding", "mfcc60"), None)]
    result = select(sources, bank, params, features)
    champion = make_champion(result, params, features)

    root = tmp_path_factory.mktemp("demo")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow artifacts land in the temp dir
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        tracking.configure(uri)
        register_champion(champion, params, summary(result, params, {}), {"data_hash": "data/default subset"})

    def crop(src: Path, seconds: float, name: str) -> Path:
        wave, sr = sf.read(src, dtype="float32")
        return write_wav(root / "audio" / name, wave[: int(seconds * sr)], sr)

    probe = _clips(model_speakers[0])[7]  # a session the model was not trained on
    five = crop(_clips(model_speakers[1])[6], 5.0, "five-seconds.wav")
    mic = crop(_clips(model_speakers[2])[6], 6.0, "microphone.wav")  # WAV: what Chromium's fake capture reads
    named = {probe.name: model_speakers[0], five.name: model_speakers[1], mic.name: model_speakers[2]}
    yield World(root, uri, probe, five, mic, named, _clips(newcomer)[:4], champion, result, bank, params)


@contextmanager
def demo_server(world: World, store: Path, log_path: Path) -> Iterator[Callable[[], str]]:
    """``voiceid demo --port 0`` in a child process (its own session); yields a wait for the URL it prints.

    (A wait, so that the browser starts while the server loads the model.)
    """
    cmd = [sys.executable, "-m", "voiceid.serve.cli", "demo", "--port", "0", "--tracking-uri", world.uri,
           "--store", str(store), "--mlflow-url", "http://127.0.0.1:5000", "--max-mb", "10", "--max-seconds", "60"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=world.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    def wait_url() -> str:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"voiceid demo exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            found = re.search(r"open (http://127\.0\.0\.1:\d+/)", log_path.read_text())
            if found:
                return found.group(1)
            if time.monotonic() > deadline:
                pytest.fail(f"voiceid demo printed no URL after 90 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    try:
        yield wait_url
    finally:
        stop_group(proc)


@contextmanager
def chromium(profile: Path, microphone: Path) -> Iterator[object]:
    with local_chromium(profile, (*DEMO_ARGS, f"--use-file-for-fake-audio-capture={microphone}")) as driver:
        yield driver


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


class Page:
    """The demo page in the browser: its sections expose ``data-state`` (busy, done, error)."""

    def __init__(self, driver, url: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.url = driver, url
        self.wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.05)

    def el(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.el(css).text.strip()

    def _settled(self, section: str) -> str:
        state = self.wait.until(lambda d: self.el(section).get_attribute("data-state") in ("done", "error")
                                and self.el(section).get_attribute("data-state"))
        return str(state)

    def identify(self, path: Path) -> tuple[str, float]:
        """Upload ``path`` (the page identifies on choosing a file); (state, seconds until the answer shows)."""
        self.driver.execute_script("document.getElementById('identify').dataset.state = ''")
        start = time.perf_counter()
        self.el("#identify-file").send_keys(str(path))
        state = self._settled("#identify")
        return state, time.perf_counter() - start

    def record(self, seconds: float) -> str:
        self.driver.execute_script("document.getElementById('identify').dataset.state = ''")
        self.el("#record-btn").click()
        time.sleep(seconds)
        self.el("#record-btn").click()
        return self._settled("#identify")

    def enroll(self, name: str, clips: list[Path]) -> str:
        self.driver.execute_script("document.getElementById('enroll').dataset.state = ''")
        self.el("#enroll-name").clear()
        self.el("#enroll-name").send_keys(name)
        self.driver.execute_script("document.getElementById('enroll-files').value = ''")  # send_keys adds to a choice
        self.el("#enroll-files").send_keys("\n".join(str(c) for c in clips))
        self.el("#enroll-btn").click()
        return self._settled("#enroll")

    def shot(self, path: Path) -> Path:
        """The whole page, below the fold too (Chromium's DevTools screenshot)."""
        png = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(png["data"]))
        return path


@needs_browser
def test_demo_page_identifies_rejects_silence_and_enrolls(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    silent = write_wav(tmp_path / "silent.wav", np.zeros(32000, np.float32))
    store = tmp_path / "enrollment"
    shots: list[Path] = []
    t_start = time.perf_counter()
    with demo_server(world, store, tmp_path / "demo.log") as wait_url, chromium(tmp_path / "profile", world.mic) as driver:
        url = wait_url()
        t_up = time.perf_counter()
        page = Page(driver, url)
        driver.get(url)
        page.wait.until(lambda d: page.el("#about").get_attribute("data-family") == "cosine")
        about = page.text("#about-table")
        assert "models:/voiceid@champion (version 1)" in about and "mfcc60" in about and "Test FAR" in about
        assert re.search(r"Test FAR\s+\d+\.\d%", about) and re.search(r"Test FRR\s+\d+\.\d%", about), about
        run_link = page.el("#run-link").get_attribute("href")
        assert re.fullmatch(r"http://127\.0\.0\.1:5000/#/experiments/\d+/runs/[0-9a-f]{32}", run_link), run_link

        # 1. a real clip of one of the model's speakers
        state, _ = page.identify(world.enrolled_probe)
        assert state == "done", page.text("#identify-error")
        assert page.text("#answer") == world.speakers[world.enrolled_probe.name]
        assert page.text("#top3").splitlines()[0].startswith(f"1. {world.speakers[world.enrolled_probe.name]}")
        assert len(page.text("#top3").splitlines()) == 4  # three speakers and the "of N speakers" line
        assert page.text("#duration").startswith("6.00 s")
        assert "≥ threshold" in page.text("#score-line")
        shots.append(page.shot(tmp_path / "demo_identify.png"))

        # 2. a 5 s clip: once to warm up, then timed five times (medians)
        page.identify(world.five_s)
        timings = []
        for _ in range(5):
            state, seconds = page.identify(world.five_s)
            assert state == "done" and page.text("#answer") == world.speakers[world.five_s.name]
            server_ms = float(re.search(r"model (\d+) ms", page.text("#identify-status")).group(1))
            timings.append((1000 * seconds, float(page.el("#identify").get_attribute("data-ms")), server_ms))
        warm_ms, page_ms, server_ms = np.median(np.array(timings), axis=0)

        # 3. silence: a message, not a stack trace
        state, _ = page.identify(silent)
        error = page.text("#identify-error")
        assert state == "error" and error.startswith("No speech found") and "silent: expected" in error, error
        assert "Traceback" not in error and not page.el("#result").is_displayed()
        shots.append(page.shot(tmp_path / "demo_silent.png"))

        # 4. the fake microphone plays a third speaker's clip: recorded, encoded as WAV in the page, identified
        assert page.record(3.0) == "done", page.text("#identify-error")
        assert page.text("#answer") == world.speakers[world.mic.name]
        assert page.text("#answer-file") == "recording.wav"

        # 5. enroll a newcomer from three clips, then identify a fourth
        state, _ = page.identify(world.newcomer[3])
        assert state == "done" and page.text("#answer") == "unknown"  # not known before enrolling
        assert page.enroll("Guest 1688", world.newcomer[:3]) == "done", page.text("#enroll-error")
        assert "Enrolled Guest 1688 with 3 recording(s)" in page.text("#enroll-ok")
        page.wait.until(lambda d: "Guest 1688 — 3 recording(s)" in page.text("#speakers"))
        state, _ = page.identify(world.newcomer[3])
        assert state == "done" and page.text("#answer") == "Guest 1688"
        shots.append(page.shot(tmp_path / "demo_enrolled.png"))
        assert main(["enroll", "--list", "--json", "--store", str(store)]) == 0  # the CLI's store, the CLI's view
        assert [s["name"] for s in json.loads(capsys.readouterr().out)["speakers"]] == ["Guest 1688"]

        # 6. an enrollment with unusable clips says why; remove lists nobody
        assert page.enroll("Someone", [silent, world.newcomer[0], world.newcomer[1]]) == "error"
        assert "2 usable recording(s), need at least 3" in page.text("#enroll-error")  # the silent one is not
        assert "silent.wav: silent" in page.text("#enroll-error") and "voiceid-demo" not in page.text("#enroll-error")
        page.el("#speakers li[data-name='Guest 1688'] button.remove").click()
        page.wait.until(lambda d: "nobody enrolled yet" in page.text("#speakers"))

        # 7. limits and host checks, straight at the API
        api = url + "api/identify"
        code, doc = _post(api, b"\0" * (10 * 2**20 + 1), {"Content-Type": "application/octet-stream"})
        assert code == 413 and "limited to 10 MB" in doc["error"]
        long_wav = write_wav(tmp_path / "long.wav", np.tile(sf.read(world.five_s, dtype="float32")[0], 13))  # 65 s
        code, doc = _post(api, long_wav.read_bytes(), {"X-Filename": "long.wav"})
        assert code == 422 and doc["reason"] == "too_long" and "found 65.000 s" in doc["error"]
        code, doc = _post(api, b"not audio at all", {"X-Filename": "notes.txt"})
        assert code == 422 and doc["error"].startswith("This is not audio")
        code, doc = _post(api, world.five_s.read_bytes(), {"Host": "evil.example:80"})
        assert code == 403
        code, doc = _post(url + "api/enroll", b"{}", {"Content-Type": "application/json", "Origin": "http://evil.example"})
        assert code == 403
        t_end = time.perf_counter()

    print(f"\nvoiceid demo screenshots: {', '.join(str(s) for s in shots)}")
    print(f"voiceid demo: a 5 s clip is answered warm in {page_ms:.0f} ms (median of 5: the page's request, upload to JSON; "
          f"{server_ms:.0f} ms of it in the server: decode, checks, identify, top-3, waveform; {warm_ms:.0f} ms from "
          f"choosing the file to the answer shown, as selenium sees it); server+browser start {t_up - t_start:.1f} s, "
          f"page checks {t_end - t_up:.1f} s")
    for s in shots:
        assert s.stat().st_size > 20_000


def test_speaker_scores_rank_as_identify_decides(world: World) -> None:
    """The page's top-3 helper, for each kind of scorer: same speakers, its best is identify's answer and score."""
    import dataclasses

    from voiceid.data.audio import load_audio
    from voiceid.scoring.centroids import speaker_centroids
    from voiceid.select.candidates import build_fusion
    from voiceid.serve.demo import speaker_scores

    by_family = {c.family: c for c in world.result.candidates}
    fusion = build_fusion(by_family["logreg"], by_family["cosine"], world.bank.without_test(), world.params)
    wave = load_audio(world.enrolled_probe).wave
    for cand in (by_family["logreg"], by_family["cosine"], fusion):
        champion = dataclasses.replace(world.champion, family=cand.family, primary=cand.scorer)
        decision = champion.identify(wave, 16000)
        ranked = speaker_scores(champion, wave, 16000)
        assert sorted(s for s, _ in ranked) == sorted(champion.label_map), cand.family
        assert ranked[0][1] == pytest.approx(decision.score, abs=1e-9), cand.family
        assert ranked[0][0] == world.speakers[world.enrolled_probe.name], cand.family
        assert decision.speaker == (ranked[0][0] if decision.known else "unknown"), cand.family
        assert all(0.0 <= p <= 1.0 for _, p in ranked)

    # with a gallery: the embedding scorer answers, over the model's speakers and the gallery's
    emb = np.stack([world.champion.embed(load_audio(p).wave, 16000) for p in world.newcomer[:3]])
    gallery = speaker_centroids(emb, ["newcomer"] * 3)
    probe = load_audio(world.newcomer[3]).wave
    decision = world.champion.identify(probe, 16000, gallery)
    ranked = speaker_scores(world.champion, probe, 16000, gallery)
    assert decision.speaker == ranked[0][0] == "newcomer" and ranked[0][1] == pytest.approx(decision.score, abs=1e-9)
    assert len(ranked) == len(world.champion.label_map) + 1


def test_demo_refuses_a_missing_model_or_a_busy_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit code 2 and one line of reason (as ``voiceid identify``), before anything is served."""
    import socket

    absent = tmp_path / "absent.db"
    assert main(["demo", "--port", "0", "--tracking-uri", f"sqlite:///{absent}"]) == 2
    assert f"voiceid: cannot load model models:/voiceid@champion: no MLflow store at sqlite:///{absent}" in capsys.readouterr().err
    assert not absent.exists()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["demo", "--port", str(port), "--tracking-uri", f"sqlite:///{absent}"]) == 2
    assert f"voiceid: demo: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
