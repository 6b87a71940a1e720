"""Regression check between two results files that a busy machine cannot fool.

Records match when model, task, weights and protocol agree (volatile fields such as the batch size a run backed
off to aside); the latest record of each measurement in each file is used. Every metric has a direction
(bench/records/rules.py); a record shows one judged metric per kind, so throughput is judged once, not again as
seconds per batch. The noise rule:

* Speed (images/sec) is judged on the per-iteration times a record keeps (`spreads.sec_per_batch`, or the
  `sec_per_batch_min`/`_max` metrics of older records). It got slower only when the new run's fastest iteration
  is slower than the base's slowest by more than the speed tolerance (15%), and faster only when the new run's
  slowest beats the base's fastest by as much. 15%, not less: a record's iterations are seconds apart, while a
  shared machine drifts by about 15% from minute to minute (measured: the smoke rerun's TiTok-BL-128 encode took
  0.549-0.616 s against the base's 0.465-0.483 s, and two reruns minutes later 0.500-0.505 and 0.477-0.486 s),
  and a real 20% slowdown with spreads of a few percent still exceeds it. A drift of a few percent, or a noisy
  run, falls inside the two records' own spreads. Where either record has fewer than two iterations ("base has
  no spread"), the medians are compared with a wider tolerance, max(speed tolerance, 25%), and the row says so.
* A slowdown is called "machine loaded", not a regression, when the new record's machine was loaded (one-minute
  load average above its cores) or its iterations spread by more than 25% of their median (what 2-4x load
  does); an apparent speed-up is called so when the base's was. Load only ever slows a run down, so a loaded
  base does not excuse a slowdown, nor a loaded new run an improvement.
* Speed and memory changes between different environments (device, CPU, threads, torch) are "environment
  differs", not regressions.
* Memory must change by more than the memory tolerance: 10% (relative) for a GPU's allocator peak, 30% for a CPU's
  peak resident set, other metrics by more than the tolerance (5%, relative). A CPU peak counts the whole process, and
  a decode's transient activations land partly in heap pages the earlier rows of the run left resident (glibc's arenas
  and its dynamic mmap threshold), so the same code in the same suite order moved by up to 20% between runs
  (maskgit_torch_vqgan_512 decode 2295, 2640 and 2757 MB in three runs, its encode 2254-2274 MB; titok_s128 decode
  1400 and 1556 MB, every other encode within 1%), and the same row run alone peaks 26-40% lower (1666-1702 MB in
  three fresh processes). 30% is that drift with a margin; a real 35% growth is still a regression. Where records
  carry an uncertainty (`spreads[metric].std`: seed repeats or a bootstrap), a change must also exceed twice the
  combined standard deviation, sqrt(std_base^2 + std_new^2), so FID within its own uncertainty is not a regression.
* Nothing passes unchecked: a measurement that worked in the base and now carries an error, a judged metric
  that is missing or not a number now, is a regression. A comparison that matched no base measurement, or fewer
  than `min_matched` of them (default half), is an error that says why (`coverage_error`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.records.rules import MACHINE_METRICS, SPEED_METRICS, rule_for
from bench.records.store import VOLATILE, latest_records, measurement_key, record_time, superseded
from titok.errors import InputError

SPEED_TOLERANCE = 0.15  # a real slowdown this large must show beyond both records' spreads (minute-scale drift)
MEMORY_TOLERANCE = 0.10  # a GPU's allocator peak counts tensors only and repeats to the byte
# Peak RSS on a CPU counts the whole process (interpreter, libraries, allocator caches) and moves with what ran
# before in it by up to 20% on the same code (module docstring): judged with this wider tolerance.
HOST_MEMORY_TOLERANCE = 0.30
MEMORY_KINDS = ("memory", "host memory", "device memory")
NO_SPREAD_TOLERANCE = 0.25  # medians alone, with no spread to judge noise by: minute-to-minute drift is ~15%
WIDE_SPREAD = 0.25  # (max - min) / median of a run's iterations beyond which it was not timed on a quiet machine
UNCERTAINTY_SIGMAS = 2.0
MIN_MATCHED_SHARE = 0.5
ENV_FIELDS = ("device", "device_name", "cpu", "threads", "torch")

# Verdicts, most severe first; only the first two make `compare` exit 1.
FAILS_NOW, REGRESSION = "FAILS NOW", "REGRESSION"
LOADED, ENV_DIFFERS, NOT_JUDGED, STILL_FAILING = "machine loaded", "environment differs", "not judged", "still failing"
IMPROVED, UNCHANGED = "improved", "unchanged"
SEVERITY = (FAILS_NOW, REGRESSION, LOADED, ENV_DIFFERS, NOT_JUDGED, STILL_FAILING, IMPROVED, UNCHANGED)


class CoverageError(InputError):
    """The new results cover too little of the base to say anything: another protocol or environment."""


@dataclass
class Row:
    verdict: str
    model: str
    task: str
    what: str  # op / setting summary
    metric: str
    base: float | None = None
    new: float | None = None
    note: str = ""

    @property
    def relative(self) -> float | None:
        if self.base is None or self.new is None or not _finite(self.base) or not _finite(self.new):
            return None
        return (self.new - self.base) / abs(self.base) if self.base else math.inf

    def line(self) -> str:
        values = ""
        if self.base is not None or self.new is not None:
            values = f": {self.metric} {_num(self.base)} -> {_num(self.new)}"
            if self.relative is not None:
                values += f" ({self.relative:+.1%})"
        elif self.metric:
            values = f": {self.metric}"
        note = f"  [{self.note}]" if self.note else ""
        return f"{self.verdict:<20} {self.model} {self.task} {self.what}{values}{note}"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    matched: int = 0
    base_total: int = 0
    only_new: list[str] = field(default_factory=list)
    only_base: list[str] = field(default_factory=list)
    mismatch_hints: list[str] = field(default_factory=list)  # why base measurements found no partner
    retired: list[str] = field(default_factory=list)  # base measurements its own later commit redid otherwise

    def having(self, *verdicts: str) -> list[Row]:
        return [r for r in self.rows if r.verdict in verdicts]

    @property
    def regressions(self) -> list[Row]:
        return self.having(FAILS_NOW, REGRESSION)

    @property
    def improvements(self) -> list[Row]:
        return self.having(IMPROVED)

    def summary(self) -> str:
        counts = ", ".join(f"{len(self.having(v))} {v.lower()}" for v in SEVERITY if self.having(v))
        retired = (f"; {len(self.retired)} older-protocol base records left out (the base's later commit "
                   f"measured them again under a newer protocol)") if self.retired else ""
        return (f"{self.matched} of {self.base_total} base measurements matched "
                f"({len(self.only_new)} new only, {len(self.only_base)} base only); {counts or 'nothing to judge'}"
                f"{retired}")

    def coverage_error(self, min_share: float = MIN_MATCHED_SHARE) -> str | None:
        """Why this comparison checked too little to pass (None when it covers enough of the base)."""
        if self.base_total and self.matched >= max(1, math.ceil(min_share * self.base_total)):
            return None
        why = "; ".join(self.mismatch_hints[:3]) or "no record of the new file measures what the base measured"
        return (f"only {self.matched} of {self.base_total} base measurements matched (at least {min_share:.0%} "
                f"needed; --min-matched to change); {len(self.only_base)} have no partner here: {why}")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _num(x) -> str:
    return "-" if x is None else f"{x:.4g}" if isinstance(x, (int, float)) else str(x)


def _number(x) -> float | None:
    """A metric value as a float (records keep inf/nan as strings), or None when it is not a number at all."""
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return None
    return None


def _options_label(protocol: dict) -> str | None:
    """The options' label as this version names them: a record keeps the label of its day, and older records
    call today's defaults by their parts ("attention=sdpa+cfg_batched+..."), which reads as another setting."""
    from titok.inference import InferenceOptions, describe

    try:
        return describe(InferenceOptions.from_dict(protocol["options"]))
    except (KeyError, TypeError, ValueError):
        return protocol.get("options_label")


