"""Training loop for the ECAPA-TDNN embedder: AAM-softmax, augmentation, checkpoints, early stop.

One call to :func:`train_embedder` trains :class:`~voiceid.ecapa.model.ECAPATDNN` on log-mel frames
of labelled utterances:

* every step draws ``batch_size`` random utterances and a random ``crop_frames`` window of each
  (short utterances are tiled), so an "epoch" is a fixed number of steps, not a pass over data;
* the crops are augmented on the features (natural-log mel power, as
  :func:`voiceid.features.signal.logmel` writes them): a random gain with a loudness ramp, additive
  synthetic noise of random colour and SNR (mixed in the power domain), and SpecAugment-style
  time and frequency masks -- all generated locally from the seeded RNG;
* the loss is AAM-softmax (additive angular margin, "ArcFace") over the training speakers,
  its margin optionally eased in from 0 over the first ``margin_warmup`` share of the steps;
* Adam with a per-step cosine (or triangular cyclic) learning-rate schedule;
* after each epoch an optional ``validate(model)`` gives a validation EER: the best epoch's
  weights are kept and training stops after ``patience`` epochs without improvement;
* after each epoch everything needed to continue is written atomically to ``checkpoint``, so
  a killed run resumes where it stopped, and a finished one returns at once.

Randomness comes from ``numpy.random.default_rng([seed, epoch])`` per epoch plus a seeded
weight init, so a resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voiceid.atomic import atomic_write
from voiceid.ecapa import distributed
from voiceid.ecapa.augment import AugmentConfig, augment, random_crop
from voiceid.ecapa.model import ECAPATDNN, EcapaConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.  ``margin`` / ``scale`` are the AAM-softmax m and s."""

    epochs: int = 10
    steps_per_epoch: int = 20
    batch_size: int = 32
    crop_frames: int = 200
    lr: float = 1e-3
    lr_min: float = 1e-5
    schedule: Literal["cosine", "cyclic"] = "cosine"
    weight_decay: float = 2e-5
    margin: float = 0.2
    scale: float = 30.0
    margin_warmup: float = 0.0  # share of all steps over which the margin ramps up from 0
    patience: int = 3
    seed: int = 42
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def check(self) -> None:
        for name in ("epochs", "steps_per_epoch", "batch_size", "crop_frames", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, found {getattr(self, name)}")
        if not 0.0 < self.lr_min <= self.lr:
            raise ValueError(f"need 0 < lr_min <= lr, found lr_min={self.lr_min}, lr={self.lr}")
        if not 0.0 <= self.margin < math.pi / 2 or self.scale <= 0:
            raise ValueError(f"need 0 <= margin < pi/2 and scale > 0, found {self.margin}, {self.scale}")
        if not 0.0 <= self.margin_warmup <= 1.0:
            raise ValueError(f"margin_warmup must be in [0, 1], found {self.margin_warmup}")
        self.augment.check()


@dataclass
class TrainResult:
    """What :func:`train_embedder` returns: the best model (eval mode, on CPU) and its story."""

    model: ECAPATDNN
    history: list[dict[str, float]]
    best_epoch: int
    best_val_eer: float | None
    stopped_early: bool
    resumed_at_epoch: int  # epochs already done when this call started (0: fresh run)
    step_losses: list[float] = field(default_factory=list)  # the whole batch's loss at every step, all epochs


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax: the target logit is ``s * cos(theta + m)``.

    Embeddings and class weights are L2-normalised, so the loss only shapes angles -- which is
    what cosine scoring compares later.

    Example:
        >>> head = AAMSoftmax(embedding_dim=8, n_classes=3)
        >>> loss, logits = head(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]))
        >>> logits.shape, bool(loss > 0)
        (torch.Size([4, 3]), True)
    """

    def __init__(self, embedding_dim: int, n_classes: int, margin: float = 0.2, scale: float = 30.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, embedding_dim))
        nn.init.xavier_normal_(self.weight)
        self.margin, self.scale = margin, scale

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)  # (B, n_classes)
        m = self.margin
        sin = torch.sqrt(1.0 - cos.pow(2))
        cos_m = cos * math.cos(m) - sin * math.sin(m)  # cos(theta + m)
        # Past theta = pi - m, cos(theta + m) would grow again; fall back to a linear penalty.
        cos_m = torch.where(cos > math.cos(math.pi - m), cos_m, cos - math.sin(math.pi - m) * m)
        target = F.one_hot(labels, cos.shape[1]).bool()
        logits = self.scale * torch.where(target, cos_m, cos)
        return F.cross_entropy(logits, labels), logits


def pick_device(preference: Literal["auto", "cpu", "cuda"] = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch and ask cuDNN for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def fingerprint(model_config: EcapaConfig, config: TrainConfig, feats: Sequence[np.ndarray], labels: Sequence[int]) -> str:
    """Hash of everything that determines a run; a checkpoint with another hash is not resumed."""
    h = hashlib.sha256(json.dumps([dataclasses.asdict(model_config), dataclasses.asdict(config)], sort_keys=True).encode())
    for f in feats:
        h.update(np.ascontiguousarray(f, dtype=np.float32).tobytes())
        h.update(str(f.shape).encode())
    h.update(np.asarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file and rename it, so a kill mid-write never leaves a torn checkpoint."""
    atomic_write(path, lambda f: torch.save(state, f))


