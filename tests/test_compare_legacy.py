"""How `compare` reads a speed record's iterations: batches, two-iteration spreads (the smoke suite's), records
from before spreads were kept, and the words of its rows. Tests that killed mutmut's survivors in
bench/compare.py `_iterations` and `_compare_pair` (results/mutation/)."""

from __future__ import annotations

from bench.compare import FAILS_NOW, LOADED, REGRESSION, UNCHANGED, compare
from bench.env import environment
from bench.records import make_record
from bench.timing import iteration_summary

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
