"""Shared fixtures: seeded synthetic speech-like audio, the real data beside the repo, and a small pipeline run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pipeline_run import PipelineRun, build

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fill numba's kernel cache serially before any test starts worker processes."""
    from voiceid.features.jit import warm_jit_caches

    warm_jit_caches()


def synth_voice(seed: int, seconds: float = 1.5, sr: int = 16000, f0: float | None = None) -> np.ndarray:
    """A harmonic 'voice' with a speaker-specific pitch and formant tilt, plus a little noise.

    Different seeds give audibly (and spectrally) different speakers, so classifiers in
    unit tests have something real to separate.
    """
    rng = np.random.default_rng(seed)
    f0 = f0 if f0 is not None else 90.0 + 15.0 * (seed % 12)
    t = np.arange(int(seconds * sr)) / sr
    vibrato = 1.0 + 0.01 * np.sin(2 * np.pi * 5 * t + rng.uniform(0, np.pi))
    tilt = rng.uniform(0.5, 1.5)
    wave = sum(np.sin(2 * np.pi * k * f0 * vibrato * t + rng.uniform(0, np.pi)) / k**tilt for k in range(1, 12))
    # syllable-like: deep dips between syllables, as in speech (prepare rejects clips whose
    # loudest frame is not well above their own floor as noise alone)
    envelope = 0.03 + 0.97 * np.sin(2 * np.pi * rng.uniform(2, 4) * t) ** 2
    wave = wave * envelope + 0.01 * rng.standard_normal(t.shape)
    return (0.3 * wave / np.max(np.abs(wave))).astype(np.float32)


def write_wav(path: Path, wave: np.ndarray, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, sr)
    return path


@pytest.fixture
def speaker_tree(tmp_path: Path) -> Path:
    """``root/spkNN/uttMM.wav``: 6 speakers × 8 utterances of seeded synthetic voice."""
    root = tmp_path / "corpus"
    for s in range(6):
        for u in range(8):
            write_wav(root / f"spk{s:02d}" / f"utt{u:02d}.wav", synth_voice(seed=s, seconds=1.0 + 0.1 * u) * (0.8 + 0.02 * u))
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real speech data beside the checkout (``../shared/data``), or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """The real stages run once per session on a subset of data/default (tests/pipeline_run.py; ~1 min on 2 cores)."""
    workspace = tmp_path_factory.mktemp("pipeline") / "repo"
    try:
        return build(workspace)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny torch models run fastest single-threaded, and the suite shares the cores."""
    from voiceid.features.dvector import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite MLflow store (tests that log runs); cwd moves to tmp so artifacts land there, not in the repo."""
    from voiceid import tracking

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.configure(uri)
    return uri
