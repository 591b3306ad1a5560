"""seed498 against the seed recipe on real speech: same 498-d vector, per-block tolerances.

Tolerances (documented in voiceid/features/signal.py): chroma, mel and MFCC come from the same
resampled signal and STFT as the seed's, so they agree to float32 rounding, 1e-4 of the
block's largest magnitude.  Tonnetz is projected from STFT chroma instead of CQT chroma
by default: per file the 18 values (range [-1, 1]) may differ by 0.15 on average and 0.6
at most (measured over 78 real files: 0.11 and 0.51 worst).  With ``tonnetz_chroma: cqt``
the tonnetz block matches to 1e-4 as well.

The speech comes from the embedded dataset (``data/default``, LibriSpeech FLAC), so these
checks run on a fresh clone: three 2-6 s excerpts and 1.0 s / 1.3 s cuts of two of them
(short clips, where the seed's CQT window exceeds the signal).  When
``../shared/data/az_digits`` is beside the repo, two of its ~1 s digits are checked too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, SHARED_DATA

from voiceid.data.audio import load_audio
from voiceid.features.params import FeatureParams
from voiceid.features.seed_recipe import SEED_BLOCKS, seed_features
from voiceid.features.signal import clip_spectra, compute_sets, estimate_tuning

# the seed recipe itself warns on 1 s clips (its CQT window exceeds the signal)
pytestmark = [pytest.mark.filterwarnings("ignore:n_fft=:UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # audioread, imported by librosa.load

P = FeatureParams(sets=("seed498",), n_jobs=1)
TIGHT = 1e-4


DEFAULT_DATA = REPO / "data" / "default"
AZ_DIGITS = SHARED_DATA / "az_digits"


def short_cuts(excerpts: list[Path], out: Path) -> list[Path]:
    """1.0 s and 1.3 s of two embedded excerpts (from 0.5 s), as 16-bit FLAC like their sources."""
    clips = []
    for source, seconds in zip(excerpts[:2], (1.0, 1.3), strict=True):
        wave, sr = sf.read(source, dtype="int16")  # 16-bit PCM in and out: the samples are unchanged
        clip = out / f"{source.stem}-{seconds:g}s.flac"
        sf.write(clip, wave[int(0.5 * sr) : int((0.5 + seconds) * sr)], sr, subtype="PCM_16")
        clips.append(clip)
    return clips


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three LibriSpeech excerpts (2-6 s, fixed picks from data/default), two ~1 s cuts of them, and two
    Azerbaijani digits (~1 s) when ``../shared/data/az_digits`` is there."""
    ls = sorted(DEFAULT_DATA.glob("*/*.flac"))
    assert len(ls) >= 3, f"{DEFAULT_DATA}: the embedded dataset is missing ({len(ls)} FLAC files)"
    excerpts = [ls[0], ls[len(ls) // 2], ls[-1]]
    files = excerpts + short_cuts(excerpts, tmp_path_factory.mktemp("short"))
    if AZ_DIGITS.is_dir():
        az = sorted(AZ_DIGITS.glob("*/*.wav"))
        files += [az[0], az[len(az) // 2]]
    return files


def block_error(seed: np.ndarray, ours: np.ndarray, block: slice) -> float:
    return float(np.max(np.abs(seed[block] - ours[block])) / np.max(np.abs(seed[block])))


def test_seed498_matches_seed_recipe(real_files: list[Path]) -> None:
    for path in real_files:
        seed = seed_features(path)
        ours = compute_sets(load_audio(path).wave, 16000, ("seed498",), P)["seed498"]
        assert seed.shape == ours.shape == (498,)
        for name in ("chroma", "mel", "mfcc"):
            assert block_error(seed, ours, SEED_BLOCKS[name]) <= TIGHT, (path, name)
        tonnetz_diff = np.abs(seed[SEED_BLOCKS["tonnetz"]] - ours[SEED_BLOCKS["tonnetz"]])
        assert tonnetz_diff.mean() <= 0.15 and tonnetz_diff.max() <= 0.6, (path, tonnetz_diff)


def test_cqt_tonnetz_option_gives_full_parity(real_files: list[Path]) -> None:
    cqt = replace(P, tonnetz_chroma="cqt")
    for path in real_files[::2]:
        seed = seed_features(path)
        ours = compute_sets(load_audio(path).wave, 16000, ("seed498",), cqt)["seed498"]
        for name, block in SEED_BLOCKS.items():
            assert block_error(seed, ours, block) <= TIGHT, (path, name)


def test_fast_tuning_estimate_equals_librosa_on_speech(real_files: list[Path]) -> None:
    for path in real_files:
        power = clip_spectra(load_audio(path).wave, 16000).power
        assert estimate_tuning(power) == librosa.estimate_tuning(S=power, sr=22050, bins_per_octave=12), path
