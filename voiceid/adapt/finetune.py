"""Fine-tuning the pretrained GE2E encoder on labelled mel frames (math apart from file handling).

The encoder (resemblyzer's ``VoiceEncoder``: 3-layer LSTM, 256 units, ReLU + length-norm
output) starts from its pretrained weights; a new additive-angular-margin softmax head over
the training speakers (:class:`voiceid.ecapa.train.AAMSoftmax`) pulls each speaker's crops
together.  The encoder's learning rate is small (``adapt.lr``) so what it knows about voices
in general survives; the head's is large because it starts from nothing.

Example (one step on random frames; real use: tests/test_adapt.py, stage ``adapt``):
    >>> rng = np.random.default_rng(0)
    >>> frames = [rng.random((30, 40), dtype=np.float32) for _ in range(4)]  # (n_frames, 40) each
    >>> tuned = fine_tune(frames, ["a", "a", "b", "b"], AdaptParams(steps=1, batch_size=4, crop_frames=20, threads=1))
    >>> len(tuned.losses), tuned.n_speakers, load_encoder(tuned.state).training
    (1, 2, False)
"""

from __future__ import annotations

import copy
import functools
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voiceid.adapt.params import AdaptParams
from voiceid.features import dvector


@dataclass(frozen=True)
class FineTuned:
    """The adapted encoder's weights (``torch.save`` of its state dict) and how training went."""

    state: bytes
    losses: list[float] = field(repr=False)  # one per step
    n_speakers: int = 0
    n_clips: int = 0
    seconds: float = 0.0


def crops(frames: Sequence[np.ndarray], picks: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """(len(picks), length, n_mels) random crops; a clip shorter than ``length`` is repeated to fill it.

    Repeating (not zero-padding) matters: the encoder's embedding is its last LSTM state, so
    trailing silence frames would be what it encodes.

    >>> f = [np.arange(6, dtype=np.float32).reshape(3, 2)]  # 3 frames of 2 bands
    >>> crops(f, np.array([0]), 6, np.random.default_rng(0))[0, :, 0].tolist()
    [0.0, 2.0, 4.0, 0.0, 2.0, 4.0]
    """
    out = np.empty((len(picks), length, frames[0].shape[1]), dtype=np.float32)
    for k, i in enumerate(picks):
        m = frames[i]
        if len(m) < length:
            m = np.tile(m, (-(-length // len(m)), 1))
        start = int(rng.integers(0, len(m) - length + 1))
        out[k] = m[start : start + length]
    return out


def fine_tune(frames: Sequence[np.ndarray], speakers: Sequence[str], params: AdaptParams) -> FineTuned:
    """Fine-tune a copy of the pretrained encoder on ``frames`` ((n_i, 40) mel power) labelled ``speakers``."""
    import torch

    from voiceid.ecapa.train import AAMSoftmax, seed_everything

    params.check()
    labels = np.asarray(speakers).astype(str)
    classes = np.unique(labels)
    if len(frames) != len(labels) or len(classes) < 2:
        raise ValueError(
            f"fine-tuning needs >= 2 speakers and one label per clip, found {len(classes)} speakers, "
            f"{len(frames)} clips and {len(labels)} labels"
        )
    codes = torch.as_tensor(np.searchsorted(classes, labels))
    start = time.perf_counter()
    seed_everything(params.seed)
    rng = np.random.default_rng(params.seed)
    model = copy.deepcopy(dvector.encoder()).train()
    head = AAMSoftmax(dvector.DVECTOR_DIM, len(classes), params.margin, params.scale)
    opt = torch.optim.Adam([{"params": model.parameters(), "lr": params.lr}, {"params": head.parameters(), "lr": params.head_lr}])
    losses: list[float] = []
    with dvector.torch_threads(params.threads):
        for _ in range(params.steps):
            picks = rng.integers(0, len(frames), params.batch_size)
            x = torch.from_numpy(crops(frames, picks, params.crop_frames, rng))  # (B, crop, 40)
            loss, _ = head(model(x), codes[picks])  # model(x): (B, 256) unit norm
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    model.eval()
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return FineTuned(buf.getvalue(), losses, len(classes), len(frames), time.perf_counter() - start)


@functools.lru_cache(maxsize=4)
def load_encoder(state: bytes) -> Any:
    """A ``VoiceEncoder`` on the CPU with the adapted weights ``state`` (kept per process, like the pretrained one)."""
    import torch

    model = copy.deepcopy(dvector.encoder())
    model.load_state_dict(torch.load(io.BytesIO(state), map_location="cpu", weights_only=True))
    return model.eval()
