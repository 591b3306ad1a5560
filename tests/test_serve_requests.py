"""The served model under hostile input: confined server-side paths, three equal audio encodings, per-row validation."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import synth_voice, write_wav
from synthetic_select import small_champion

from voiceid.serve import request
from voiceid.serve.champion import OUTPUT_COLUMNS, Champion
from voiceid.serve.persist import save_champion
from voiceid.serve.request import RowRules
from voiceid.serve.store import EnrollmentStore


@pytest.fixture(scope="module")
def champion() -> Champion:
    return small_champion()[2]  # type: ignore[return-value]


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file the served model decodes (the loaders are the only way a row's file is read)."""
    calls: list[str] = []
    real, real_file = request.load_audio, request.load_audio_file

    def recording(path: Any, target_sr: int = 16000) -> Any:
        calls.append(str(path))
        return real(path, target_sr)

    def recording_file(file: Any, name: Any, target_sr: int = 16000) -> Any:
        calls.append(str(name))
        return real_file(file, name, target_sr)

    monkeypatch.setattr(request, "load_audio", recording)
    monkeypatch.setattr(request, "load_audio_file", recording_file)
    return calls


@pytest.fixture
def opened_inodes(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """The inode of every file ``os.open`` opens: what was actually opened, whatever name led there."""
    inodes: set[int] = set()
    real = os.open

    def recording(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real(path, flags, *args, **kwargs)
        inodes.add(os.fstat(fd).st_ino)
        return fd

    monkeypatch.setattr(request.os, "open", recording)
    return inodes


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def answers(champion: Champion, rows: list[dict[str, Any]], **kw: Any) -> pd.DataFrame:
    return champion.predict_frame(pd.DataFrame(rows), **kw)


def test_paths_outside_the_root_are_refused_and_never_opened(
    champion: Champion, tmp_path: Path, opened: list[str], opened_inodes: set[int]
) -> None:
    root = tmp_path / "root"
    inside = write_wav(root / "in.wav", synth_voice(seed=1, seconds=1.0))
    secret = write_wav(tmp_path / "secret.wav", synth_voice(seed=2, seconds=1.0))  # real audio, outside the root
    os.symlink(secret, root / "link.wav")  # a symlink inside that points outside
    os.symlink(tmp_path, root / "up")  # a folder symlink that points outside
    hostile = ["../secret.wav", str(secret), "link.wav", str(root / "link.wav"), "up/secret.wav", "sub/../../secret.wav",
               "/etc/passwd", "../../../../../../etc/passwd"]
    got = answers(champion, [{"path": p} for p in ["in.wav", str(inside), *hostile]], audio_root=root)
    assert list(got.columns) == list(OUTPUT_COLUMNS)
    assert got.loc[:1, "error"].tolist() == ["", ""] and got.loc[0, "speaker"] == got.loc[1, "speaker"] is not None
    for i, name in enumerate(hostile, start=2):
        assert got.loc[i, "error"] == f"forbidden: path {name!r} is outside the server's audio root", name
        assert pd.isna(got.loc[i, "speaker"]) and np.isnan(got.loc[i, "score"])
    assert opened == [str(inside), str(inside)]  # the refused rows' files were never opened
    assert secret.stat().st_ino not in opened_inodes and inside.stat().st_ino in opened_inodes

    opened.clear()
    off = answers(champion, [{"path": "in.wav"}, {"path": str(inside)}])  # no root: server-side paths are off
    assert off["error"].str.startswith("forbidden: server-side files are off on this server (path").all() and opened == []
    with pytest.raises(ValueError, match="not a directory"):
        answers(champion, [{"path": "in.wav"}], audio_root=inside)


def swap_after_check(monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]) -> None:
    """The race: ``swap`` runs right after a row's path passed the check, before the server opens it."""
    real = request.confine

    def confine_then_swap(*args: Any, **kwargs: Any) -> Path:
        resolved = real(*args, **kwargs)
        swap()
        return resolved

    monkeypatch.setattr(request, "confine", confine_then_swap)


def hide_proc_fd(monkeypatch: pytest.MonkeyPatch) -> None:
    """A system without ``/proc/self/fd``: the open file is checked by re-resolving its name instead."""
    real = os.path.islink
    monkeypatch.setattr(request.os.path, "islink", lambda p: False if str(p).startswith("/proc/self/fd/") else real(p))


@pytest.mark.parametrize("proc", [True, False], ids=["proc", "no-proc"])
def test_a_file_swapped_for_a_symlink_after_the_check_is_never_opened(
    champion: Champion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opened: list[str], opened_inodes: set[int], proc: bool
) -> None:
    root = tmp_path / "root"
    victim = write_wav(root / "in.wav", synth_voice(seed=1, seconds=1.0))
    secret = write_wav(tmp_path / "secret.wav", synth_voice(seed=2, seconds=1.0))

    def swap() -> None:
        victim.unlink()
        os.symlink(secret, victim)

    swap_after_check(monkeypatch, swap)
    if not proc:
        hide_proc_fd(monkeypatch)
    got = answers(champion, [{"path": "in.wav"}], audio_root=root)
    assert got.loc[0, "error"] == "forbidden: path 'in.wav' is outside the server's audio root" and pd.isna(got.loc[0, "speaker"])
    assert secret.stat().st_ino not in opened_inodes and opened == []  # not even opened, let alone decoded


@pytest.mark.parametrize("proc", [True, False], ids=["proc", "no-proc"])
def test_a_folder_swapped_for_a_symlink_after_the_check_is_refused_once_open(
    champion: Champion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opened: list[str], opened_inodes: set[int], proc: bool
) -> None:
    root = tmp_path / "root"
    write_wav(root / "sub" / "in.wav", synth_voice(seed=1, seconds=1.0))
    secret = write_wav(tmp_path / "elsewhere" / "in.wav", synth_voice(seed=2, seconds=1.0))  # same name, outside

    def swap() -> None:  # O_NOFOLLOW guards the last component only: open() follows this one
        (root / "sub").rename(root / "was-sub")
        os.symlink(secret.parent, root / "sub")

    swap_after_check(monkeypatch, swap)
    if not proc:
        hide_proc_fd(monkeypatch)
    got = answers(champion, [{"path": "sub/in.wav"}], audio_root=root)
    assert got.loc[0, "error"] == "forbidden: path 'sub/in.wav' is outside the server's audio root" and pd.isna(
        got.loc[0, "speaker"]
    )
    assert secret.stat().st_ino in opened_inodes  # the race was really run: the open reached the outside file...
    assert opened == []  # ...and the check on the open file refused it before a byte was decoded


def test_a_fifo_under_the_root_is_refused_without_hanging(champion: Champion, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    got: list[pd.DataFrame] = []
    worker = threading.Thread(
        target=lambda: got.append(answers(champion, [{"path": "pipe.wav"}], audio_root=tmp_path)), daemon=True
    )
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # blocked opening the FIFO: give it a writer so the thread can finish
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=30)
        pytest.fail("opening a FIFO under the root blocked the request")
    assert got[0].loc[0, "error"] == "unreadable: expected an existing file, found no such file"  # as load_audio words it


def test_base64_and_waveform_give_the_same_answer_as_the_path(champion: Champion, tmp_path: Path, opened: list[str]) -> None:
    rows: list[dict[str, Any]] = []
    for name, sr, seed in (("a.wav", 16000, 3), ("b.flac", 16000, 8), ("c.wav", 8000, 5)):  # c: resampled like a file
        path = write_wav(tmp_path / name, synth_voice(seed=seed, seconds=1.2, sr=sr), sr=sr)
        samples, rate = sf.read(path, dtype="float32")
        rows += [{"path": name}, {"audio_b64": b64(path)}, {"waveform": samples.tolist(), "sample_rate": rate}]
    got = answers(champion, rows, audio_root=tmp_path)
    assert (got["error"] == "").all(), got["error"].tolist()
    for k in range(0, len(rows), 3):
        trio = got.iloc[k : k + 3]
        assert trio["speaker"].nunique() == 1 and trio["score"].nunique() == 1, trio  # bit-identical scores
    assert len(opened) == 6 and sum("voiceid-row-" in p for p in opened) == 3  # b64 rows: load_audio on a private temporary
    assert not list(Path(os.path.dirname(opened[1])).glob("voiceid-row-*"))  # removed afterwards


def test_a_bad_row_leaves_the_good_rows_intact(champion: Champion, tmp_path: Path) -> None:
    good = [{"waveform": synth_voice(seed=s, seconds=1.0).tolist(), "sample_rate": 16000} for s in (1, 4, 7)]
    alone = answers(champion, good)
    bad = [
        {"waveform": [float("nan")] * 16000, "sample_rate": 16000},
        {"audio_b64": base64.b64encode(b"not audio at all").decode()},
        {"waveform": np.zeros((2, 8000)).tolist(), "sample_rate": 16000},
        {"path": "/etc/passwd"},
    ]
    mixed = answers(champion, [bad[0], good[0], bad[1], bad[2], good[1], bad[3], good[2]], audio_root=tmp_path)
    pd.testing.assert_frame_equal(mixed.iloc[[1, 4, 6]].reset_index(drop=True), alone)
    assert (mixed.iloc[[0, 2, 3, 5]]["error"] != "").all() and mixed.iloc[[0, 2, 3, 5]]["speaker"].isna().all()


def test_served_rows_are_validated_like_the_cli(champion: Champion, tmp_path: Path) -> None:
    voice = synth_voice(seed=3, seconds=1.0)
    silent_file = write_wav(tmp_path / "silent.wav", np.zeros(16000, np.float32))
    text_file = tmp_path / "text.wav"
    text_file.write_text("not audio")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"waveform": np.zeros(16000).tolist(), "sample_rate": 16000}, "silent: "),
        ({"waveform": voice[:1600].tolist(), "sample_rate": 16000}, "too_short: expected >= 0.25 s, found 0.100 s"),
        ({"waveform": [*voice[:8000].tolist(), float("nan")], "sample_rate": 16000}, "invalid_samples: "),
        ({"waveform": [*voice[:8000].tolist(), float("inf")], "sample_rate": 16000}, "invalid_samples: "),
        ({"waveform": [1e300] * 8000, "sample_rate": 16000}, "invalid_samples: "),  # inf once float32
        ({"waveform": [], "sample_rate": 16000}, "empty: "),
        ({"waveform": np.zeros((2, 8000)).tolist(), "sample_rate": 16000}, "wrong_shape: waveform must be a flat list"),
        ({"waveform": [[0.1, 0.2], [0.3]], "sample_rate": 16000}, "wrong_shape: "),
        ({"waveform": ["a", "b"], "sample_rate": 16000}, "wrong_shape: "),
        ({"waveform": 0.5, "sample_rate": 16000}, "wrong_shape: "),
        ({"waveform": voice.tolist()}, "bad_row: a 'waveform' needs a 'sample_rate'"),
        ({"waveform": voice.tolist(), "sample_rate": 16000.5}, "bad_row: sample_rate must be an integer"),
        ({"waveform": voice.tolist(), "sample_rate": 0}, "bad_row: sample_rate must be an integer"),
        ({"waveform": voice.tolist(), "sample_rate": "fast"}, "bad_row: sample_rate must be a number"),
        ({"audio_b64": b64(text_file)}, "unreadable: expected a decodable audio file"),
        ({"audio_b64": b64(silent_file)}, "silent: "),
        ({"audio_b64": "@@not base64@@"}, "bad_row: audio_b64 is not valid base64"),
        ({"path": "silent.wav"}, "silent: "),  # path rows are validated too
        ({"path": "text.wav"}, "unreadable: "),
        ({"path": "silent.wav", "audio_b64": b64(silent_file)}, "bad_row: expected exactly one of"),
        ({"sample_rate": 16000}, "bad_row: expected exactly one of"),
    ]
    got = answers(champion, [row for row, _ in cases], audio_root=tmp_path)
    for (row, expected), error in zip(cases, got["error"]):
        assert error.startswith(expected), (sorted(row), error)
        assert str(tmp_path) not in error and "voiceid-row-" not in error  # no server-side path in an answer
    assert got["speaker"].isna().all()
    long_ = answers(champion, [{"waveform": voice.tolist() * 3, "sample_rate": 16000}], rules=RowRules(max_duration=2.0))
    assert long_.loc[0, "error"] == "too_long: expected <= 2 s, found 3.0 s"