def summary_of(rec: dict) -> str:
    p = dict(rec["protocol"], options_label=_options_label(rec["protocol"]))
    parts = [str(p[k]) for k in ("op", "resolution", "batch_size", "precision", "options_label", "data")
             if p.get(k) is not None]
    return "/".join(parts) or "-"


def _env_difference(new: dict, base: dict) -> str:
    diffs = [f"{k} {base['env'].get(k)} -> {new['env'].get(k)}" for k in ENV_FIELDS
             if new["env"].get(k) != base["env"].get(k)]
    return ", ".join(diffs)


# ------------------------------------------------------------------------------------------------ speed
@dataclass
class Iterations:
    median: float
    low: float | None  # fastest iteration (seconds), None without a spread
    high: float | None
    spread: float | None


def _iterations(rec: dict) -> Iterations | None:
    """Seconds per image of a speed record's iterations: its kept iterations, else the min/max metrics older
    records have. Per image, not per batch: a run that backed off to a smaller batch on out-of-memory times
    smaller batches."""
    s = (rec.get("spreads") or {}).get("sec_per_batch")
    m, p = rec["metrics"], rec["protocol"]
    bs = p.get("batch_size_used") or p.get("batch_size") or 1
    if isinstance(s, dict) and _finite(s.get("median")):
        if (s.get("n") or 0) >= 2 and _finite(s.get("min")) and _finite(s.get("max")) and s["median"] > 0:
            return Iterations(s["median"] / bs, s["min"] / bs, s["max"] / bs, (s["max"] - s["min"]) / s["median"])
        return Iterations(s["median"] / bs, None, None, None)
    median = _number(m.get("sec_per_batch"))
    if median is None:
        ips = _number(m.get("images_per_sec"))
        if not ips:
            return None
        median = bs / ips
    low, high = _number(m.get("sec_per_batch_min")), _number(m.get("sec_per_batch_max"))
    if (p.get("iters") or 0) >= 2 and low is not None and high is not None and median > 0:
        return Iterations(median / bs, low / bs, high / bs, (high - low) / median)
    return Iterations(median / bs, None, None, None)


