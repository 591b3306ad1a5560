"""Stage ``adapt``: the pretrained d-vector encoder fine-tuned on the training speakers (feature set ``dvector_ft``).

Units use seeded synthetic frames; the behaviour that matters (held-out speakers separate
better after fine-tuning on other speakers of the same corpus) is checked on the real
``../shared/data/az_digits`` digits, which the pretrained encoder never saw.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import synth_voice, write_wav
from pipeline_run import PipelineRun

from voiceid.adapt import run as adapt_run
from voiceid.adapt.finetune import FineTuned, crops, fine_tune, load_encoder
from voiceid.adapt.params import AdaptParams
from voiceid.data.audio import content_hash, load_audio
from voiceid.features import dvector as dv
from voiceid.features.params import DvectorParams, FeatureParams
from voiceid.features.tables import META_COLUMNS, read_feature_table
from voiceid.scoring.cosine import l2_normalize
from voiceid.scoring.verification import eer
from voiceid.select.candidates import FeatureBank

TINY = AdaptParams(steps=3, batch_size=4, crop_frames=20, threads=1)


def synthetic_frames(n_speakers: int = 3, per_speaker: int = 4, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    rng = np.random.default_rng(seed)
    frames, labels = [], []
    for s in range(n_speakers):
        centre = rng.gamma(2.0, 0.01, size=40)
        for _ in range(per_speaker):
            n = int(rng.integers(12, 40))  # some shorter than the crop: repeated to fill it
            frames.append((centre * rng.gamma(4.0, 0.25, size=(n, 40))).astype(np.float32))
            labels.append(f"s{s}")
    return frames, labels


def weights(state: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(state), weights_only=True)


def test_crops_repeat_short_clips_instead_of_padding_with_silence() -> None:
    rng = np.random.default_rng(0)
    f = [np.ones((7, 40), np.float32), np.arange(200 * 40, dtype=np.float32).reshape(200, 40)]
    out = crops(f, np.array([0, 1, 1]), 30, rng)
    assert out.shape == (3, 30, 40)
    assert (out[0] == 1).all()  # never a zero frame: the encoder embeds its last LSTM state
    starts = {int(out[k, 0, 0]) // 40 for k in (1, 2)}
    assert all(0 <= s <= 170 for s in starts)
    assert (np.diff(out[1, :, 0]) == 40).all()  # a contiguous window of the long clip


def test_fine_tuning_is_seeded_moves_the_weights_and_leaves_the_pretrained_encoder_alone() -> None:
    frames, labels = synthetic_frames()
    pretrained = {k: v.clone() for k, v in dv.encoder().state_dict().items()}
    a, b = fine_tune(frames, labels, TINY), fine_tune(frames, labels, TINY)
    other = fine_tune(frames, labels, AdaptParams(**{**TINY.__dict__, "seed": 7}))
    wa, wb, wo = weights(a.state), weights(b.state), weights(other.state)
    assert wa.keys() == pretrained.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "same data and seed must give the same weights"
    assert any(not torch.equal(wa[k], wo[k]) for k in wa), "another seed must give other weights"
    assert any(not torch.equal(wa[k], pretrained[k]) for k in wa), "fine-tuning did not change the encoder"
    assert all(torch.equal(v, dv.encoder().state_dict()[k]) for k, v in pretrained.items()), "the shared encoder changed"
    assert len(a.losses) == TINY.steps and a.n_speakers == 3 and a.n_clips == len(frames)


def test_zero_steps_keep_the_pretrained_weights() -> None:
    frames, labels = synthetic_frames()
    tuned = fine_tune(frames, labels, AdaptParams(steps=0, threads=1))
    assert all(torch.equal(v, dv.encoder().state_dict()[k]) for k, v in weights(tuned.state).items())


def test_fine_tuning_needs_two_speakers() -> None:
    frames, labels = synthetic_frames(n_speakers=1)
    with pytest.raises(ValueError, match=">= 2 speakers"):
        fine_tune(frames, labels, TINY)


def _manifest(tmp_path: Path) -> pd.DataFrame:
    """Every role and split, one synthetic clip each (seeded voices)."""
    plan = [("a", "enrolled", "train"), ("a", "enrolled", "train"), ("a", "enrolled", "val"), ("a", "enrolled", "test"),
            ("b", "enrolled", "train"), ("b", "enrolled", "train"), ("b", "enrolled", "test"),
            ("g", "background", "train"), ("g", "background", "train"), ("h", "background", "train"),
            ("u", "unknown", "val"), ("u", "unknown", "val"), ("v", "unknown", "test"), ("v", "unknown", "test")]
    rows = []
    for k, (spk, role, split) in enumerate(plan):
        path = write_wav(tmp_path / spk / f"{k:02d}.wav", synth_voice(seed=k, seconds=1.0, f0=100.0 + 20 * ord(spk)))
        wave = load_audio(path).wave
        rows.append(dict(utt_id=f"u{k:02d}", speaker=spk, role=role, split=split, content_hash=content_hash(wave),
                         path=str(path)))
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("speakers", "expected"), [("both", {"a", "b", "g"}), ("enrolled", {"a", "b"}), ("background", {"g"})])
def test_only_train_clips_of_the_training_speakers_reach_fine_tuning(
    speakers: str, expected: set[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _manifest(tmp_path)
    decoded_for_training: list[str] = []
    seen: dict[str, list[str]] = {}
    real_input = adapt_run._encoder_input

    def spy_input(path: str, *args: object) -> np.ndarray:
        decoded_for_training.append(path)
        return real_input(path, *args)  # type: ignore[arg-type]

    def spy_fine_tune(frames: list[np.ndarray], labels: list[str], params: AdaptParams) -> FineTuned:
        seen["labels"] = list(labels)
        return fine_tune(frames, labels, AdaptParams(steps=0, threads=1))

    monkeypatch.setattr(adapt_run, "_encoder_input", spy_input)
    monkeypatch.setattr(adapt_run, "fine_tune", spy_fine_tune)
    params = AdaptParams(speakers=speakers, min_utts_per_speaker=2, threads=1)  # type: ignore[arg-type]
    if speakers == "background":  # one speaker with two train clips: nothing to tell apart
        with pytest.raises(ValueError, match="fewer than 2 speakers"):
            adapt_run.adapt(manifest[list(META_COLUMNS)], manifest["path"].tolist(), params, DvectorParams(), 16000)
        return
    out = adapt_run.adapt(manifest[list(META_COLUMNS)], manifest["path"].tolist(), params, DvectorParams(), 16000)
    train = manifest.iloc[out.train_rows]
    assert set(train["speaker"]) == expected
    assert (train["split"] == "train").all() and not train["role"].isin(["unknown"]).any()
    assert sorted(decoded_for_training) == sorted(train["path"]), "a val, test or unknown clip was read for training"
    assert sorted(seen["labels"]) == sorted(train["speaker"])
    assert out.X.shape == (len(manifest), dv.DVECTOR_DIM)  # but every clip is embedded
    assert np.allclose(np.linalg.norm(out.X, axis=1), 1.0, atol=1e-5)


def test_val_and_test_audio_do_not_change_the_adapted_weights(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    params = AdaptParams(steps=2, batch_size=4, crop_frames=20, threads=1)
    first = adapt_run.adapt(manifest[list(META_COLUMNS)], manifest["path"].tolist(), params, DvectorParams(), 16000)
    for path in manifest.loc[manifest["split"] != "train", "path"]:  # other voices in every val/test clip
        write_wav(Path(path), synth_voice(seed=999, seconds=1.3, f0=260.0))
    second = adapt_run.adapt(manifest[list(META_COLUMNS)], manifest["path"].tolist(), params, DvectorParams(), 16000)
    assert first.tuned.state == second.tuned.state
    held = (manifest["split"] != "train").to_numpy()
    assert np.allclose(first.X[~held], second.X[~held]) and not np.allclose(first.X[held], second.X[held])


def test_held_out_speakers_separate_better_after_fine_tuning_on_other_speakers(shared_data: Path) -> None:
    """30 az_digits speakers train it; 10 others (never seen) are scored: same- vs different-speaker cosine EER."""
    root = shared_data / "az_digits"
    speakers = sorted(p.name for p in root.iterdir() if p.is_dir())
    order = [speakers[i] for i in np.random.default_rng(0).permutation(len(speakers))]
    train_spk, test_spk = order[:30], order[30:40]
    params = DvectorParams()

    def frames_of(spk: str, n: int | None = None) -> list[np.ndarray]:
        files = sorted((root / spk).glob("*.wav"))[:n]
        return [dv.mel_frames(dv.encoder_input(load_audio(f).wave, 16000, params)) for f in files]

    train = {s: frames_of(s, 10) for s in train_spk}
    frames = [f for s in train_spk for f in train[s]]
    labels = [s for s in train_spk for _ in train[s]]
    tuned = fine_tune(frames, labels, AdaptParams(steps=60, batch_size=32, threads=2))
    adapted = load_encoder(tuned.state)

    test_files = [(s, f) for s in test_spk for f in sorted((root / s).glob("*.wav"))[:10]]
    waves = [load_audio(f).wave for _, f in test_files]
    spk = np.array([s for s, _ in test_files])
    iu = np.triu_indices(len(spk), 1)
    same = (spk[:, None] == spk[None, :])[iu].astype(int)

    def pair_eer(model: object) -> float:
        E = l2_normalize(np.stack([dv.dvector(w, 16000, params, model=model) for w in waves]))
        return float(eer((E @ E.T)[iu], same)[0])

    before, after = pair_eer(dv.encoder()), pair_eer(adapted)
    print(f"held-out az_digits speakers, pair EER: pretrained {before:.3f} -> adapted {after:.3f}")
    assert after < before - 0.03, f"fine-tuning did not help held-out speakers: EER {before:.3f} -> {after:.3f}"


def test_the_stage_writes_the_table_the_champion_front_end_reproduces(pipeline_run: PipelineRun) -> None:
    from voiceid.config import load_section
    from voiceid.serve.frontend import FrontEnd

    root = pipeline_run.root
    meta, X = read_feature_table(root / "data" / "features" / "dvector_ft.parquet")
    ref_meta, _ = read_feature_table(root / "data" / "features" / "mfcc60.parquet")
    assert meta["utt_id"].tolist() == ref_meta["utt_id"].tolist()  # the clips the features stage kept, in order
    report = json.loads((root / "metrics" / "adapt.json").read_text())
    assert report["steps"] == 4 and report["train_speakers"] >= 2 and 0 <= report["val_pair_eer_adapted"] <= 1
    bank = FeatureBank.from_dir(root / "data" / "features", ["dvector_ft+mfcc60"])
    assert bank.adapted == (root / "data" / "features" / "dvector_ft.pt").read_bytes()
    fparams = load_section(FeatureParams, "features", root / "params.yaml")
    manifest = pd.read_parquet(root / "data" / "prepared" / "manifest.parquet").set_index("utt_id")
    front = bank.front_end("dvector_ft", fparams)
    for i in (0, len(meta) - 1):
        clip = load_audio(manifest.loc[meta.at[i, "utt_id"], "path"], 16000)
        assert np.allclose(front(clip.wave, clip.sample_rate), X[i], atol=1e-5)
    pretrained = FrontEnd("dvector", fparams)
    assert not np.allclose(pretrained(clip.wave, clip.sample_rate), X[i], atol=1e-3)  # it is the adapted encoder
    with pytest.raises(ValueError, match="adapted encoder"):
        FrontEnd("dvector_ft", fparams)(clip.wave, clip.sample_rate)


def test_the_stage_logs_its_report_and_loss_curve_to_mlflow(pipeline_run: PipelineRun) -> None:
    """One run per fine-tuning, in the dvector_ft experiment: params, the metrics file's numbers, a loss per step."""
    import mlflow

    client = mlflow.MlflowClient(pipeline_run.uri)
    exp = client.get_experiment_by_name(pipeline_run.experiment("dvector_ft"))
    assert exp is not None and exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    (run,) = client.search_runs([exp.experiment_id], "tags.stage = 'adapt'")
    report = json.loads((pipeline_run.root / "metrics" / "adapt.json").read_text())
    assert run.data.params["steps"] == "4" and run.data.params["speakers"] == "both"
    assert run.data.metrics["val_pair_eer_adapted"] == pytest.approx(report["val_pair_eer_adapted"])
    assert run.data.tags["feature_set"] == "dvector_ft" and run.data.tags["data_hash"]
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [0, 1, 2, 3]
    assert history[0].value == pytest.approx(report["loss_first"], abs=1e-4)
    # the grid's families also train on dvector_ft (grid.feature_sets) and log there; the adapt run is never a final run,
    # so selection never takes it for a model
    finals = client.search_runs([exp.experiment_id], "tags.stage = 'final'")
    assert run.info.run_id not in {r.info.run_id for r in finals}
    assert {r.data.tags["family"] for r in finals} == set(pipeline_run.grid_families)
