"""The timing helper: warm-up, iterations, memory fields, and out-of-memory back-off."""

from __future__ import annotations

import time

import pytest
import torch

from bench.run.timing import measure, measure_interleaved, measure_variants_with_backoff, measure_with_backoff


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


def test_variants_are_timed_in_interleaved_rounds_after_their_preparation():
    calls = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b")]
    prepare = [lambda: calls.append("prep-a"), lambda: calls.append("prep-b")]
    timings = measure_interleaved(fns, batch_size=2, warmup=1, iters=2, prepare=prepare)
    assert calls == ["prep-a", "a", "prep-b", "b"] + ["prep-a", "a", "prep-b", "b"] * 2
    assert [len(t.seconds) for t in timings] == [2, 2] and all(t.batch_size == 2 for t in timings)
    with pytest.raises(ValueError, match="prepare hooks"):
        measure_interleaved(fns, 1, prepare=prepare[:1])


def test_out_of_memory_in_one_variant_backs_off_all():
    def make(bs):
        def fail():
            if bs > 1:
                raise torch.OutOfMemoryError("simulated")
        return [lambda: None, fail]

    timings, note = measure_variants_with_backoff(make, 4, warmup=0, iters=1)
    assert [t.batch_size for t in timings] == [1, 1] and note == "out of memory at batch 4; out of memory at batch 2"


def test_iterations_and_machine_state(caplog):
    from bench.run.machine import is_loaded, machine_state, warn_if_loaded, worst_of
    from bench.run.timing import iteration_summary

    s = iteration_summary([1.0, 3.0, 2.0])
    assert (s["n"], s["min"], s["median"], s["max"], s["spread"]) == (3, 1.0, 2.0, 3.0, 1.0)
    assert iteration_summary([2.0])["spread"] is None  # one number says nothing about its noise
    t = measure(lambda: None, 1, warmup=0, iters=2)
    assert t.iterations()["values"] == t.seconds
    state = machine_state()
    assert state["cores"] >= 1 and state["threads"] == torch.get_num_threads() and state["cpu_model"]
    assert is_loaded(5.0, 2) and not is_loaded(1.5, 2) and not is_loaded(None, 2)
    busy_start = dict(state, load_avg_1m=7.0, loaded=True)
    merged = worst_of(busy_start, dict(state, load_avg_1m=0.5, loaded=False))
    assert merged["loaded"] and merged["load_avg_1m"] == 7.0
    warn_if_loaded(dict(state, loaded=True, load_avg_1m=5.0, cores=2), "titok_l32 decode")
    assert "machine loaded while timing titok_l32 decode" in caplog.text
