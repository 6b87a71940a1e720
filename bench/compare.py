"""Regression check between two results files: match records measured the same way, flag what got worse.

Two records match when model, task, weights and protocol agree (volatile fields such as the batch size a
run backed off to are ignored); speed and memory records must also come from the same device. A metric
regressed when it moved the wrong way by more than the tolerance (relative): throughput down, memory or time
up, FID up, PSNR/SSIM/IS down. Unmatched records are reported, not fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

HIGHER_IS_BETTER = ("images_per_sec", "psnr", "ssim", "isc_mean", "precision", "recall")
LOWER_IS_BETTER = ("sec_per_batch", "peak_memory_mb", "nvml_used_mb", "rfid", "gfid", "kid_mean")
VOLATILE = ("batch_size_used", "memory_source", "options_label")  # options_label: a display name of `options`


def _direction(metric: str) -> int:
    name = metric.removeprefix("standin_")
    if name in HIGHER_IS_BETTER:
        return 1
    if name in LOWER_IS_BETTER:
        return -1
    return 0  # informational (params, min/max times)


def match_key(rec: dict) -> str:
    protocol = {k: v for k, v in rec["protocol"].items() if k not in VOLATILE}
    key = {"model": rec["model"], "task": rec["task"], "weights": rec["weights_tag"], "protocol": protocol}
    if rec["task"] in ("speed", "memory"):
        key["device"] = rec["env"].get("device_name")
    return json.dumps(key, sort_keys=True)


@dataclass
class Change:
    model: str
    task: str
    what: str  # op / setting summary
    metric: str
    base: float
    new: float

    @property
    def relative(self) -> float:
        return (self.new - self.base) / abs(self.base) if self.base else float("inf")

    def line(self) -> str:
        return (f"{self.model} {self.task} {self.what}: {self.metric} {self.base:.4g} -> {self.new:.4g} "
                f"({self.relative:+.1%})")


@dataclass
class Report:
    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    matched: int = 0
    only_new: list[str] = field(default_factory=list)
    only_base: list[str] = field(default_factory=list)


def _summary(rec: dict) -> str:
    p = rec["protocol"]
    parts = [str(p[k]) for k in ("op", "resolution", "batch_size", "precision", "options_label")
             if p.get(k) is not None]
    return "/".join(parts) or "-"


def _latest(records: list[dict]) -> dict[str, dict]:
    out = {}
    for r in records:
        if not r.get("error") or r["metrics"]:
            out[match_key(r)] = r  # later records of the same measurement win
    return out


def compare(new: list[dict], base: list[dict], tolerance: float = 0.05,
            metric_tolerance: dict[str, float] | None = None) -> Report:
    metric_tolerance = metric_tolerance or {}
    n, b = _latest(new), _latest(base)
    rep = Report(only_new=[f"{n[k]['model']} {n[k]['task']} {_summary(n[k])}" for k in n.keys() - b.keys()],
                 only_base=[f"{b[k]['model']} {b[k]['task']} {_summary(b[k])}" for k in b.keys() - n.keys()])
    for key in n.keys() & b.keys():
        rn, rb = n[key], b[key]
        rep.matched += 1
        for metric, vb in rb["metrics"].items():
            vn = rn["metrics"].get(metric)
            d = _direction(metric)
            if d == 0 or not isinstance(vn, (int, float)) or not isinstance(vb, (int, float)):
                continue
            tol = metric_tolerance.get(metric, tolerance)
            change = Change(rn["model"], rn["task"], _summary(rn), metric, float(vb), float(vn))
            worse = (vb - vn) * d  # > 0 when the metric moved the wrong way
            if worse > tol * abs(vb):
                rep.regressions.append(change)
            elif -worse > tol * abs(vb):
                rep.improvements.append(change)
    return rep