def _load_note(rec: dict, it: Iterations, side: str) -> str:
    """Why a side's timing is not to be trusted ("" when it was taken on a quiet machine)."""
    machine = rec.get("machine") or {}
    if machine.get("loaded"):
        load = machine.get("load_avg_1m")
        load = f"{load:.1f}" if _finite(load) else "?"
        return f"{side} machine loaded: load {load} on {machine.get('cores')} cores"
    if it.spread is not None and it.spread > WIDE_SPREAD:
        return f"{side} iterations spread {it.spread:.0%}"
    return ""


def _judge_speed(rn: dict, rb: dict, tolerance: float) -> tuple[int, str]:
    """(+1 faster, -1 slower, 0 within noise, and a note) from the two records' iterations."""
    n, b = _iterations(rn), _iterations(rb)
    if n is None or b is None:
        return 0, "no timings"
    if None not in (n.low, n.high, b.low, b.high):
        if n.low > b.high * (1 + tolerance):
            return -1, f"new best {n.low:.4g}s slower than base worst {b.high:.4g}s per image"
        if n.high * (1 + tolerance) < b.low:
            return 1, f"new worst {n.high:.4g}s faster than base best {b.low:.4g}s per image"
        return 0, ""
    tol = max(tolerance, NO_SPREAD_TOLERANCE)
    missing = "base has no spread" if b.low is None else "new has no spread"
    if n.median > b.median * (1 + tol):
        return -1, f"{missing}: medians judged with {tol:.0%} tolerance"
    if n.median * (1 + tol) < b.median:
        return 1, f"{missing}: medians judged with {tol:.0%} tolerance"
    return 0, missing


# ------------------------------------------------------------------------------------------ one metric
def _uncertainty(rec: dict, metric: str) -> float | None:
    s = (rec.get("spreads") or {}).get(metric)
    return float(s["std"]) if isinstance(s, dict) and _finite(s.get("std")) else None


