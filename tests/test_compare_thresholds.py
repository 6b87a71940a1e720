"""`compare`'s bounds, each probed just inside and just outside, with the documented numbers written here.

The module docstring of bench/records/compare.py promises: speed 15% beyond both records' spreads (25% on medians
where a record has no spread), memory 10% on a GPU's allocator and 30% for a CPU's peak resident set, other metrics
5%, and twice the combined std where records carry one. A bound moved in the code (or a `>` turned `>=` far enough to
matter) makes one of the pairs below flip, so these numbers change only together with the README and the docstring.
"""

from __future__ import annotations

import copy

import pytest

from bench.records.compare import IMPROVED, LOADED, REGRESSION, UNCHANGED, compare
from bench.records.store import make_record
from bench.run.env import environment
from bench.run.timing import iteration_summary

ENV = environment("cpu")
QUIET = {"load_avg_1m": 0.5, "load_avg_5m": 0.5, "cores": 2, "threads": 2, "cpu_model": "x", "cpu_mhz": None,
         "loaded": False}
SPEED, NO_SPREAD, MEMORY, HOST_MEMORY, OTHER, SIGMAS, WIDE = 0.15, 0.25, 0.10, 0.30, 0.05, 2.0, 0.25
EPS = 1e-3  # relative step on either side of a bound: far above float rounding, far below any real change


