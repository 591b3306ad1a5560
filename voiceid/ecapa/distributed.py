"""ECAPA training across processes: ``torchrun --nproc_per_node N stages/ecapa.py``.

torchrun sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (and the rendezvous address);
:func:`init_from_env` then joins the process group -- NCCL when the processes train on CUDA
(one GPU per local rank), gloo on CPU -- and without those variables (a plain
``python stages/ecapa.py``) does nothing, so every helper here is a no-op for one process.

Every rank runs the same seeded Optuna study and draws the same batches; each step's batch is
split by rank (:func:`shard`), DistributedDataParallel averages the gradients, and only rank 0
validates (the EER is broadcast, so every rank takes the same early-stopping and pruning
decisions), writes checkpoints and logs to MLflow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_from_env(device: Literal["auto", "cpu", "cuda"] = "auto", timeout_s: float = 1800) -> Context:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (NCCL on CUDA, else gloo); else do nothing."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    ctx = Context(
        rank=int(os.environ["RANK"]),
        world=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return ctx


def current() -> Context:
    """The process group this process is in (rank 0 of 1 when none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    world = dist.get_world_size()
    return Context(
        rank=dist.get_rank(),
        world=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if current().distributed:
        dist.barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; small objects: numbers, checkpoints)."""
    if not current().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over the ranks."""
    if not current().distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def shard(n: int, ctx: Context) -> slice:
    """This rank's contiguous share of ``n`` batch rows (``np.array_split`` sizes)."""
    bounds = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(n), ctx.world)])
    return slice(int(bounds[ctx.rank]), int(bounds[ctx.rank + 1]))


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