def _load_checkpoint(path: Path | None, expected: str) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: start over rather than fail the stage
        log.warning("%s: unreadable checkpoint (%s); training from scratch", path, exc)
        return None
    if state.get("fingerprint") != expected:
        log.warning("%s: checkpoint is for other data or settings; training from scratch", path)
        return None
    return state


def _scheduler(opt: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    total = config.epochs * config.steps_per_epoch
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=config.lr_min)
    # Triangular cycles of two epochs each, with the peak halving every cycle.
    return torch.optim.lr_scheduler.CyclicLR(
        opt,
        base_lr=config.lr_min,
        max_lr=config.lr,
        step_size_up=config.steps_per_epoch,
        mode="triangular2",
        cycle_momentum=False,
    )


def _ramp(step: int, config: TrainConfig) -> float:
    # A full margin from the first step makes a from-scratch net's loss huge and its
    # gradients uninformative; easing it in is the usual AAM-softmax warm-up.
    warm = config.margin_warmup * config.epochs * config.steps_per_epoch
    return 1.0 if warm <= 0 else min(1.0, (step + 1) / warm)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class _Net(nn.Module):
    """Embedder + AAM head as one module, so DistributedDataParallel syncs both."""

    def __init__(self, model: ECAPATDNN, head: AAMSoftmax) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.model(x), target)


