"""Training loop: AAM-softmax, augmentation, the loss falling, resume, early stopping."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from voiceid.ecapa.augment import (
    NEPER_PER_DB,
    AugmentConfig,
    add_noise,
    augment,
    random_crop,
)
from voiceid.ecapa.model import EcapaConfig
from voiceid.ecapa.train import AAMSoftmax, TrainConfig, pick_device, train_embedder

N_MELS = 20
TINY_MODEL = EcapaConfig(n_mels=N_MELS, channels=16, scale=4, se_channels=8, attention_channels=8, embedding_dim=16)
NO_AUG = AugmentConfig(gain_db=0.0, noise_prob=0.0, time_masks=0, freq_masks=0)
TINY_TRAIN = TrainConfig(
    epochs=3, steps_per_epoch=6, batch_size=12, crop_frames=40, lr=3e-3, lr_min=1e-4, margin=0.1, scale=10.0,
    patience=5, seed=0, augment=AugmentConfig(noise_prob=0.3, time_mask_frames=5, freq_mask_bands=3),
)
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic_speakers(n_speakers: int = 4, n_utts: int = 4, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """Log-mel-like frames (log power): a spectral envelope per speaker plus frame noise, random lengths."""
    rng = np.random.default_rng(seed)
    envelopes = rng.normal(0.0, 1.5, (n_speakers, N_MELS))
    feats, labels = [], []
    for s in range(n_speakers):
        for _ in range(n_utts):
            n_frames = int(rng.integers(30, 90))
            feats.append((envelopes[s] + rng.normal(0.0, 0.7, (n_frames, N_MELS)) + rng.normal(0, 1)).astype(np.float32))
            labels.append(s)
    return feats, labels



def test_training_loss_falls_on_a_tiny_synthetic_set(tmp_path: Path) -> None:
    feats, labels = synthetic_speakers()
    result = train_embedder(feats, labels, TINY_MODEL, TINY_TRAIN, device=CPU)
    losses = [r["loss"] for r in result.history]
    assert len(losses) == TINY_TRAIN.epochs
    assert losses[-1] < 0.8 * losses[0]
    assert result.best_epoch == TINY_TRAIN.epochs and result.best_val_eer is None  # no validation: last epoch
    assert not result.model.training


def test_aam_softmax_margin_penalises_only_the_target() -> None:
    torch.manual_seed(0)
    emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    plain = AAMSoftmax(8, 3, margin=0.0, scale=5.0)
    margin = AAMSoftmax(8, 3, margin=0.3, scale=5.0)
    margin.load_state_dict(plain.state_dict())
    loss0, logits0 = plain(emb, labels)
    loss1, logits1 = margin(emb, labels)
    cos = F.normalize(emb) @ F.normalize(plain.weight).T
    torch.testing.assert_close(logits0, 5.0 * cos)  # margin 0: scaled cosine softmax
    target = F.one_hot(labels, 3).bool()
    torch.testing.assert_close(logits1[~target], logits0[~target])
    theta = torch.acos(cos[target].clamp(-1, 1))
    expected = torch.where(theta < math.pi - 0.3, 5.0 * torch.cos(theta + 0.3), 5.0 * (cos[target] - math.sin(math.pi - 0.3) * 0.3))
    torch.testing.assert_close(logits1[target], expected, atol=1e-4, rtol=1e-4)
    assert loss1 > loss0


@pytest.mark.parametrize("schedule", ["cosine", "cyclic"])
def test_killed_run_resumes_to_the_same_weights(tmp_path: Path, schedule: str) -> None:
    feats, labels = synthetic_speakers()
    config = dataclasses.replace(TINY_TRAIN, epochs=3, schedule=schedule, margin_warmup=0.5)
    straight = train_embedder(feats, labels, TINY_MODEL, config, device=CPU)

    ckpt = tmp_path / "ckpt" / "run.pt"

    def kill_after_epoch_2(record: dict[str, float]) -> None:
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_embedder(feats, labels, TINY_MODEL, config, checkpoint=ckpt, on_epoch=kill_after_epoch_2, device=CPU)
    assert sorted(f.name for f in ckpt.parent.iterdir()) == ["run.pt"]  # no temporary left beside it
    seen: list[float] = []
    resumed = train_embedder(feats, labels, TINY_MODEL, config, checkpoint=ckpt, on_epoch=lambda r: seen.append(r["epoch"]), device=CPU)
    assert resumed.resumed_at_epoch == 2
    assert seen == [1.0, 2.0, 3.0]  # restored epochs are replayed to the callback
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in straight.history], rel=1e-5)
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, atol=1e-5, rtol=1e-4)
    # A finished checkpoint returns without training; a different config starts over.
    again = train_embedder(feats, labels, TINY_MODEL, config, checkpoint=ckpt, device=CPU)
    assert again.resumed_at_epoch == 3
    other = train_embedder(feats, labels, TINY_MODEL, dataclasses.replace(config, epochs=1), checkpoint=ckpt, device=CPU)
    assert other.resumed_at_epoch == 0


class DiskFull(OSError):
    """The injected write failure."""


def _fail_torch_save_mid_write(real_save):
    """A torch.save that writes the first half of a real checkpoint, then fails."""

    def save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise DiskFull("injected: disk full half-way through the checkpoint")

    return save


def _fail_os_replace(src, dst):
    raise DiskFull("injected: rename failed")


@pytest.mark.parametrize("fault", ["torch.save", "os.replace"])
def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    """A write that dies half-way leaves the last good checkpoint byte for byte, and nothing else."""
    import voiceid.atomic

    feats, labels = synthetic_speakers(n_utts=2)
    config = dataclasses.replace(TINY_TRAIN, epochs=3, steps_per_epoch=2, augment=NO_AUG)
    ckpt = tmp_path / "ckpt" / "run.pt"
    saved_after: dict[int, bytes] = {}
    real_save = torch.save

    def break_after_epoch_1(record: dict[str, float]) -> None:
        saved_after[int(record["epoch"])] = ckpt.read_bytes()
        if record["epoch"] == 1:  # epoch 1 was written normally: every later write fails
            if fault == "torch.save":
                monkeypatch.setattr(torch, "save", _fail_torch_save_mid_write(real_save))
            else:
                monkeypatch.setattr(voiceid.atomic.os, "replace", _fail_os_replace)

    with pytest.raises(DiskFull):
        train_embedder(feats, labels, TINY_MODEL, config, checkpoint=ckpt, on_epoch=break_after_epoch_1, device=CPU)
    monkeypatch.undo()
    assert list(saved_after) == [1]  # epoch 2's write failed before its callback
    assert sorted(f.name for f in ckpt.parent.iterdir()) == ["run.pt"]  # no temporary left behind
    assert ckpt.read_bytes() == saved_after[1]  # the previous checkpoint, untouched
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1 and not state["done"]

    # ... and it is the one a rerun resumes from, ending where an uninterrupted run ends.
    resumed = train_embedder(feats, labels, TINY_MODEL, config, checkpoint=ckpt, device=CPU)
    straight = train_embedder(feats, labels, TINY_MODEL, config, device=CPU)
    assert resumed.resumed_at_epoch == 1
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in straight.history], rel=1e-5)
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, atol=1e-5, rtol=1e-4)


def test_torn_checkpoint_is_ignored(tmp_path: Path) -> None:
    feats, labels = synthetic_speakers(n_utts=2)
    ckpt = tmp_path / "run.pt"
    ckpt.write_bytes(b"not a checkpoint")
    result = train_embedder(feats, labels, TINY_MODEL, dataclasses.replace(TINY_TRAIN, epochs=1, steps_per_epoch=1), checkpoint=ckpt, device=CPU)
    assert result.resumed_at_epoch == 0 and ckpt.stat().st_size > 1000


def test_early_stopping_keeps_the_best_epoch() -> None:
    feats, labels = synthetic_speakers(n_utts=2)
    scripted = iter([0.30, 0.20, 0.25, 0.22, 0.21, 0.10])
    snapshots: list[dict[str, torch.Tensor]] = []

    def validate(model: torch.nn.Module) -> float:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    config = dataclasses.replace(TINY_TRAIN, epochs=6, steps_per_epoch=2, patience=3)
    result = train_embedder(feats, labels, TINY_MODEL, config, validate=validate, device=CPU)
    assert [r["val_eer"] for r in result.history] == [0.30, 0.20, 0.25, 0.22, 0.21]  # 3 epochs without gain
    assert result.stopped_early and result.best_epoch == 2 and result.best_val_eer == 0.20
    for name, value in snapshots[1].items():
        torch.testing.assert_close(result.model.state_dict()[name], value)


def test_cyclic_schedule_rises_and_falls() -> None:
    feats, labels = synthetic_speakers(n_utts=2)
    config = dataclasses.replace(TINY_TRAIN, epochs=4, steps_per_epoch=2, schedule="cyclic", augment=NO_AUG)
    lrs = [r["lr"] for r in train_embedder(feats, labels, TINY_MODEL, config, device=CPU).history]
    assert lrs[0] == pytest.approx(config.lr) and lrs[1] == pytest.approx(config.lr_min)
    assert lrs[2] == pytest.approx((config.lr + config.lr_min) / 2)  # triangular2: the second peak is halved


def test_random_crop_tiles_short_and_slices_long() -> None:
    rng = np.random.default_rng(0)
    short = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(random_crop(short, 7, rng)[:, 0], [0, 2, 4, 0, 2, 4, 0][: 7])
    long = np.arange(200, dtype=np.float32).reshape(100, 2)
    crop = random_crop(long, 10, rng)
    assert crop.shape == (10, 2) and np.all(np.diff(crop[:, 0]) == 2)


def test_gain_is_a_linear_loudness_ramp_equal_across_bands() -> None:
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(3, 50, N_MELS)).astype(np.float32)
    out = augment(batch, dataclasses.replace(NO_AUG, gain_db=6.0), rng)
    delta = out - batch
    np.testing.assert_allclose(delta, delta[:, :, :1].repeat(N_MELS, axis=2), atol=1e-5)
    second_diff = np.diff(delta[:, :, 0], n=2, axis=1)
    np.testing.assert_allclose(second_diff, 0.0, atol=1e-4)
    gain_db = np.abs(delta).max() / NEPER_PER_DB
    assert 1.0 < gain_db <= 6.0 + 1e-4


def test_masks_fill_with_the_band_mean() -> None:
    batch = np.random.default_rng(1).normal(size=(4, 50, N_MELS)).astype(np.float32)
    band_mean = batch.mean(axis=1, keepdims=True)  # (B, 1, F)
    time_only = dataclasses.replace(NO_AUG, time_masks=1, time_mask_frames=10)
    out = augment(batch, time_only, np.random.default_rng(0))
    masked = (out != batch).any(axis=2)  # (B, T) frames that changed
    assert masked.any() and out.shape == batch.shape
    np.testing.assert_allclose(out, np.where(masked[:, :, None], band_mean, batch), atol=1e-6)
    freq_only = dataclasses.replace(NO_AUG, freq_masks=1, freq_mask_bands=5)
    out = augment(batch, freq_only, np.random.default_rng(0))
    masked = (out != batch).any(axis=1)  # (B, F) bands that changed
    assert masked.any()
    np.testing.assert_allclose(out, np.where(masked[:, None, :], band_mean, batch), atol=1e-6)


def test_noise_only_adds_power_and_follows_the_snr() -> None:
    rng = np.random.default_rng(2)
    frames = rng.normal(0.0, 1.5, (100, N_MELS)).astype(np.float32)
    assert np.all(add_noise(frames, 0.0, rng) >= frames - 1e-4)
    np.testing.assert_allclose(add_noise(frames, 60.0, rng), frames, atol=0.02)  # 60 dB SNR: inaudible
    mixed = add_noise(frames, 0.0, rng)  # 0 dB: noise power = signal power -> total doubles (+3 dB)
    ratio_db = 10 * np.log10(np.exp(mixed).mean() / np.exp(frames).mean())
    assert ratio_db == pytest.approx(3.0, abs=0.5)


def test_augment_is_deterministic_for_a_seed() -> None:
    batch = np.random.default_rng(3).normal(size=(4, 30, N_MELS)).astype(np.float32)
    cfg = AugmentConfig(noise_prob=0.5)
    a = augment(batch, cfg, np.random.default_rng(7))
    b = augment(batch, cfg, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_bad_settings_and_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="lr_min"):
        TrainConfig(lr=1e-3, lr_min=1e-2).check()
    with pytest.raises(ValueError, match="snr_db"):
        AugmentConfig(snr_db=(20.0, 5.0)).check()
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_embedder([np.zeros((10, N_MELS), np.float32)], [0], TINY_MODEL, TINY_TRAIN, device=CPU)


def test_device_auto_detect() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            pick_device("cuda")


def test_margin_warmup_ramps_linearly_to_the_full_margin() -> None:
    from voiceid.ecapa.train import _ramp

    config = dataclasses.replace(TINY_TRAIN, epochs=2, steps_per_epoch=5, margin_warmup=0.5)  # 5 warm-up steps
    assert [_ramp(s, config) for s in range(7)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])
    assert _ramp(0, dataclasses.replace(config, margin_warmup=0.0)) == 1.0
