"""How `compare` reads a speed record's iterations: batches, two-iteration spreads (the smoke suite's), records
from before spreads were kept, and the words of its rows. Tests that killed mutmut's survivors in
bench/records/compare.py `_iterations` and `_compare_pair` (results/mutation/)."""

from __future__ import annotations

import math

from bench.records.compare import FAILS_NOW, LOADED, REGRESSION, UNCHANGED, compare
from bench.records.store import make_record
from bench.run.env import environment
from bench.run.timing import iteration_summary

ENV = environment("cpu")
QUIET = {"load_avg_1m": 0.5, "load_avg_5m": 0.5, "cores": 2, "threads": 2, "cpu_model": "x", "cpu_mhz": None,
         "loaded": False}


def record(metrics: dict, iters: int = 3, batch: int = 1, seconds: list[float] | None = None, **protocol) -> dict:
    spreads = {"sec_per_batch": iteration_summary(seconds)} if seconds is not None else None
    return make_record(run_id="r", model="m", task="speed", commit="c", env=ENV, machine=QUIET, metrics=metrics,
                       spreads=spreads, protocol={"op": "decode", "batch_size": batch, "precision": "fp32",
                                                  "resolution": 256, "iters": iters, **protocol})


def speed_row(new: dict, base: dict):
    (r,) = [r for r in compare([new], [base]).rows if r.metric == "images_per_sec"]
    return r


