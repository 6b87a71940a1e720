"""The timing helper: warm-up, iterations, memory fields, and out-of-memory back-off."""

from __future__ import annotations

import time

import pytest
import torch

from bench.timing import measure, measure_with_backoff


def test_measure_counts_warmup_and_iterations():
    calls = []
    t = measure(lambda: (calls.append(1), time.sleep(0.01)), batch_size=4, warmup=2, iters=3)
    assert len(calls) == 5 and len(t.seconds) == 3
    assert all(s >= 0.009 for s in t.seconds)
    assert t.items_per_sec == pytest.approx(4 / t.median_s)
    m = t.as_metrics()
    assert {"images_per_sec", "sec_per_batch", "peak_memory_mb"} <= set(m) and m["peak_memory_mb"] > 0


def test_peak_memory_sees_an_allocation():
    def alloc():
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB
        return x.sum()

    small = measure(lambda: torch.ones(1).sum(), 1, warmup=0, iters=1).peak_memory_mb
    big = measure(alloc, 1, warmup=0, iters=1).peak_memory_mb
    assert big >= small


def test_out_of_memory_backs_off_and_is_recorded():
    def make(bs):
        def fn():
            if bs > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated for batch > 2)")
        return fn

    t, note = measure_with_backoff(make, 8, warmup=1, iters=1)
    assert t.batch_size == 2 and "out of memory at batch 8" in note and "batch 4" in note


def test_other_errors_propagate():
    def make(bs):
        def fn():
            raise ValueError("a real bug")
        return fn

    with pytest.raises(ValueError, match="a real bug"):
        measure_with_backoff(make, 4)
