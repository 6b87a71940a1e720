"""The one helper through which every speed and memory number is taken.

Warm-up runs first (allocator, kernels, caches), then timed iterations, each synchronised: CUDA events on a GPU,
perf_counter on the CPU. Peak memory is reset before and read after: torch's allocator peak and NVML's device
view on a GPU; the process's peak resident set (VmHWM, reset through /proc/self/clear_refs) on the CPU.
Out-of-memory backs the batch size off and is recorded, never fatal. Variants of one op (inference options) are
timed in interleaved rounds, so a drift of a shared machine's speed does not land between them.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

log = logging.getLogger(__name__)


@dataclass
class Timing:
    batch_size: int
    seconds: list[float]  # per timed iteration
    warmup: int
    peak_memory_mb: float | None = None  # torch allocator peak (GPU) or peak RSS (CPU)
    memory_source: str = ""
    nvml_used_mb: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def items_per_sec(self) -> float:
        return self.batch_size / self.median_s

    def as_metrics(self) -> dict:
        m = {"images_per_sec": self.items_per_sec, "sec_per_batch": self.median_s,
             "sec_per_batch_min": min(self.seconds), "sec_per_batch_max": max(self.seconds)}
        if self.peak_memory_mb is not None:
            m["peak_memory_mb"] = self.peak_memory_mb
        if self.nvml_used_mb is not None:
            m["nvml_used_mb"] = self.nvml_used_mb
        return m

    def iterations(self) -> dict:
        """The timed iterations as a record keeps them (`spreads.sec_per_batch`): every value, n, min, median,
        max and the relative spread (max - min) / median, which `compare` reads as the measurement's own noise.
        One iteration has no spread (None): a single number says nothing about how much it moves."""
        return iteration_summary(self.seconds)

    def to_dict(self) -> dict:
        return asdict(self)


def iteration_summary(values: Sequence[float]) -> dict:
    """{values, n, min, median, max, spread} of repeated measurements; spread is None below two values."""
    values = [float(v) for v in values]
    median = statistics.median(values)
    spread = (max(values) - min(values)) / median if len(values) > 1 and median > 0 else None
    return {"values": values, "n": len(values), "min": min(values), "median": median, "max": max(values),
            "spread": spread}


def _read_vmhwm_kb() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    try:  # hand freed heap back to the OS first, so earlier models' memory does not count as this one's
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory over work longer than one timed call (an evaluation over a data set), taken the way the timed
    calls take it: reset when made (the host's VmHWM, and torch's allocator peak on CUDA), read by `read()`.
    Records get the peak of their own work, not the process's lifetime peak (`ru_maxrss` never resets)."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        _reset_rss_peak()

    def read(self) -> dict[str, float]:
        """{"peak_host_mb": the process's resident-set peak, "peak_device_mb": the allocator's peak on CUDA}."""
        out = {}
        kb = _read_vmhwm_kb()
        if kb is not None:
            out["peak_host_mb"] = kb / 1024
        if self.device.type == "cuda":
            out["peak_device_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return out


def _nvml_used_mb(device: torch.device) -> float | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            return pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def _timed_call(fn: Callable[[], object], device: torch.device) -> tuple[float, float | None, str, float | None]:
    """One synchronised call: (seconds, peak memory in MB, its source, NVML's used MB on a GPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return (start.elapsed_time(end) / 1000.0, torch.cuda.max_memory_allocated(device) / 2**20,
                "torch.cuda.max_memory_allocated", _nvml_used_mb(device))
    rss_reset = _reset_rss_peak()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    kb = _read_vmhwm_kb()
    source = "peak RSS (VmHWM, reset before timing)" if rss_reset else "peak RSS of the process"
    return seconds, (kb / 1024 if kb is not None else None), source, None


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def measure_interleaved(fns: Sequence[Callable[[], object]], batch_size: int, device: str | torch.device = "cpu",
                        warmup: int = 1, iters: int = 3,
                        prepare: Sequence[Callable[[], object] | None] | None = None) -> list[Timing]:
    """Time several variants of one piece of work in rounds: variant 1, 2, ..., k, then again, `iters` times.

    On a shared machine speed drifts (other jobs, clocks, heat); timing the variants one after another would put a
    drift between them and into their ratio. In rounds it falls on every variant alike. `prepare[i]`, if given,
    runs (untimed) before each call of variant i, e.g. to switch a model's inference options.
    """
    device = torch.device(device)
    prepare = list(prepare) if prepare is not None else [None] * len(fns)
    if len(prepare) != len(fns):
        raise ValueError(f"got {len(prepare)} prepare hooks for {len(fns)} variants")
    for fn, prep in zip(fns, prepare, strict=True):
        for _ in range(warmup):
            if prep is not None:
                prep()
            fn()
    timings = [Timing(batch_size, [], warmup) for _ in fns]
    for _ in range(iters):
        for fn, prep, t in zip(fns, prepare, timings, strict=True):
            if prep is not None:
                prep()
            seconds, peak, source, nvml = _timed_call(fn, device)
            t.seconds.append(seconds)
            t.peak_memory_mb, t.memory_source = _max(t.peak_memory_mb, peak), source
            t.nvml_used_mb = _max(t.nvml_used_mb, nvml)
    return timings


def measure(fn: Callable[[], object], batch_size: int, device: str | torch.device = "cpu", warmup: int = 1,
            iters: int = 3) -> Timing:
    """Time `fn` (one batch of work) after `warmup` calls; returns per-iteration seconds and peak memory."""
    return measure_interleaved([fn], batch_size, device, warmup, iters)[0]


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def measure_variants_with_backoff(make_fns: Callable[[int], Sequence[Callable[[], object]]], batch_size: int,
                                  device="cpu", warmup: int = 1, iters: int = 3,
                                  prepare: Sequence[Callable[[], object] | None] | None = None,
                                  ) -> tuple[list[Timing] | None, str | None]:
    """`measure_interleaved` at `batch_size`, halving it (for every variant) on out-of-memory.

    Returns (timings or None, error note or None); `make_fns(bs)` builds the variants' calls for a batch size.
    """
    notes = []
    bs = batch_size
    while bs >= 1:
        try:
            return measure_interleaved(make_fns(bs), bs, device, warmup, iters, prepare), ("; ".join(notes) or None)
        except Exception as exc:
            if not is_oom(exc):
                raise
            notes.append(f"out of memory at batch {bs}")
            log.warning("out of memory at batch size %d; backing off", bs)
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
            bs //= 2
    return None, "; ".join(notes)


def measure_with_backoff(make_fn: Callable[[int], Callable[[], object]], batch_size: int, device="cpu",
                         warmup: int = 1, iters: int = 3) -> tuple[Timing | None, str | None]:
    """Measure at `batch_size`, halving it on out-of-memory; returns (timing or None, error note or None)."""
    timings, note = measure_variants_with_backoff(lambda bs: [make_fn(bs)], batch_size, device, warmup, iters)
    return (timings[0] if timings else None), note