def timed(seconds: list[float], batch: int = 1, **kw) -> dict:
    med = sorted(seconds)[len(seconds) // 2]
    return record({"images_per_sec": batch / med, "sec_per_batch": med}, batch=batch, seconds=seconds, **kw)


def test_notes_are_per_image_at_the_batch_size_asked_for():
    r = speed_row(timed([2.0, 2.0, 2.0], batch=4), timed([1.0, 1.0, 1.0], batch=4))
    assert r.note == "new best 0.5s slower than base worst 0.25s per image"
    r = speed_row(timed([2.0], batch=4), timed([1.0], batch=4))
    assert r.verdict == REGRESSION and r.note == "base has no spread: medians judged with 25% tolerance"
    # one side's fastest 4x smaller per image only if divided by the batch on both ends of the spread
    r = speed_row(timed([1.0, 1.0, 1.2], batch=4), timed([1.0, 1.0, 1.0], batch=4))
    assert r.verdict == UNCHANGED


def test_two_iterations_are_a_spread():
    """The smoke suite times 2 iterations: that is a spread, not "no spread"."""
    r = speed_row(timed([1.5, 1.6]), timed([1.0, 1.02]))
    assert r.verdict == REGRESSION and r.note.startswith("new best 1.5s slower than base worst 1.02s")
    one = dict(timed([1.0, 1.02]), spreads={"sec_per_batch": dict(iteration_summary([1.0]), n=None)})
    assert speed_row(timed([1.0, 1.02]), one).note == "base has no spread"


def legacy(median: float, low: float | None = None, high: float | None = None, iters: int = 3,
           ips_only: bool = False, batch: int = 1) -> dict:
    """A record from before spreads were kept: sec_per_batch and its min/max as metrics."""
    m = {"images_per_sec": batch / median}
    if not ips_only:
        m["sec_per_batch"] = median
    if low is not None:
        m["sec_per_batch_min"] = low
    if high is not None:
        m["sec_per_batch_max"] = high
    return record(m, iters=iters, batch=batch)


def test_legacy_records_with_and_without_their_min_and_max():
    assert speed_row(legacy(1.5, 1.5, 1.6), legacy(1.0, 0.99, 1.02)).note.startswith(
        "new best 1.5s slower than base worst 1.02s")
    assert speed_row(legacy(1.5, 1.5, 1.6, iters=2), legacy(1.0, 0.99, 1.02, iters=2)).verdict == REGRESSION
    # one timed iteration, or no min/max, or only one of them: medians
    for base in (legacy(1.0, 0.9, 1.1, iters=1), legacy(1.0), legacy(1.0, high=1.1)):
        r = speed_row(legacy(1.2, 1.2, 1.2, iters=base["protocol"]["iters"]), base)
        assert (r.verdict, r.note) == (UNCHANGED, "base has no spread"), base["metrics"]
    # a legacy spread against a record with none: the medians
    r = speed_row(legacy(2.0, iters=3), legacy(1.0, 0.99, 1.02, iters=3))
    assert (r.verdict, r.note) == (REGRESSION, "new has no spread: medians judged with 25% tolerance")
    # the spread of a legacy record tells load: (1.6 - 1.0) / 1.5 = 40%
    r = speed_row(legacy(1.5, 1.0, 1.6), legacy(0.5, 0.5, 0.51))
    assert r.verdict == LOADED and "new iterations spread 40%" in r.note


def test_a_record_with_only_images_per_sec_is_timed_by_it():
    base = legacy(1.0, ips_only=True, batch=2)
    assert speed_row(legacy(1.2, ips_only=True, batch=2), base).verdict == UNCHANGED
    r = speed_row(legacy(1.4, ips_only=True, batch=2), base)
    assert (r.verdict, r.note) == (REGRESSION, "base has no spread: medians judged with 25% tolerance")


def test_rows_say_what_was_measured_and_nothing_else():
    base = timed([1.0, 1.0, 1.0])
    rows = compare([timed([1.0, 1.0, 1.0])], [base]).rows
    assert {r.what for r in rows} == {"decode/256/1/fp32"} and {r.note for r in rows} == {""}
    broken = dict(timed([1.0, 1.0, 1.0]), error="RuntimeError: boom", metrics={})
    (r,) = compare([broken], [base]).rows
    assert (r.verdict, r.metric, r.base, r.new) == (FAILS_NOW, "", None, None)
    assert r.line() == f"{FAILS_NOW:<20} m speed decode/256/1/fp32  [worked in the base; now: RuntimeError: boom]"


def test_batches_divide_on_every_path_and_two_legacy_iterations_are_a_spread():
    assert speed_row(timed([1.0, 1.0, 1.0], batch=4), timed([1.0], batch=4)).verdict == UNCHANGED
    assert speed_row(timed([1.0], batch=4), legacy(1.0, batch=4)).verdict == UNCHANGED
    assert speed_row(legacy(1.0, batch=4), timed([1.0], batch=4)).verdict == UNCHANGED
    assert speed_row(legacy(1.0, 0.99, 1.02, batch=4), legacy(1.0, 0.99, 1.02, batch=4)).verdict == UNCHANGED
    # 20% slower with tight spreads of two iterations: beyond the spreads (15%), though within 25% on medians
    assert speed_row(legacy(1.2, 1.2, 1.21, iters=2), legacy(1.0, 0.99, 1.02, iters=2)).verdict == REGRESSION


def evaluation(metrics: dict, error: str | None = None, env: dict = ENV) -> dict:
    return make_record(run_id="r", model="m", task="recon", commit="c", env=env, metrics=metrics,
                       protocol={"data": "d"}, error=error)


def test_every_path_records_its_values_and_goes_on_to_the_next_metric():
    from bench.records.compare import IMPROVED, NOT_JUDGED, STILL_FAILING

    base = evaluation({"made_up": 1.0, "psnr": "n/a", "ssim": 0.5, "isc_mean": 100.0, "kid_mean": 0.01,
                       "precision": 0.8})
    new = evaluation({"made_up": 2.0, "psnr": 20.0, "isc_mean": "nan", "kid_mean": 0.02, "precision": 0.5})
    got = {r.metric: (r.verdict, r.base, r.new, r.note) for r in compare([new], [base]).rows}
    assert got["made_up"] == (NOT_JUDGED, 1.0, 2.0, "no direction known for this metric")
    assert got["psnr"] == (NOT_JUDGED, None, None, "base value 'n/a' is not a number")
    assert got["ssim"] == (REGRESSION, 0.5, None, "measured in the base, missing now")
    assert got["isc_mean"][:2] == (REGRESSION, 100.0) and math.isnan(got["isc_mean"][2])
    assert got["isc_mean"][3] == "not a number now: 'nan'"
    assert got["kid_mean"] == (REGRESSION, 0.01, 0.02, "")
    assert got["precision"] == (REGRESSION, 0.8, 0.5, "")  # judged after all the paths above
    # errors on either side
    (r,) = compare([evaluation({}, error="E: still")], [evaluation({}, error="E: then")]).rows
    assert (r.verdict, r.note) == (STILL_FAILING, "E: still")
    (r,) = compare([evaluation({"psnr": 20.0})], [evaluation({}, error="E: then")]).rows
    assert (r.verdict, r.note) == (IMPROVED, "works now; base: E: then")
    # a per-metric tolerance is that metric's
    assert compare([evaluation({"psnr": 18.0})], [evaluation({"psnr": 20.0})],
                   metric_tolerance={"psnr": 0.2}).rows[0].verdict == UNCHANGED


def test_loaded_and_other_environment_rows_keep_both_values_and_the_next_metric():
    from bench.records.compare import ENV_DIFFERS, IMPROVED

    busy = dict(QUIET, load_avg_1m=6.0, loaded=True)
    base = record({"images_per_sec": 1.0, "sec_per_batch": 1.0, "peak_memory_mb": 100.0}, seconds=[1.0, 1.0, 1.0])
    slow = record({"images_per_sec": 0.5, "sec_per_batch": 2.0, "peak_memory_mb": 200.0}, seconds=[2.0, 2.0, 2.0])
    slow["machine"] = busy
    got = {r.metric: (r.verdict, r.base, r.new) for r in compare([slow], [base]).rows}
    assert got == {"images_per_sec": (LOADED, 1.0, 0.5), "peak_memory_mb": (REGRESSION, 100.0, 200.0)}
    loaded_base = dict(base, machine=busy)
    fast = record({"images_per_sec": 2.0, "sec_per_batch": 0.5, "peak_memory_mb": 200.0}, seconds=[0.5, 0.5, 0.5])
    got = {r.metric: (r.verdict, r.base, r.new, r.note) for r in compare([fast], [loaded_base]).rows}
    assert got["images_per_sec"][:3] == (LOADED, 1.0, 2.0) and got["images_per_sec"][3].startswith(
        "base machine loaded: load 6.0 on 2 cores; new worst")
    assert got["peak_memory_mb"][:3] == (REGRESSION, 100.0, 200.0)
    other = dict(fast, env=dict(ENV, torch="9.9"))
    got = {r.metric: (r.verdict, r.base, r.new) for r in compare([other], [base]).rows}
    assert got == {"images_per_sec": (ENV_DIFFERS, 1.0, 2.0), "peak_memory_mb": (ENV_DIFFERS, 100.0, 200.0)}
    rows = compare([dict(fast, machine=busy)], [base]).rows
    assert {r.metric: r.verdict for r in rows}["images_per_sec"] == IMPROVED  # load never speeds a run up
