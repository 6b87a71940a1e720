"""Evaluation by several processes under torchrun: which batches a rank owns, and the collectives that turn each
rank's sums into the whole set's.

The process group, the ranks and the devices are training's (titok.train.distributed: nccl on CUDA, gloo on CPU,
one GPU per LOCAL_RANK, torchrun's c10d rendezvous across nodes). What evaluation adds here:
- the split of the work (`rank_batches`): global batches [j*B, (j+1)*B), and rank r owns the batches with
  j % world == r, the rule `titok-bench generate --shard k/n` follows. Every image is therefore made, and every
  Inception batch run, in the same batch at any world size, so features are bitwise those of one process;
- sums (`sum_arrays`): per-rank float64/int64 arrays added across ranks, which is how streamed statistics
  (counts, sums of features and of their outer products, per-split Inception Score sums) combine;
- gathers to rank 0 (`gather_to_main`) of what does not add up: pool features for KID and precision/recall;
- failure (`together`): an exception on one rank becomes one error on every rank that names the rank and its
  message, instead of a hang at the next collective; and every collective has a timeout
  (TITOK_BENCH_DIST_TIMEOUT_S seconds, 30 minutes by default) for a rank that dies without a word.
Outside torchrun (WORLD_SIZE unset or 1) everything here is the identity and creates no process group.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from titok.errors import InputError
from titok.train.distributed import DistContext, setup, teardown

TIMEOUT_ENV = "TITOK_BENCH_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800


class RankFailure(RuntimeError):
    """Another rank (or this one) failed; the message names each failed rank and its error."""


class RankInputError(RankFailure, InputError):
    """Every failure was bad input (a missing file, an unreadable image under strict): one line, exit status 2."""


def timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        raise InputError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        raise InputError(f"{TIMEOUT_ENV} must be positive, got {raw!r}")
    return timedelta(seconds=seconds)


def launched() -> bool:
    """Whether torchrun (or a launcher setting its variables) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: str = "auto") -> DistContext:
    """Join torchrun's process group (with the timeout) and pick this rank's device; a single process otherwise.

    Under torchrun each rank takes the GPU of its LOCAL_RANK, so a device with an index ("cuda:1") is refused:
    it would put every rank on one GPU.
    """
    if launched() and ":" in str(device):
        raise InputError(f"under torchrun each rank uses the GPU of its LOCAL_RANK; give --device cuda, not {device}")
    return setup(str(device), timeout() if launched() else None)


def stop(ctx: DistContext) -> None:
    teardown(ctx)


def current() -> DistContext:
    """The running process's place in the group (rank 0 of 1 when no group was created)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext(0, 1, 0, torch.device("cpu"))
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), dev)


def rank_batches(num_items: int, batch_size: int, rank: int = 0, world: int = 1) -> list[range]:
    """The global batches [j*B, min((j+1)*B, N)) with j % world == rank, in order."""
    if batch_size < 1 or num_items < 0 or not 0 <= rank < world:
        raise InputError(f"need batch size >= 1, item count >= 0 and 0 <= rank < world, got {batch_size}, "
                         f"{num_items}, {rank}/{world}")
    return [range(j * batch_size, min((j + 1) * batch_size, num_items))
            for j in range(rank, -(-num_items // batch_size), world)]


def sum_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each array summed over the ranks (every rank gets the sums); float64 and int64 keep their dtype.

    The arrays of all ranks must have the same keys, shapes and dtypes. One process: copies of the inputs.
    """
    ctx = current()
    out = {}
    for key in sorted(arrays):  # the same order on every rank
        value = np.ascontiguousarray(arrays[key])
        if value.dtype not in (np.float64, np.int64):
            raise TypeError(f"sum_arrays takes float64 or int64 arrays, got {value.dtype} for {key}")
        if ctx.world_size == 1:
            out[key] = value.copy()
            continue
        t = torch.from_numpy(value.copy()).to(ctx.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        out[key] = t.cpu().numpy()
    return out


def gather_to_main(obj) -> list | None:
    """[obj of rank 0, obj of rank 1, ...] on rank 0, None on the others (any picklable object)."""
    ctx = current()
    if ctx.world_size == 1:
        return [obj]
    box = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, box, dst=0)
    return box


def all_gather(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    ctx = current()
    if ctx.world_size == 1:
        return [obj]
    box = [None] * ctx.world_size
    dist.all_gather_object(box, obj)
    return box


def broadcast_from_main(obj):
    """Rank 0's `obj` on every rank."""
    ctx = current()
    if ctx.world_size == 1:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if current().world_size > 1:
        dist.barrier()


@contextmanager
def together(what: str) -> Iterator[None]:
    """Run a block on every rank and agree on its outcome: if it raised on any rank, every rank raises
    `RankFailure` naming the failed ranks and their errors (`RankInputError` when all were bad input), chained to
    the local exception where there is one. The block must hold no collective of its own (a rank that failed
    before it would leave the others waiting in it until the timeout)."""
    error: BaseException | None = None
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every error is carried to the other ranks, then raised again here
        error = exc
    ctx = current()
    if ctx.world_size == 1:
        if error is not None:
            raise error
        return
    said = all_gather(None if error is None else (type(error).__name__, str(error), isinstance(error, InputError)))
    failed = [(r, s) for r, s in enumerate(said) if s is not None]
    if not failed:
        return
    kind = RankInputError if all(s[2] for _, s in failed) else RankFailure
    lines = "; ".join(f"rank {r}: {name}: {message}" for r, (name, message, _) in failed)
    raise kind(f"{what} failed on {len(failed)} of {ctx.world_size} ranks: {lines}") from error
