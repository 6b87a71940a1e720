"""A group of ranks made of threads of this process, standing in for bench.metrics.distributed's collectives in fast
tests.

Each thread is one rank; `sum_arrays` and `gather_to_main` meet at a barrier, as the gloo collectives do, and add
the ranks' arrays in rank order (for two ranks a + b, which is what an all-reduce of two gives). The real
collectives are tested with two gloo processes (tests/test_distributed.py, tests/test_distributed_metrics.py); this
stand-in lets the arithmetic of every reduce() run in well under a second, and under mutation testing.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from titok.train.distributed import DistContext


class ThreadWorld:
    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=60)
        self.slots: list = [None] * size
        self.local = threading.local()

    def install(self, monkeypatch) -> None:
        from bench.metrics import distributed

        monkeypatch.setattr(distributed, "current", self.current)
        monkeypatch.setattr(distributed, "sum_arrays", self.sum_arrays)
        monkeypatch.setattr(distributed, "gather_to_main", self.gather_to_main)
        monkeypatch.setattr(distributed, "all_gather", self.all_gather)
        monkeypatch.setattr(distributed, "broadcast_from_main", self.broadcast_from_main)

    def current(self) -> DistContext:
        rank = getattr(self.local, "rank", None)
        if rank is None:  # the test's own thread: one process
            return DistContext(0, 1, 0, torch.device("cpu"))
        return DistContext(rank, self.size, rank, torch.device("cpu"))

    def _exchange(self, obj) -> list:
        if getattr(self.local, "rank", None) is None:  # the test's own thread is a world of one
            return [obj]
        self.slots[self.local.rank] = obj
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out

    def sum_arrays(self, arrays: dict) -> dict:
        """As bench.metrics.distributed.sum_arrays: float64 or int64 arrays only, the same keys and shapes on every
        rank."""
        mine = {k: np.array(v, copy=True) for k, v in arrays.items()}
        for key, value in mine.items():
            if value.dtype not in (np.float64, np.int64):
                raise TypeError(f"sum_arrays takes float64 or int64 arrays, got {value.dtype} for {key}")
        every = self._exchange(mine)
        if any({k: v.shape for k, v in e.items()} != {k: v.shape for k, v in mine.items()} for e in every):
            raise ValueError("the ranks' arrays differ in keys or shapes")
        out = {}
        for key in sorted(mine):
            total = every[0][key].copy()
            for other in every[1:]:
                total = total + other[key]
            out[key] = total
        return out

    def gather_to_main(self, obj):
        every = self._exchange(obj)
        return every if self.local.rank == 0 else None

    def all_gather(self, obj) -> list:
        return self._exchange(obj)

    def broadcast_from_main(self, obj):
        return self._exchange(obj)[0]

    def run(self, work) -> list:
        """work(rank) on every rank at once; their return values in rank order (a rank's exception is raised)."""
        results: list = [None] * self.size
        errors: list = [None] * self.size

        def one(rank: int) -> None:
            self.local.rank = rank
            try:
                results[rank] = work(rank)
            except BaseException as exc:  # noqa: BLE001 - carried to the test's thread
                errors[rank] = exc
                self.barrier.abort()

        threads = [threading.Thread(target=one, args=(r,)) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for exc in errors:
            if exc is not None and not isinstance(exc, threading.BrokenBarrierError):
                raise exc
        for exc in errors:
            if exc is not None:
                raise exc
        return results