def _judge_value(metric: str, vn: float, vb: float, direction: int, tolerance: float, rn: dict,
                 rb: dict) -> tuple[int, str]:
    if vn == vb:  # inf == inf (identical images' PSNR) included
        return 0, ""
    if not math.isfinite(vb) or not math.isfinite(vn):
        return (direction if vn > vb else -direction), "not finite"
    threshold, note = tolerance * abs(vb), ""
    sn, sb = _uncertainty(rn, metric), _uncertainty(rb, metric)
    if sn is not None or sb is not None:
        combined = math.hypot(sn if sn is not None else sb, sb if sb is not None else sn)
        if UNCERTAINTY_SIGMAS * combined > threshold:
            threshold = UNCERTAINTY_SIGMAS * combined
            note = f"uncertainty +-{combined:.3g} (std, combined)"
    better = (vn - vb) * direction
    if better > threshold:
        return 1, note
    if -better > threshold:
        return -1, note
    return 0, note


def _compare_pair(rn: dict, rb: dict, tolerance: float, speed_tolerance: float, memory_tolerance: float | None,
                  metric_tolerance: dict[str, float]) -> list[Row]:
    what = summary_of(rn)

    def row(verdict, metric="", base=None, new=None, note=""):
        return Row(verdict, rn["model"], rn["task"], what, metric, base, new, note)

    if rn.get("error"):
        if rb.get("error"):
            return [row(STILL_FAILING, note=str(rn["error"])[:200])]
        return [row(FAILS_NOW, note=f"worked in the base; now: {str(rn['error'])[:200]}")]
    if rb.get("error"):
        return [row(IMPROVED, note=f"works now; base: {str(rb['error'])[:120]}")]
    env_diff = _env_difference(rn, rb)
    rows, kinds_seen = [], set()
    for metric, raw_base in rb["metrics"].items():
        rule = rule_for(metric)
        if rule is None:
            rows.append(row(NOT_JUDGED, metric, _number(raw_base), _number(rn["metrics"].get(metric)),
                            "no direction known for this metric"))
            continue
        if rule.direction == 0 or (rule.kind, metric.startswith("standin_")) in kinds_seen:
            continue
        kinds_seen.add((rule.kind, metric.startswith("standin_")))
        vb = _number(raw_base)
        if vb is None:
            rows.append(row(NOT_JUDGED, metric, note=f"base value {raw_base!r} is not a number"))
            continue
        if metric not in rn["metrics"]:
            rows.append(row(REGRESSION, metric, vb, None, "measured in the base, missing now"))
            continue
        vn = _number(rn["metrics"][metric])
        if vn is None or (math.isnan(vn) and not math.isnan(vb)):
            rows.append(row(REGRESSION, metric, vb, vn, f"not a number now: {rn['metrics'][metric]!r}"))
            continue
        if metric in SPEED_METRICS:
            moved, note = _judge_speed(rn, rb, metric_tolerance.get(metric, speed_tolerance))
            new_it, base_it = _iterations(rn), _iterations(rb)
            if moved < 0 and new_it and (why := _load_note(rn, new_it, "new")):
                rows.append(row(LOADED, metric, vb, vn, f"{why}; {note}; rerun on a quiet machine"))
                continue
            if moved > 0 and base_it and (why := _load_note(rb, base_it, "base")):
                rows.append(row(LOADED, metric, vb, vn, f"{why}; {note}"))
                continue
        else:
            default = (tolerance if rule.kind not in MEMORY_KINDS else
                       _memory_tolerance(metric, rb, memory_tolerance))
            moved, note = _judge_value(metric, vn, vb, rule.direction, metric_tolerance.get(metric, default), rn, rb)
        if moved and env_diff and metric.removeprefix("standin_") in MACHINE_METRICS:
            rows.append(row(ENV_DIFFERS, metric, vb, vn, env_diff))
            continue
        verdict = REGRESSION if moved < 0 else IMPROVED if moved > 0 else UNCHANGED
        rows.append(row(verdict, metric, vb, vn, note))
    return rows