def train_embedder(
    feats: Sequence[np.ndarray],
    labels: Sequence[int],
    model_config: EcapaConfig,
    config: TrainConfig,
    *,
    validate: Callable[[ECAPATDNN], float] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    device: torch.device | None = None,
) -> TrainResult:
    """Train an embedder on (n_frames, n_mels) log-mel arrays with integer speaker ``labels``.

    ``validate(model)`` returns a validation EER (lower is better) for early stopping.
    ``on_epoch(record)`` sees each epoch's record (also replayed for epochs restored from a
    checkpoint); it may raise (``optuna.TrialPruned``) to stop -- the checkpoint is written first.

    Under torchrun (:mod:`voiceid.ecapa.distributed`) every rank draws the same batch and trains
    on its share of it with DistributedDataParallel (each share's loss weighted by its size, so
    the averaged gradient is the whole batch's); rank 0 validates, broadcasting the EER, and
    writes the checkpoint. On CUDA batch norm is synchronised (SyncBatchNorm); on CPU, where
    PyTorch has no SyncBatchNorm, each rank normalises with its share's statistics.
    """
    config.check()
    model_config.check()
    if len(feats) != len(labels) or not feats:
        raise ValueError(f"need matching, non-empty feats and labels, found {len(feats)} and {len(labels)}")
    y = np.asarray(labels, dtype=np.int64)
    n_classes = int(y.max()) + 1
    if n_classes < 2 or y.min() < 0:
        raise ValueError(f"labels must be 0..n_classes-1 with at least 2 classes, found {sorted(set(y.tolist()))}")
    device = device or pick_device()
    ctx = distributed.current()
    if ctx.distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    path = Path(checkpoint) if checkpoint is not None else None
    key = fingerprint(model_config, config, feats, labels)

    seed_everything(config.seed)
    model = ECAPATDNN(model_config).to(device)
    head = AAMSoftmax(model_config.embedding_dim, n_classes, config.margin, config.scale).to(device)
    net: nn.Module = _Net(model, head)
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same state-dict keys as BatchNorm1d
            net = _Net(model, head)
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=config.lr, weight_decay=config.weight_decay)
    sched = _scheduler(opt, config)
    st: dict[str, Any] = {
        "epoch": 0,
        "history": [],
        "best_val": None,
        "best_epoch": 0,
        "bad_epochs": 0,
        "best_state": None,
        "done": False,
        "step_losses": [],
    }
    saved = distributed.broadcast(_load_checkpoint(path, key) if ctx.is_main else None)  # rank 0's file
    if saved is not None:
        model.load_state_dict(saved["model"])
        head.load_state_dict(saved["head"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        st.update({k: saved.get(k, st[k]) for k in st})
        log.info("%s: resuming after epoch %d", path, st["epoch"])
    resumed_at = st["epoch"]
    for record in st["history"]:
        if on_epoch is not None:
            on_epoch(record)

    while not st["done"]:
        epoch = st["epoch"] + 1
        rng = np.random.default_rng([config.seed, epoch])
        model.train()
        head.train()
        losses, hits = [], 0
        for step in range((epoch - 1) * config.steps_per_epoch, epoch * config.steps_per_epoch):
            head.margin = config.margin * _ramp(step, config)
            idx = rng.integers(0, len(feats), config.batch_size)
            batch = np.stack([random_crop(feats[i], config.crop_frames, rng) for i in idx])  # (B, T, F)
            batch = augment(batch, config.augment, rng)  # every rank draws the whole batch: same RNG stream
            part = distributed.shard(config.batch_size, ctx)
            x = torch.from_numpy(batch[part]).to(device)
            target = torch.from_numpy(y[idx][part]).to(device)
            loss, logits = net(x, target)
            share = len(target) / config.batch_size
            opt.zero_grad(set_to_none=True)
            (loss * (share * ctx.world)).backward()  # DDP averages over ranks: the whole batch's mean gradient
            opt.step()
            sched.step()
            step_hits = int((logits.argmax(dim=1) == target).sum())
            if ctx.distributed:
                step_loss, step_hits_f = distributed.all_sum([float(loss.detach()) * share, float(step_hits)])
                step_hits = int(round(step_hits_f))
            else:
                step_loss = float(loss.detach())
            losses.append(step_loss)
            st["step_losses"].append(step_loss)
            hits += step_hits
        record = {
            "epoch": float(epoch),
            "loss": float(np.mean(losses)),
            "lr": float(sched.get_last_lr()[0]),
            "train_accuracy": hits / (config.steps_per_epoch * config.batch_size),
        }
        improved = True
        if validate is not None:
            model.eval()
            record["val_eer"] = _validate_on_main(validate, model, ctx)
            improved = st["best_val"] is None or record["val_eer"] < st["best_val"]
            if improved:
                st["best_val"] = record["val_eer"]
        if improved:
            st["best_state"], st["best_epoch"], st["bad_epochs"] = _cpu_state(model), epoch, 0
        else:
            st["bad_epochs"] += 1
        st["epoch"] = epoch
        st["history"].append(record)
        st["done"] = epoch >= config.epochs or st["bad_epochs"] >= config.patience
        if path is not None and ctx.is_main:
            _save_atomic(
                {
                    **st,
                    "fingerprint": key,
                    "model": model.state_dict(),
                    "head": head.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                },
                path,
            )
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in record.items()})
        if on_epoch is not None:
            on_epoch(record)

    best = ECAPATDNN(model_config)
    best.load_state_dict(st["best_state"])
    return TrainResult(
        model=best.eval(),
        history=copy.deepcopy(st["history"]),
        best_epoch=st["best_epoch"],
        best_val_eer=st["best_val"],
        stopped_early=st["epoch"] < config.epochs,
        resumed_at_epoch=resumed_at,
        step_losses=list(st["step_losses"]),
    )


def _validate_on_main(validate: Callable[[ECAPATDNN], float], model: ECAPATDNN, ctx: distributed.Context) -> float:
    """``validate(model)`` on rank 0, the same float (or the same error) on every rank."""
    value: float | None = None
    error = ""
    if ctx.is_main:
        try:
            with torch.no_grad():
                value = float(validate(model))
        except Exception as exc:
            if not ctx.distributed:
                raise
            error = f"{type(exc).__name__}: {exc}"
    value, error = distributed.broadcast((value, error))
    if error:
        raise RuntimeError(f"validation failed on rank 0: {error}")
    assert value is not None
    return value