def speed(seconds: list[float], mem: float = 1000.0, device: str = "cpu") -> dict:
    med = sorted(seconds)[len(seconds) // 2]
    return make_record(run_id="r", model="m", task="speed", commit="c", env=dict(ENV, device=device), machine=QUIET,
                       metrics={"images_per_sec": 1 / med, "sec_per_batch": med, "peak_memory_mb": mem},
                       protocol={"op": "decode", "batch_size": 1, "precision": "fp32", "iters": 3},
                       spreads={"sec_per_batch": iteration_summary(seconds)})


def quality(value: float, metric: str = "gfid", std: float | None = None) -> dict:
    spreads = {metric: {"std": std, "n": 20, "method": "poisson-bootstrap over images"}} if std is not None else None
    return make_record(run_id="r", model="m", task="gen", commit="c", env=ENV, metrics={metric: value},
                       protocol={"num_samples": 50, "seed": 0}, spreads=spreads)


def verdict(new: dict, base: dict, metric: str) -> str:
    (row,) = [r for r in compare([new], [base]).rows if r.metric == metric]
    return row.verdict


def test_speed_bound_is_15_percent_beyond_both_spreads():
    base = speed([0.98, 1.00, 1.02])  # worst 1.02 s, best 0.98 s
    worst, best = 1.02, 0.98
    inside = worst * (1 + SPEED) * (1 - EPS)
    outside = worst * (1 + SPEED) * (1 + EPS)
    assert verdict(speed([inside, inside * 1.01, inside * 1.02]), base, "images_per_sec") == UNCHANGED
    assert verdict(speed([outside, outside * 1.01, outside * 1.02]), base, "images_per_sec") == REGRESSION
    # faster: the new run's worst must beat the base's best by the same 15%
    inside = best / (1 + SPEED) * (1 + EPS)
    outside = best / (1 + SPEED) * (1 - EPS)
    assert verdict(speed([inside * 0.98, inside * 0.99, inside]), base, "images_per_sec") == UNCHANGED
    assert verdict(speed([outside * 0.98, outside * 0.99, outside]), base, "images_per_sec") == IMPROVED


def test_speed_without_spread_is_judged_on_medians_with_25_percent():
    base = speed([1.0])
    assert verdict(speed([(1 + NO_SPREAD) * (1 - EPS)]), base, "images_per_sec") == UNCHANGED
    assert verdict(speed([(1 + NO_SPREAD) * (1 + EPS)]), base, "images_per_sec") == REGRESSION
    assert verdict(speed([1 / (1 + NO_SPREAD) * (1 + EPS)]), base, "images_per_sec") == UNCHANGED
    assert verdict(speed([1 / (1 + NO_SPREAD) * (1 - EPS)]), base, "images_per_sec") == IMPROVED
    # one side with a spread, the other without: still medians, still 25%
    assert verdict(speed([1.2, 1.21, 1.22]), base, "images_per_sec") == UNCHANGED


def test_a_slowdown_is_excused_as_load_only_beyond_a_25_percent_spread():
    base = speed([1.0, 1.0, 1.0])
    d = 2.0 * WIDE / 2  # [2 - d, 2, 2 + d] spreads (max - min) / median = 25% exactly
    wide = speed([2.0 - d * 1.02, 2.0, 2.0 + d * 1.02])  # just above 25%
    narrow = speed([2.0 - d * 0.98, 2.0, 2.0 + d * 0.98])  # just below
    assert verdict(wide, base, "images_per_sec") == LOADED
    assert verdict(narrow, base, "images_per_sec") == REGRESSION


@pytest.mark.parametrize(("device", "bound"), [("cpu", HOST_MEMORY), ("cuda", MEMORY)])
@pytest.mark.parametrize("mem", [1000.0, 37.5])
def test_memory_bound_is_10_percent_on_a_gpu_and_30_on_a_cpu(mem, device, bound):
    base = speed([1.0, 1.0, 1.0], mem=mem, device=device)
    for factor, expected in (((1 + bound) * (1 - EPS), UNCHANGED), ((1 + bound) * (1 + EPS), REGRESSION),
                             ((1 - bound) * (1 + EPS), UNCHANGED), ((1 - bound) * (1 - EPS), IMPROVED)):
        new = speed([1.0, 1.0, 1.0], mem=mem * factor, device=device)
        assert verdict(new, base, "peak_memory_mb") == expected, factor


def test_host_peak_of_an_evaluation_has_the_cpu_bound_and_a_given_tolerance_overrides_both():
    def evaluation(host: float, device: float) -> dict:
        return make_record(run_id="r", model="m", task="recon", commit="c", env=dict(ENV, device="cuda"),
                           metrics={"peak_host_mb": host, "peak_device_mb": device}, protocol={"data": "d"})

    base = evaluation(1000.0, 1000.0)
    rep = compare([evaluation(1000.0 * (1 + HOST_MEMORY) * (1 - EPS), 1000.0 * (1 + MEMORY) * (1 + EPS))], [base])
    assert {r.metric: r.verdict for r in rep.rows} == {"peak_host_mb": UNCHANGED, "peak_device_mb": REGRESSION}
    rep = compare([evaluation(1000.0 * 1.15, 1000.0 * 1.15)], [base], memory_tolerance=0.2)
    assert {r.verdict for r in rep.rows} == {UNCHANGED}
    rep = compare([evaluation(1000.0 * 1.15, 1000.0 * 1.05)], [base], memory_tolerance=0.1)
    assert {r.metric: r.verdict for r in rep.rows} == {"peak_host_mb": REGRESSION, "peak_device_mb": UNCHANGED}


@pytest.mark.parametrize(("metric", "direction"), [("gfid", -1), ("rfid", -1), ("standin_rfid", -1),
                                                   ("psnr", 1), ("isc_mean", 1)])
def test_quality_bound_is_5_percent_without_an_uncertainty(metric, direction):
    base = quality(3.0, metric)
    for step, moved in ((1 - EPS, 0), (1 + EPS, 1)):
        for sign in (1, -1):  # worse and better
            new = quality(3.0 * (1 + sign * OTHER * step), metric)
            expected = UNCHANGED if not moved else REGRESSION if sign * direction < 0 else IMPROVED
            assert verdict(new, base, metric) == expected, (step, sign)


def test_fid_bound_is_twice_the_combined_std_when_larger_than_5_percent():
    combined = (0.3**2 + 0.4**2) ** 0.5  # 0.5: 2 x 0.5 = 1.0, far above 5% of 3.0
    base = quality(3.0, std=0.3)
    assert verdict(quality(3.0 + SIGMAS * combined * (1 - EPS), std=0.4), base, "gfid") == UNCHANGED
    assert verdict(quality(3.0 + SIGMAS * combined * (1 + EPS), std=0.4), base, "gfid") == REGRESSION
    assert verdict(quality(3.0 - SIGMAS * combined * (1 + EPS), std=0.4), base, "gfid") == IMPROVED
    # Only one side carries a std: it stands for both (sqrt(2) x std), not for one.
    one = (2 * 0.3**2) ** 0.5
    assert verdict(quality(3.0 + SIGMAS * one * (1 - EPS)), base, "gfid") == UNCHANGED
    assert verdict(quality(3.0 + SIGMAS * one * (1 + EPS)), base, "gfid") == REGRESSION
    assert verdict(quality(3.0 + SIGMAS * one * (1 - EPS), std=0.3), quality(3.0), "gfid") == UNCHANGED
    # A tiny std does not shrink the 5% floor.
    tight = quality(3.0, std=0.001)
    assert verdict(quality(3.0 * (1 + OTHER * (1 - EPS)), std=0.001), tight, "gfid") == UNCHANGED
    assert verdict(quality(3.0 * (1 + OTHER * (1 + EPS)), std=0.001), tight, "gfid") == REGRESSION


def test_coverage_needs_half_of_the_base():
    base = [copy.deepcopy(speed([1.0, 1.0, 1.0])) for _ in range(4)]
    for i, r in enumerate(base):
        r["model"] = f"m{i}"
    assert compare(base[:2], base).coverage_error() is None  # 2 of 4: exactly half passes
    assert "only 1 of 4" in compare(base[:1], base).coverage_error()
