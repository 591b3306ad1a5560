"""``voiceid identify`` / ``voiceid enroll`` end to end against a champion registered in a temp MLflow store."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import synth_voice, write_wav
from synthetic_select import audio_corpus, fit_logreg

from voiceid.select.candidates import Source
from voiceid.select.params import SelectParams
from voiceid.select.protocol import make_champion, select
from voiceid.serve.champion import Champion
from voiceid.serve.cli import main
from voiceid.serve.persist import save_champion
from voiceid.serve.store import EnrollmentStore

PARAMS = SelectParams(families=("logreg", "cosine"), n_bootstrap=20, threshold_rule="eer", champion_metric="eer",
                      registered_model="voiceid")


@dataclasses.dataclass
class World:
    root: Path
    champion: Champion
    pkl: Path
    enroll: list[str]  # three recordings of a speaker the model never saw
    probe: str  # a fourth recording of that speaker
    stranger: str  # a voice never enrolled anywhere
    own: str  # a training clip of the model's own speaker e00


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A champion built from synthetic voices, registered as models:/voiceid@champion in a temp store."""
    from voiceid import tracking
    from voiceid.select.register import register_champion
    from voiceid.select.report import summary

    root = tmp_path_factory.mktemp("cli")
    corpus = audio_corpus()
    sources = [
        (Source("logreg", "classifier", "mfcc60", "run-1", None, "val_f1_weighted", 1.0), fit_logreg(corpus.bank)),
        (Source("cosine", "embedding", "mfcc60"), None),
    ]
    result = select(sources, corpus.bank, PARAMS, corpus.params)
    champion = make_champion(result, PARAMS, corpus.params)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow artifacts and the default data/enrollment land in the temp dir
        uri = f"sqlite:///{root / 'mlflow.db'}"
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        tracking.configure(uri)
        register_champion(champion, PARAMS, summary(result, PARAMS, {}), {"data_hash": "H"})
        # f0 300 Hz lies outside the corpus' 90-240 Hz voices: unknown until enrolled.
        newcomer = [str(write_wav(root / "audio" / "newcomer" / f"{i}.wav", synth_voice(seed=40, seconds=1.0 + 0.1 * i, f0=300.0)))
                    for i in range(4)]
        yield World(
            root, champion, save_champion(champion, root / "champion.pkl"), newcomer[:3], newcomer[3],
            str(write_wav(root / "audio" / "stranger.wav", synth_voice(seed=50, seconds=1.2, f0=60.0))),
            str(write_wav(root / "audio" / "own.wav", corpus.waves[0])),
        )


