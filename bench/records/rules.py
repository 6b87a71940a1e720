"""Which way is better for every metric the harness writes, and which metrics are one measurement.

`compare`, `history` and `bisect` judge a change by these rules. Direction +1: higher is better (IS, PSNR, SSIM,
throughput, precision, recall, codebook use); -1: lower is better (FID, KID, memory, counted FLOPs); 0: shown but
never judged, because it is another view of a judged number (seconds per batch is 1 / images per second, achieved
TFLOP/s follows throughput, perplexity is 2 ** entropy), a property rather than a result (parameters), or a wall
time of an evaluation, which depends on the machine's load and is not a benchmark protocol.

A metric name missing here has no direction: `compare` reports it as "not judged", and tests/test_metric_rules.py
fails for any name a task writes without a rule, so a new metric cannot pass unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass

STANDIN_PREFIX = "standin_"  # numbers from the seeded stand-in Inception: judged like their real namesakes


@dataclass(frozen=True)
class MetricRule:
    direction: int  # +1 higher is better, -1 lower is better, 0 informational (never judged)
    kind: str  # what it measures; a record shows one judged metric per kind
    why: str = ""


HIGHER, LOWER, INFO = 1, -1, 0

RULES: dict[str, MetricRule] = {
    # speed records (bench/run/timing.py, bench/run/flops.py)
    "images_per_sec": MetricRule(HIGHER, "speed", "judged against the per-iteration times (spreads.sec_per_batch)"),
    "sec_per_batch": MetricRule(INFO, "speed", "1 / images_per_sec: the same measurement"),
    "sec_per_batch_min": MetricRule(INFO, "speed", "part of the spread of images_per_sec"),
    "sec_per_batch_max": MetricRule(INFO, "speed", "part of the spread of images_per_sec"),
    "achieved_tflops": MetricRule(INFO, "speed", "counted FLOPs x images_per_sec"),
    "peak_fraction": MetricRule(INFO, "speed", "achieved_tflops / the device's peak"),
    "gflop_per_image": MetricRule(LOWER, "flops", "counted, not timed: more arithmetic per image is a change"),
    "params_m": MetricRule(INFO, "size", "a property of the model, not a result"),
    "peak_memory_mb": MetricRule(LOWER, "memory"),
    "nvml_used_mb": MetricRule(INFO, "memory", "the device as NVML sees it, other processes included"),
    # evaluation records (bench/run/tasks/recon.py, gen.py, stats.py, bench/metrics/image_sets.py,
    # bench/metrics/streaming.py)
    "fid": MetricRule(LOWER, "fid"),
    "rfid": MetricRule(LOWER, "fid"),
    "gfid": MetricRule(LOWER, "fid"),
    "sfid": MetricRule(LOWER, "sfid"),
    "isc_mean": MetricRule(HIGHER, "inception score"),
    "isc_std": MetricRule(INFO, "inception score", "spread over the 10 splits, not an uncertainty of the mean"),
    "kid_mean": MetricRule(LOWER, "kid"),
    "kid_std": MetricRule(INFO, "kid", "spread over the subsets"),
    "precision": MetricRule(HIGHER, "precision"),
    "recall": MetricRule(HIGHER, "recall"),
    "psnr": MetricRule(HIGHER, "psnr"),
    "ssim": MetricRule(HIGHER, "ssim"),
    "codebook_usage": MetricRule(HIGHER, "codebook usage"),
    "codebook_entropy_bits": MetricRule(HIGHER, "codebook entropy"),
    "codebook_perplexity": MetricRule(INFO, "codebook entropy", "2 ** codebook_entropy_bits"),
    "peak_host_mb": MetricRule(LOWER, "host memory"),
    "peak_device_mb": MetricRule(LOWER, "device memory"),
    "eval_wall_s": MetricRule(INFO, "wall time", "depends on the machine's load; speed records measure speed"),
    "sampling_wall_s": MetricRule(INFO, "wall time", "depends on the machine's load; speed records measure speed"),
    "wall_s": MetricRule(INFO, "wall time", "depends on the machine's load; speed records measure speed"),
}

# Judged through the records' per-iteration times rather than as plain numbers.
SPEED_METRICS = frozenset({"images_per_sec"})
# Depend on the software and machine as much as on the code: a change across environments is not a regression.
MACHINE_METRICS = frozenset({"images_per_sec", "peak_memory_mb", "peak_host_mb", "peak_device_mb"})


def rule_for(metric: str) -> MetricRule | None:
    """The rule of a metric name (stand-in numbers share their namesake's), or None when it has none."""
    return RULES.get(metric.removeprefix(STANDIN_PREFIX))
