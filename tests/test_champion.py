"""The champion: audio in, decisions equal to the selection's; galleries; the pyfunc model in-process."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import synth_voice, write_wav
from synthetic_select import AudioCorpus, small_champion

from voiceid.scoring import openset
from voiceid.scoring.centroids import Centroids, speaker_centroids
from voiceid.select.params import SelectParams
from voiceid.select.protocol import SelectionResult
from voiceid.serve.champion import Champion, EmbeddingScorer
from voiceid.serve.gallery import load_gallery, save_gallery

Built = tuple[AudioCorpus, SelectionResult, Champion]

PARAMS = SelectParams(families=("logreg", "cosine"), n_bootstrap=20, threshold_rule="eer", champion_metric="eer")


@pytest.fixture(scope="module")
def built() -> Built:
    return small_champion()  # type: ignore[return-value]


def test_identify_reproduces_the_selection_decisions(built: Built) -> None:
    corpus, result, champion = built
    test_rows = np.flatnonzero((corpus.meta["split"] == "test").to_numpy())
    known = corpus.meta.loc[test_rows, "role"].eq("enrolled").to_numpy()
    order = np.r_[test_rows[known], test_rows[~known]]  # the bank lists enrolled probes first
    probes = result.test[champion.family]
    expected = openset.decide(probes, champion.threshold)
    for i, row in enumerate(order):
        d = champion.identify(corpus.waves[row], 16000)
        assert d.speaker == expected[i]
        assert d.score == pytest.approx(probes.score[i], abs=1e-6)
        assert d.known == (d.score >= d.threshold)
    assert champion.label_map == sorted(corpus.meta.loc[corpus.meta["role"] == "enrolled", "speaker"].unique())


def test_threshold_decides_unknown(built: Built) -> None:
    corpus, _, champion = built
    wave = corpus.waves[0]
    strict = dataclasses.replace(champion, threshold=1.01)
    assert strict.identify(wave, 16000) == ("unknown", pytest.approx(champion.identify(wave, 16000).score), 1.01, False)
    lax = dataclasses.replace(champion, threshold=0.0)
    assert lax.identify(wave, 16000)[::3] == (corpus.meta.loc[0, "speaker"], True)  # a training clip of e00


def test_predict_frame_paths_waveforms_and_a_bad_row(built: Built, tmp_path: Path) -> None:
    corpus, _, champion = built
    paths = [write_wav(tmp_path / f"{i}.wav", corpus.waves[i]) for i in (0, 20)]
    by_path = champion.predict_frame(pd.DataFrame({"path": [str(p) for p in paths]}), audio_root=tmp_path)
    by_wave = champion.predict_frame(pd.DataFrame({"waveform": [corpus.waves[0].tolist(), corpus.waves[20].tolist()],
                                                   "sample_rate": [16000, 16000]}))
    assert list(by_path.columns) == ["speaker", "score", "threshold", "known", "error"]
    assert by_path["speaker"].tolist() == by_wave["speaker"].tolist()
    assert np.allclose(by_path["score"], by_wave["score"], atol=1e-4)  # 16-bit wav rounding
    mixed = champion.predict_frame(pd.DataFrame({"path": [str(paths[0]), "missing.wav"]}), audio_root=tmp_path)
    assert mixed.loc[0, "error"] == "" and mixed.loc[0, "speaker"] == by_path.loc[0, "speaker"]
    assert mixed.loc[1, "error"] == "unreadable: expected an existing file, found no such file" and pd.isna(mixed.loc[1, "speaker"])
    off = champion.predict_frame(pd.DataFrame({"path": [str(paths[0])]}))  # server-side paths are off by default
    assert off.loc[0, "error"].startswith("forbidden: server-side files are off")
    with pytest.raises(ValueError, match="'path', 'waveform'"):
        champion.predict_frame(pd.DataFrame({"audio": [1]}))


def test_gallery_enrolls_a_new_speaker_without_retraining(built: Built, tmp_path: Path) -> None:
    _, _, champion = built
    new = [synth_voice(seed=40, seconds=s) for s in (0.9, 1.0, 1.1, 1.2)]
    emb = np.stack([champion.embed(w, 16000) for w in new[:3]])
    gallery_path = save_gallery(tmp_path / "g.npz", speaker_centroids(emb, ["newbie"] * 3), champion.embedding.embedder_id)
    gallery = load_gallery(gallery_path, champion.embedding.embedder_id)
    with_gallery = champion.identify(new[3], 16000, gallery=gallery)
    thresholds = champion.embedding.threshold_for(gallery, champion.embedding_threshold)
    assert with_gallery == ("newbie", with_gallery.score, thresholds["newbie"], True)  # the top speaker's threshold
    assert champion.identify(new[3], 16000).speaker != "newbie"
    framed = champion.predict_frame(pd.DataFrame({"waveform": [new[3].tolist()], "sample_rate": [16000]}), gallery_path)
    assert framed.loc[0, "speaker"] == "newbie"
    with pytest.raises(ValueError, match="made by embedder"):
        load_gallery(gallery_path, "ecapa:other-run")
    with pytest.raises(ValueError, match="dims"):
        champion.identify(new[3], 16000, gallery=Centroids(["x"], np.ones((1, 3))))


def _like_own(scorer: EmbeddingScorer, n: int, seed: int = 0) -> Centroids | None:
    """``n`` speakers enrolled later, voices near the own speakers' (each a perturbed own centroid)."""
    if n == 0:
        return None
    own = scorer.centroids.vectors
    rng = np.random.default_rng(seed)
    return Centroids([f"later{i}" for i in range(n)], own[np.arange(n) % len(own)] + 0.5 * rng.normal(size=(n, own.shape[1])))


