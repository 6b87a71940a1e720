"""The machine's state while a speed measurement runs: load, cores, CPU model and clock, threads.

A timing is only as good as the machine it was taken on. Shared machines drift by 15% from minute to minute
and run 2-4x slower when other jobs compete for the cores, so every speed record carries this block, and
`compare` reads it to say "machine loaded" instead of "regression" when that is the honest answer.

Loaded means the one-minute load average exceeds the cores this process may run on: our own threads count
towards the load, so with `threads <= cores` a load above `cores` means other jobs were waiting for the CPUs
we timed on.
"""

from __future__ import annotations

import logging
import os

import torch

from bench.run.env import cpu_model

log = logging.getLogger(__name__)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_mhz() -> float | None:
    """Mean current clock over the cores (cpufreq where the kernel exposes it, else /proc/cpuinfo), or None."""
    try:
        freqs = []
        base = "/sys/devices/system/cpu"
        for name in sorted(os.listdir(base)):
            path = os.path.join(base, name, "cpufreq", "scaling_cur_freq")
            if name.startswith("cpu") and os.path.isfile(path):
                with open(path) as f:
                    freqs.append(int(f.read()) / 1000)
        if freqs:
            return sum(freqs) / len(freqs)
        with open("/proc/cpuinfo") as f:
            freqs = [float(line.split(":", 1)[1]) for line in f if line.startswith("cpu MHz")]
        return sum(freqs) / len(freqs) if freqs else None
    except (OSError, ValueError):
        return None


def machine_state() -> dict:
    """{load_avg_1m, load_avg_5m, cores, threads, cpu_model, cpu_mhz, loaded}; fields the OS hides are None."""
    try:
        load1, load5, _ = os.getloadavg()
    except OSError:
        load1 = load5 = None
    cores = _usable_cores()
    return {"load_avg_1m": load1, "load_avg_5m": load5, "cores": cores, "threads": torch.get_num_threads(),
            "cpu_model": cpu_model(), "cpu_mhz": _cpu_mhz(), "loaded": is_loaded(load1, cores)}


def is_loaded(load_avg_1m: float | None, cores: int) -> bool:
    return load_avg_1m is not None and load_avg_1m > cores


def warn_if_loaded(state: dict, what: str) -> None:
    if state.get("loaded"):
        log.warning("machine loaded while timing %s: load average %.1f over %d cores; its timings are noisy and "
                    "`compare` will not call their changes regressions", what, state["load_avg_1m"], state["cores"])


def worst_of(before: dict, after: dict) -> dict:
    """The state over a measurement from readings at its start and end: the higher load, loaded if either was.
    The one-minute average lags, so a long measurement needs both ends to see load that left before it ended."""
    out = dict(after)
    for key in ("load_avg_1m", "load_avg_5m"):
        values = [v for v in (before.get(key), after.get(key)) if v is not None]
        out[key] = max(values) if values else None
    out["loaded"] = bool(before.get("loaded") or after.get("loaded"))
    return out
