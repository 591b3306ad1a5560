"""Servers and a browser that tests start on this machine: loopback only, always stopped.

One place for what ``test_mlflow_ui``, ``test_demo`` and the team-mode tests share: waiting
for a child server to answer (failing with its log when it dies), stopping its whole process
group, and a headless Debian chromium driven by an explicit chromedriver (Selenium Manager,
which would download one, never runs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROME_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
)


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout_s: float, what: str = "server") -> None:
    """Poll ``url`` until it answers 200; RuntimeError with the log's tail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``start_new_session``), then SIGKILL it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def chromium(profile: Path, extra_args: Sequence[str] = ()) -> Iterator[object]:
    """A headless chromium WebDriver with its own profile folder; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*CHROME_ARGS, *extra_args, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