def test_the_threshold_rises_with_the_gallery_from_the_val_threshold(built: Built) -> None:
    """At the model's own speakers it is the val threshold; each speaker enrolled later raises it (strangers' extra chances)."""
    _, _, champion = built
    scorer, base = champion.embedding, champion.embedding_threshold
    assert scorer.strangers is not None and len(scorer.strangers.mean) > 0  # fitted on the val strangers
    assert scorer.stranger_emb is not None and len(scorer.stranger_emb) == len(scorer.strangers.mean)
    own = scorer.speakers[0]
    rising = [scorer.threshold_for(_like_own(scorer, n), base)[own] for n in (0, 1, 10, 100)]
    assert rising[0] == base and all(a < b for a, b in zip(rising, rising[1:])), rising
    scorer.strangers, kept = None, scorer.strangers  # a champion pickled before the rule: the val threshold
    try:
        assert set(scorer.threshold_for(_like_own(scorer, 100), base).values()) == {base}
    finally:
        scorer.strangers = kept


def test_a_gallery_speaker_the_strangers_score_high_against_gets_a_higher_threshold_of_its_own(built: Built) -> None:
    """The strangers' level against each gallery speaker is measured: a speaker near them costs its own threshold.

    Red when ``threshold_for`` assumes every gallery speaker is like the own ones (no offsets).
    """
    _, _, champion = built
    scorer, base = champion.embedding, champion.embedding_threshold
    assert scorer.stranger_emb is not None
    centre = scorer.stranger_emb.mean(axis=0, keepdims=True)
    both = Centroids(["near", "far"], np.vstack([centre, -centre]))  # where the val strangers are, and opposite
    t = scorer.threshold_for(both, base)
    own = [t[s] for s in scorer.speakers]
    assert t["near"] > max(own) and t["near"] > t["far"] and len(set(own)) == 1  # the own speakers share one
    assert scorer.threshold_for(both, base) == t and scorer.threshold_for(_like_own(scorer, 3), base) != t  # cached per gallery
    assert "_thresholds" not in pickle.loads(pickle.dumps(scorer)).__dict__  # the cache is not pickled with the model
    scorer.stranger_emb, kept = None, scorer.stranger_emb  # pickled before it: gallery speakers like the own ones
    try:
        assert len(set(scorer.threshold_for(both, base).values())) == 1
    finally:
        scorer.stranger_emb = kept


def _register(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> dict[str, str]:
    """Register the built champion as ``name`` in a fresh store under ``tmp_path`` (also the working directory)."""
    from voiceid import tracking
    from voiceid.select.register import register_champion
    from voiceid.select.report import summary

    _, result, champion = built
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.configure(uri)
    params = dataclasses.replace(PARAMS, registered_model=name)
    return register_champion(champion, params, summary(result, params, {}), {"data_hash": "H"})


def test_pyfunc_from_the_registry_predicts_in_process(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from voiceid import tracking

    corpus, _, champion = built
    monkeypatch.setenv("VOICEID_AUDIO_ROOT", str(tmp_path))  # read by the model's load_context
    info = _register(built, tmp_path, monkeypatch, "vid-champ")
    assert tracking.aliased_version("vid-champ", "champion")["version"] == info["version"]

    model = tracking.load_pyfunc("models:/vid-champ@champion")
    frame = pd.DataFrame({"waveform": [corpus.waves[i].tolist() for i in (1, 30, 50)], "sample_rate": [16000] * 3})
    got = model.predict(frame)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), champion.predict_frame(frame))
    wav = write_wav(tmp_path / "probe.wav", corpus.waves[30])
    by_path = model.predict(pd.DataFrame({"path": [str(wav)]}))
    assert by_path.loc[0, "speaker"] == got.loc[1, "speaker"] and by_path.loc[0, "error"] == ""
    loaded = model.unwrap_python_model().champion
    assert loaded.family == champion.family and loaded.threshold == champion.threshold
    new = [synth_voice(seed=41, seconds=s) for s in (1.0, 1.1)]
    g = save_gallery(tmp_path / "g.npz", speaker_centroids(loaded.embed(new[0], 16000)[None, :], ["late"]), loaded.embedding.embedder_id)
    out = model.predict(pd.DataFrame({"waveform": [new[1].tolist()], "sample_rate": [16000]}), params={"gallery": str(g)})
    assert out.loc[0, "speaker"] == "late"


def test_the_registered_pyfunc_is_models_from_code_and_loads_where_mlflow_refuses_pickles(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc
    from mlflow.models import Model

    corpus, _, champion = built
    info = _register(built, tmp_path, monkeypatch, "vid-code")
    flavor = Model.load(info["model_uri"]).flavors["python_function"]
    assert flavor.get("model_code_path", "").endswith("champion_model.py") and "python_model" not in flavor
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # MLflow's own unpickling is off
    model = mlflow.pyfunc.load_model("models:/vid-code@champion")
    frame = pd.DataFrame({"waveform": [corpus.waves[i].tolist() for i in (1, 30)], "sample_rate": [16000] * 2})
    pd.testing.assert_frame_equal(model.predict(frame).reset_index(drop=True), champion.predict_frame(frame))
