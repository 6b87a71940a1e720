"""The one helper through which every speed and memory number is taken.

Warm-up runs first (allocator, kernels, caches), then timed iterations, each synchronised: CUDA events on a GPU,
perf_counter on the CPU. Peak memory is reset before and read after: torch's allocator peak and NVML's device
view on a GPU; the process's peak resident set (VmHWM, reset through /proc/self/clear_refs) on the CPU.
Out-of-memory backs the batch size off and is recorded, never fatal.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
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

    def to_dict(self) -> dict:
        return asdict(self)


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


def measure(fn: Callable[[], object], batch_size: int, device: str | torch.device = "cpu", warmup: int = 1,
            iters: int = 3) -> Timing:
    """Time `fn` (one batch of work) after `warmup` calls; returns per-iteration seconds and peak memory."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_reset = (not cuda) and _reset_rss_peak()
    seconds = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            seconds.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - t0)
    t = Timing(batch_size, seconds, warmup)
    if cuda:
        t.peak_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
        t.memory_source = "torch.cuda.max_memory_allocated"
        t.nvml_used_mb = _nvml_used_mb(device)
    else:
        kb = _read_vmhwm_kb()
        if kb is not None:
            t.peak_memory_mb = kb / 1024
            t.memory_source = "peak RSS (VmHWM, reset before timing)" if rss_reset else "peak RSS of the process"
    return t


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def measure_with_backoff(make_fn: Callable[[int], Callable[[], object]], batch_size: int, device="cpu",
                         warmup: int = 1, iters: int = 3) -> tuple[Timing | None, str | None]:
    """Measure at `batch_size`, halving it on out-of-memory; returns (timing or None, error note or None)."""
    notes = []
    bs = batch_size
    while bs >= 1:
        try:
            return measure(make_fn(bs), bs, device, warmup, iters), ("; ".join(notes) or None)
        except Exception as exc:
            if not is_oom(exc):
                raise
            notes.append(f"out of memory at batch {bs}")
            log.warning("out of memory at batch size %d; backing off", bs)
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
            bs //= 2
    return None, "; ".join(notes)