def _json(capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    out = capsys.readouterr()
    return json.loads(out.out), out.err


def test_enroll_identify_remove_identify(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["enroll", "--speaker", "newcomer", *world.enroll]) == 0  # default model and store
    assert "enrolled 'newcomer' with 3 recording(s) into data/enrollment" in capsys.readouterr().out
    assert (world.root / "data" / "enrollment" / "store.npz").is_file()
    assert main(["enroll", "--list", "--json"]) == 0
    listed, _ = _json(capsys)
    assert [s["name"] for s in listed["speakers"]] == ["newcomer"] and listed["model"]["version"] == "1"

    assert main(["identify", "--json", world.probe, world.stranger, world.own]) == 0
    doc, err = _json(capsys)
    got = {Path(r["path"]).stem: r for r in doc["results"]}
    assert got["3"]["speaker"] == "newcomer" and got["3"]["known"] and got["3"]["score"] >= got["3"]["threshold"]
    # one speaker more than the model's own: the threshold rises from the val one to hold stranger acceptance
    scorer, base = world.champion.embedding, world.champion.embedding_threshold
    gallery = EnrollmentStore(world.root / "data" / "enrollment").gallery(scorer.embedder_id)
    assert got["3"]["threshold"] == pytest.approx(scorer.threshold_for(gallery, base)["newcomer"], abs=1e-6)
    assert got["3"]["threshold"] >= base - 1e-6 and got["own"]["threshold"] > base + 1e-6, (got, base)  # the own ones rise
    assert got["stranger"]["speaker"] == "unknown" and got["stranger"]["score"] < got["stranger"]["threshold"]
    assert got["own"]["speaker"] == "e00"  # the model's own speakers stay identifiable with the store
    assert doc["model"]["uri"] == "models:/voiceid@champion" and doc["store"]["speakers"] == ["newcomer"]
    assert "identify" not in err  # no progress bar with --json

    assert main(["enroll", "--remove", "newcomer"]) == 0
    assert "removed 'newcomer'" in capsys.readouterr().out
    assert main(["identify", "--json", world.probe]) == 0
    doc, _ = _json(capsys)
    assert doc["results"][0]["speaker"] == "unknown" and doc["store"]["speakers"] == []


def test_text_output_and_progress_bar(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store")
    assert main(["identify", "--model", str(world.pkl), "--store", store, world.own, world.stranger]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].split() == ["file", "speaker", "score", "threshold"]
    own, stranger = (line.split() for line in lines[1:])
    assert own[:2] == [world.own, "e00"] and float(own[2]) >= float(own[3])
    assert stranger[:2] == [world.stranger, "unknown"] and float(stranger[3]) == pytest.approx(world.champion.threshold, abs=1e-4)
    assert "2/2" in out.err  # tqdm on stderr for more than one file


def test_unreadable_audio_is_named_and_the_rest_answered(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    silent = write_wav(tmp_path / "silent.wav", np.zeros(16000, np.float32))
    missing = tmp_path / "missing.wav"
    argv = ["identify", "--json", "--model", str(world.pkl), "--store", str(tmp_path / "s"), str(text), world.own,
            str(missing), str(silent)]
    assert main(argv) == 1
    doc, err = _json(capsys)
    assert f"voiceid: {text}: unreadable: expected a decodable audio file" in err
    assert f"voiceid: {missing}: unreadable: expected an existing file, found no such file" in err
    assert f"voiceid: {silent}: silent" in err
    rows = {Path(r["path"]).name: r for r in doc["results"]}
    assert rows["own.wav"]["speaker"] == "e00" and rows["own.wav"]["error"] is None
    assert rows["notes.wav"]["speaker"] is None and rows["notes.wav"]["error"].startswith("unreadable")


def test_identify_walks_folders_and_prints_errors_beside_the_bar(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import shutil

    from voiceid.serve.store import EnrollmentStore

    calls = tmp_path / "calls"
    (calls / "sub" / "deeper").mkdir(parents=True)
    (calls / ".hidden").mkdir()
    shutil.copy(world.own, calls / "a.wav")
    shutil.copy(world.stranger, calls / "sub" / "deeper" / "c.WAV")  # extensions in any case
    shutil.copy(world.own, calls / ".hidden" / "h.wav")  # hidden: skipped
    (calls / "bad.wav").write_text("not audio")
    (calls / "notes.txt").write_text("not an audio extension")
    os.symlink(calls, calls / "sub" / "loop")  # a cycle is walked once
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no audio here")
    store = str(tmp_path / "s")
    assert main(["enroll", "--model", str(world.pkl), "--store", store, "--speaker", "newcomer", *world.enroll]) == 0
    loads: list[int] = []
    real_load = EnrollmentStore.load
    monkeypatch.setattr(EnrollmentStore, "load", lambda self: loads.append(1) or real_load(self))
    capsys.readouterr()

    assert main(["identify", "--model", str(world.pkl), "--store", store, str(calls), str(empty)]) == 1
    assert len(loads) == 1  # the store is read once: the gallery used and the version reported agree
    out = capsys.readouterr()
    rows = [line.split()[0] for line in out.out.splitlines()[1:]]
    assert rows == [str(empty), str(calls / "a.wav"), str(calls / "bad.wav"), str(calls / "sub" / "deeper" / "c.WAV")]
    assert "3/3" in out.err  # the bar ran over the three files found
    errors = [f"voiceid: {calls / 'bad.wav'}: unreadable: expected a decodable audio file",
              f"voiceid: {empty}: no_audio: expected audio files (.wav, .flac"]
    lines = out.err.split("\n")
    for message in errors:  # whole lines of their own, printed after the bar's last redraw
        line = next(x for x in lines if message in x)
        assert line.startswith(message) and "\r" not in line and out.err.index(line) > out.err.rindex("3/3")

    assert main(["identify", "--model", str(world.pkl), "--store", store, str(empty)]) == 2  # nothing to identify
    assert f"voiceid: {empty}: no_audio: expected audio files" in capsys.readouterr().err
    assert main(["identify", "--json", "--model", str(world.pkl), "--store", store, str(calls / "sub" / "deeper")]) == 0
    doc, err = _json(capsys)
    assert [r["path"] for r in doc["results"]] == [str(calls / "sub" / "deeper" / "c.WAV")] and err == ""


def test_served_rows_are_checked_with_the_cli_defaults() -> None:
    from voiceid.serve.cli import build_parser
    from voiceid.serve.request import RowRules

    args = build_parser().parse_args(["identify", "x.wav"])
    assert (RowRules().min_duration, RowRules().silence_db) == (args.min_duration, args.silence_db)


def test_missing_model_refused_enrollment_and_mixed_models(world: World, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["identify", "--model", "models:/nope@champion", world.own]) == 2
    assert "voiceid: cannot load model models:/nope@champion from sqlite:///" in capsys.readouterr().err
    absent = tmp_path / "absent.db"
    assert main(["identify", "--tracking-uri", f"sqlite:///{absent}", world.own]) == 2
    assert f"no MLflow store at sqlite:///{absent}" in capsys.readouterr().err and not absent.exists()

    store = str(tmp_path / "store")
    silent = write_wav(tmp_path / "silent.wav", np.zeros(16000, np.float32))
    short = write_wav(tmp_path / "short.wav", synth_voice(seed=40, seconds=0.2, f0=300.0))
    assert main(["enroll", "--model", str(world.pkl), "--store", store, "--speaker", "x", str(silent), str(short),
                 world.enroll[0]]) == 1
    err = capsys.readouterr().err
    assert "cannot enroll 'x': 1 usable recording(s), need at least 3" in err
    assert f"{silent}: silent" in err and f"{short}: too_short" in err
    assert main(["enroll", "--store", store, "--list"]) == 0 and "no enrolled speakers" in capsys.readouterr().out
    assert main(["enroll", "--store", store, "--remove", "x"]) == 1 and "no enrolled speaker 'x'" in capsys.readouterr().err

    assert main(["enroll", "--model", str(world.pkl), "--store", store, "--speaker", "newcomer", *world.enroll]) == 0
    other = copy.deepcopy(world.champion)
    other.embedding.embedder_id = "cosine:mfcc60:retrained"
    other_pkl = save_champion(other, tmp_path / "other.pkl")
    capsys.readouterr()
    assert main(["identify", "--model", str(other_pkl), "--store", store, world.probe]) == 2
    assert "cannot be mixed" in capsys.readouterr().err
    assert main(["enroll", "--model", str(other_pkl), "--store", store, "--speaker", "y", *world.enroll]) == 1
    assert "cannot be mixed" in capsys.readouterr().err


def test_served_model_answers_the_documented_requests(world: World, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON bodies of README "Serving", through MLflow's own scoring-server parser, in process."""
    import base64

    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    from voiceid import tracking

    store = world.root / "served-store"  # under the audio root below, so params.gallery may name it
    assert main(["enroll", "--model", str(world.pkl), "--store", str(store), "--speaker", "newcomer", *world.enroll]) == 0
    tracking.configure()  # $MLFLOW_TRACKING_URI: the module's store
    monkeypatch.setenv("VOICEID_AUDIO_ROOT", str(world.root))  # the server's settings, read when the model loads
    monkeypatch.setenv("VOICEID_STORE", str(store))
    model = tracking.load_pyfunc("models:/voiceid@champion")
    schema = model.metadata.get_input_schema()

    def invoke(body: dict) -> list[dict]:
        resp = scoring_server.invocations(json.dumps(body), "application/json", model, schema)
        assert resp.status == 200, resp.response
        return json.loads(resp.response)["predictions"]

    rows = [["audio/own.wav"], [world.probe], ["nope.wav"], ["../../etc/passwd"], ["/etc/passwd"]]
    by_path = invoke({"dataframe_split": {"columns": ["path"], "data": rows}})
    assert [p["speaker"] for p in by_path[:2]] == ["e00", "newcomer"]  # relative to the root, or absolute inside it
    # A row that cannot be answered has its error (speaker missing: NaN in MLflow's JSON today); the others still answer.
    assert pd.isna(by_path[2]["speaker"]) and by_path[2]["error"] == "unreadable: expected an existing file, found no such file"
    for row in by_path[3:]:
        assert pd.isna(row["speaker"]) and row["error"].startswith("forbidden: path") and "outside" in row["error"]
    wave = synth_voice(seed=40, seconds=1.3, f0=300.0)
    encoded = base64.b64encode(Path(world.probe).read_bytes()).decode()
    by_body = invoke({"dataframe_records": [{"waveform": wave.tolist(), "sample_rate": 16000}, {"audio_b64": encoded}]})
    assert [p["speaker"] for p in by_body] == ["newcomer", "newcomer"] and by_body[0]["known"] is True
    assert by_body[1]["score"] == pytest.approx(by_path[1]["score"], abs=1e-12)  # the same bytes, the same answer
    assert set(by_body[0]) == {"speaker", "score", "threshold", "known", "error"}
    # params.gallery: a gallery or store under the audio root replaces the served store for that request.
    other = world.root / "other-store"
    assert main(["enroll", "--model", str(world.pkl), "--store", str(other), "--speaker", "late", *world.enroll]) == 0
    by_gallery = invoke({"dataframe_records": [{"audio_b64": encoded}], "params": {"gallery": "other-store/store.npz"}})
    assert by_gallery[0]["speaker"] == "late"
    bad = {"dataframe_records": [{"audio_b64": encoded}], "params": {"gallery": "/etc/passwd"}}
    with pytest.raises(MlflowException, match="outside the server's audio root") as refused:  # HTTP 400 from the server
        scoring_server.invocations(json.dumps(bad), "application/json", model, schema)
    assert refused.value.get_http_status_code() == 400