def _memory_tolerance(metric: str, rec: dict, given: float | None) -> float:
    """The tolerance of a memory metric: the one given, else the host's (a process's peak RSS: `peak_host_mb`,
    and `peak_memory_mb` of a CPU record) or the device allocator's."""
    if given is not None:
        return given
    host = metric == "peak_host_mb" or (metric == "peak_memory_mb" and rec["env"].get("device") == "cpu")
    return HOST_MEMORY_TOLERANCE if host else MEMORY_TOLERANCE


def _mismatch_hint(rb: dict, new: list[dict]) -> str | None:
    """The first protocol field (or environment) in which the closest new record differs from a base record."""
    same = [r for r in new if r["model"] == rb["model"] and r["task"] == rb["task"]]
    if not same:
        return f"{rb['model']} {rb['task']} was not run"
    pb = {k: v for k, v in rb["protocol"].items() if k not in VOLATILE}
    best = None
    for r in same:
        pn = {k: v for k, v in r["protocol"].items() if k not in VOLATILE}
        diffs = [k for k in sorted(pb.keys() | pn.keys()) if pb.get(k) != pn.get(k)]
        if r["weights_tag"] != rb["weights_tag"]:
            diffs.insert(0, "weights")
        if best is None or len(diffs) < len(best[0]):
            best = (diffs, r)
    diffs, r = best
    if not diffs:
        return None
    k = diffs[0]
    vb, vn = (rb["weights_tag"], r["weights_tag"]) if k == "weights" else (pb.get(k), r["protocol"].get(k))
    return f"other protocol: {rb['model']} {rb['task']} {k} {vn!r} here vs {vb!r} in the base"


def compare(new: list[dict], base: list[dict], tolerance: float = 0.05,
            metric_tolerance: dict[str, float] | None = None, speed_tolerance: float = SPEED_TOLERANCE,
            memory_tolerance: float | None = None) -> Report:
    """Judge every base measurement against its latest rerun in `new` (see the module docstring for the rule)."""
    metric_tolerance = metric_tolerance or {}
    # The latest record of each measurement (one environment's or another's: whichever ran last).
    n = {measurement_key(r): r for r in sorted(latest_records(new), key=record_time)}
    b = {measurement_key(r): r for r in sorted(latest_records(base), key=record_time)}
    # A base file that holds two commits' runs keeps the older run's records of measurements the newer run made
    # under a newer protocol (sampling settings written out, another resize). A fresh run cannot match them and
    # need not: they are left out, unless the new file still has them (an old commit compared with the base).
    retired = {measurement_key(r) for r in superseded(list(b.values()))} - n.keys()
    retired_records = [b.pop(k) for k in sorted(retired)]
    rep = Report(base_total=len(b),
                 only_new=sorted(f"{n[k]['model']} {n[k]['task']} {summary_of(n[k])}" for k in n.keys() - b.keys()),
                 only_base=sorted(f"{b[k]['model']} {b[k]['task']} {summary_of(b[k])}" for k in b.keys() - n.keys()),
                 retired=sorted(f"{r['model']} {r['task']} {summary_of(r)}" for r in retired_records))
    for key in sorted(b.keys() - n.keys()):
        hint = _mismatch_hint(b[key], list(n.values()))
        if hint and hint not in rep.mismatch_hints:
            rep.mismatch_hints.append(hint)
    envs_new = {_env_difference(r, next(iter(b.values()))) for r in n.values()} if b else set()
    if b and n and all(envs_new):
        rep.mismatch_hints.insert(0, f"other environment ({sorted(envs_new)[0]})")
    for key in n.keys() & b.keys():
        rep.matched += 1
        rep.rows += _compare_pair(n[key], b[key], tolerance, speed_tolerance, memory_tolerance, metric_tolerance)
    rep.rows.sort(key=lambda r: (SEVERITY.index(r.verdict), -abs(r.relative or 0.0), r.model, r.what, r.metric))
    return rep
