"""bench.metrics.distributed: the split of work over ranks, sums and gathers across 2 gloo processes, and one
rank's error raised on every rank. Expected values are written here (a batch list by hand, sums by numpy)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

from bench.metrics.distributed import RankFailure, RankInputError, rank_batches, sum_arrays, together
from titok.errors import InputError


def test_rank_batches_cover_every_item_once_in_the_same_batches_at_any_world_size():
    assert rank_batches(10, 3) == [range(0, 3), range(3, 6), range(6, 9), range(9, 10)]
    assert rank_batches(10, 3, 0, 2) == [range(0, 3), range(6, 9)]
    assert rank_batches(10, 3, 1, 2) == [range(3, 6), range(9, 10)]
    assert rank_batches(10, 3, 2, 3) == [range(6, 9)]
    for world in (1, 2, 3, 5, 8):
        batches = sorted((b for r in range(world) for b in rank_batches(23, 4, r, world)), key=lambda b: b.start)
        assert batches == rank_batches(23, 4)
    assert rank_batches(0, 4) == []
    with pytest.raises(InputError):
        rank_batches(10, 0)
    with pytest.raises(InputError):
        rank_batches(10, 2, 2, 2)


def test_one_process_is_the_identity():
    a = {"n": np.array([3], np.int64), "s": np.arange(4, dtype=np.float64)}
    out = sum_arrays(a)
    assert out["n"].tolist() == [3] and out["s"].tolist() == [0, 1, 2, 3]
    out["s"][0] = 9  # a copy, not the caller's array
    assert a["s"][0] == 0
    with pytest.raises(TypeError):
        sum_arrays({"x": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="boom"), together("work"):
        raise ValueError("boom")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1", TITOK_BENCH_DIST_TIMEOUT_S="60")
    from bench.metrics import distributed

    ctx = distributed.start("cpu")
    try:
        got = {}
        sums = distributed.sum_arrays({"n": np.array([rank + 1], np.int64),
                                       "x": np.full((2, 2), 0.5 + rank, np.float64)})
        got["sums"] = (sums["n"].tolist(), sums["x"].tolist())
        got["gathered"] = distributed.gather_to_main({"rank": rank})
        got["broadcast"] = distributed.broadcast_from_main(f"from {rank}")
        for label, bad in (("input", InputError("missing file a.png")), ("bug", KeyError("k"))):
            try:
                with distributed.together(f"stage {label}"):
                    if rank == 1:
                        raise bad
                got[label] = None
            except RankFailure as exc:
                got[label] = (type(exc).__name__, str(exc), isinstance(exc, InputError))
        with distributed.together("all fine"):
            pass
        np.save(f"{out}/rank{rank}.npy", np.array([got], dtype=object), allow_pickle=True)
    finally:
        distributed.stop(ctx)


@pytest.mark.slow
def test_two_gloo_processes_sum_gather_and_fail_together(tmp_path):
    """About 10 s (start-up of the process pair)."""
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2)
    got = [np.load(tmp_path / f"rank{r}.npy", allow_pickle=True)[0] for r in (0, 1)]
    for g in got:
        assert g["sums"] == ([3], [[2.0, 2.0], [2.0, 2.0]])
        assert g["broadcast"] == "from 0"
        name, message, is_input = g["input"]
        assert name == RankInputError.__name__ and is_input
        assert message == "stage input failed on 1 of 2 ranks: rank 1: InputError: missing file a.png"
        name, message, is_input = g["bug"]
        assert name == RankFailure.__name__ and not is_input and "rank 1: KeyError" in message
    assert got[0]["gathered"] == [{"rank": 0}, {"rank": 1}]
    assert got[1]["gathered"] is None
