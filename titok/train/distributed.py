"""torch.distributed plumbing for training: process-group setup under `torchrun`, rank helpers, seeding.

`torchrun --nproc_per_node N -m titok.train.cli ...` sets RANK / WORLD_SIZE / LOCAL_RANK; without them the run
is a single process and no process group is created. Backend: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from titok.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("run.device=cuda but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def setup(device: str = "auto", timeout: timedelta | None = None) -> DistContext:
    """Join the process group torchrun describes (if any) and pick this rank's device.

    `timeout` bounds every collective of the group (torch's default, 10 minutes for nccl and 30 for gloo, when
    None): a rank that died or hangs then ends the run with an error instead of blocking the others forever."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        kwargs = {"timeout": timeout} if timeout is not None else {}
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", **kwargs)
        log.info("rank %d/%d joined (%s, %s)", rank, world, dist.get_backend(), dev)
    return DistContext(rank, world, local_rank, dev)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_gather_objects(ctx: DistContext, obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank (a one-element list in a single process)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(ctx: DistContext, values: dict[str, float]) -> dict[str, float]:
    """Average logged scalars over ranks (so the log describes the global batch)."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                     device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def broadcast_object(ctx: DistContext, obj):
    """Rank 0's `obj` on every rank (what rank 0 computed once, e.g. a folder's listing, instead of N copies)."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