def test_the_pyfunc_takes_its_settings_from_the_server_environment(
    champion: Champion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    from voiceid.tracking.pyfunc import ARTIFACT_KEY, ChampionModel

    context = SimpleNamespace(artifacts={ARTIFACT_KEY: str(save_champion(champion, tmp_path / "champion.pkl"))})
    root, store_dir = tmp_path / "audio", tmp_path / "store"
    probe = write_wav(root / "probe.wav", synth_voice(seed=40, seconds=1.3, f0=300.0))

    def served(**env: str) -> ChampionModel:
        for key in (request.AUDIO_ROOT_ENV, request.STORE_ENV):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        model = ChampionModel()
        model.load_context(context)
        return model

    frame = pd.DataFrame({"path": ["probe.wav"]})
    assert served().predict(None, frame).loc[0, "error"].startswith("forbidden: server-side files are off")
    with pytest.raises(ValueError, match="not a directory"):
        served(VOICEID_AUDIO_ROOT=str(probe))

    model = served(VOICEID_AUDIO_ROOT=str(root), VOICEID_STORE=str(store_dir))
    assert model.predict(None, frame).loc[0, "speaker"] == "unknown"  # no store yet
    emb = np.stack([champion.embed(synth_voice(seed=40, seconds=s, f0=300.0), 16000) for s in (1.0, 1.1, 1.2)])
    files = [{"path": f"n{i}.wav", "content_hash": f"h{i}", "duration": 1.0} for i in range(3)]
    assert champion.embedding is not None
    EnrollmentStore(store_dir).add("newcomer", emb, files, champion.embedding.embedder_id)
    assert model.predict(None, frame).loc[0, "speaker"] == "newcomer"  # the served store is re-read when it changes
    EnrollmentStore(store_dir).remove("newcomer")
    assert model.predict(None, frame).loc[0, "speaker"] == "unknown"

    EnrollmentStore(root / "g").add("late", emb, files, champion.embedding.embedder_id)
    assert model.predict(None, frame, params={"gallery": "g"}).loc[0, "speaker"] == "late"  # a store under the root
    assert model.predict(None, frame, params={"gallery": "g/store.npz"}).loc[0, "speaker"] == "late"
    for hostile in ("../store/store.npz", str(store_dir / "store.npz"), "/etc/passwd"):
        with pytest.raises(MlflowException, match="forbidden: gallery .* outside the server's audio root") as exc:
            model.predict(None, frame, params={"gallery": hostile})
        assert exc.value.get_http_status_code() == 400
    with pytest.raises(MlflowException, match=r"server-side files are off on this server \(gallery 'g'\): start the server"):
        served().predict(None, frame, params={"gallery": "g"})
