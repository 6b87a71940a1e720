"""`compare` at its exact edges and in the words it prints: tests that killed mutmut's survivors in
bench/records/compare.py (results/mutation/). Values are chosen exactly representable in binary, so "at the bound"
means equal."""

from __future__ import annotations

import numpy as np
import pytest

from bench.metrics.streaming import RunningGaussian
from bench.records.compare import IMPROVED, LOADED, REGRESSION, UNCHANGED, Report, compare
from bench.records.store import make_record
from bench.run.env import environment
from bench.run.timing import iteration_summary

ENV = environment("cpu")
QUIET = {"load_avg_1m": 0.5, "load_avg_5m": 0.5, "cores": 2, "threads": 2, "cpu_model": "x", "cpu_mhz": None,
         "loaded": False}


def speed(seconds: list[float] | None, machine: dict = QUIET, ips: float | None = None) -> dict:
    metrics, spreads = {"peak_memory_mb": 100.0}, None
    if seconds is not None:
        med = sorted(seconds)[len(seconds) // 2]
        metrics.update(images_per_sec=1 / med, sec_per_batch=med)
        spreads = {"sec_per_batch": iteration_summary(seconds)}
    if ips is not None:
        metrics["images_per_sec"] = ips
    return make_record(run_id="r", model="m", task="speed", commit="c", env=ENV, machine=machine, metrics=metrics,
                       protocol={"op": "decode", "batch_size": 1, "precision": "fp32", "iters": 3}, spreads=spreads)


def row(new: dict, base: dict, **kw):
    (r,) = [r for r in compare([new], [base], **kw).rows if r.metric == "images_per_sec"]
    return r


def test_speed_exactly_at_the_bound_is_not_a_change():
    base = speed([1.0, 1.0, 1.0])
    at_slow = speed([1.25, 1.25, 1.25])  # fastest new == slowest base x 1.25
    assert row(at_slow, base, speed_tolerance=0.25).verdict == UNCHANGED
    at_fast = speed([1.0, 1.0, 1.0])
    assert row(at_fast, speed([1.25, 1.25, 1.25]), speed_tolerance=0.25).verdict == UNCHANGED


def test_a_spread_of_exactly_25_percent_still_counts_as_quiet():
    wide_at_bound = speed([1.75, 2.0, 2.25])  # (2.25 - 1.75) / 2.0 = 0.25 exactly
    r = row(wide_at_bound, speed([1.0, 1.0, 1.0]))
    assert r.verdict == REGRESSION and r.note == "new best 1.75s slower than base worst 1s per image"


def test_notes_name_the_side_and_the_numbers():
    base = speed([1.0, 1.0, 1.0])
    assert row(speed([1.01, 1.0, 1.02]), base).note == ""  # within the spreads: nothing to say
    assert row(speed([0.5, 0.5, 0.5]), base).note == "new worst 0.5s faster than base best 1s per image"
    single = speed([1.0])
    assert row(speed([1.0]), single).note == "base has no spread"
    assert row(single, base).note == "new has no spread"
    assert row(speed([2.0]), base).note == "new has no spread: medians judged with 25% tolerance"
    busy = dict(QUIET, load_avg_1m=None, loaded=True)  # a machine that said loaded but hid its load average
    r = row(speed([2.0, 2.0, 2.0], machine=busy), base)
    assert r.verdict == LOADED and r.note.startswith("new machine loaded: load ? on 2 cores;")


def test_a_side_without_timings_is_said_and_not_judged():
    no_timings = speed(None, ips=0.0)  # no iterations, no seconds, a zero rate: nothing to time by
    for new, base in ((no_timings, speed([1.0, 1.0, 1.0])), (speed([1.0, 1.0, 1.0]), no_timings)):
        r = row(new, base)
        assert (r.verdict, r.note) == (UNCHANGED, "no timings")


def test_coverage_error_names_at_most_three_reasons_or_says_none_matched():
    rep = Report(matched=0, base_total=5, only_base=list("abcde"), mismatch_hints=["h1", "h2", "h3", "h4"])
    assert rep.coverage_error() == ("only 0 of 5 base measurements matched (at least 50% needed; --min-matched to "
                                    "change); 5 have no partner here: h1; h2; h3")
    rep = Report(matched=0, base_total=2, only_base=["a", "b"])
    assert rep.coverage_error().endswith(
        "2 have no partner here: no record of the new file measures what the base measured")


def test_running_gaussian_needs_two_samples_and_takes_two():
    g = RunningGaussian(2)
    g.update(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="covariance needs at least 2 samples, got 1"):
        g.statistics()
    g.update(np.array([[3.0, 7.0]]))
    np.testing.assert_allclose(g.statistics()[1], np.cov(np.array([[1.0, 2.0], [3.0, 7.0]]), rowvar=False))


def value(v: float, metric: str = "psnr", std: float | None = None) -> dict:
    spreads = {metric: {"std": std, "n": 5, "method": "seed repeats"}} if std is not None else None
    return make_record(run_id="r", model="m", task="recon", commit="c", env=ENV, metrics={metric: v},
                       protocol={"data": "d"}, spreads=spreads)


def judged(new: dict, base: dict, **kw):
    (r,) = compare([new], [base], **kw).rows
    return r.verdict, r.note


def test_values_equal_exactly_at_the_bound_and_not_finite():
    assert judged(value(4.0), value(4.0), tolerance=0.0) == (UNCHANGED, "")
    assert judged(value(5.0), value(4.0), tolerance=0.25) == (UNCHANGED, "")  # +1.0 == 25% of 4: not beyond
    assert judged(value(3.0), value(4.0), tolerance=0.25) == (UNCHANGED, "")
    assert judged(value(3.0), value(4.0), tolerance=0.2)[0] == REGRESSION
    inf = float("inf")
    assert judged(value(inf), value(inf)) == (UNCHANGED, "")  # identical images both times
    assert judged(value(30.0), value(inf)) == (REGRESSION, "not finite")  # PSNR: higher is better
    assert judged(value(inf), value(30.0)) == (IMPROVED, "not finite")
    assert judged(value(inf, "rfid"), value(3.0, "rfid")) == (REGRESSION, "not finite")  # FID: lower is better
    assert judged(value(3.0, "rfid"), value(inf, "rfid")) == (IMPROVED, "not finite")


def test_an_uncertainty_is_named_and_an_infinite_one_is_ignored():
    assert judged(value(3.2, "gfid", 0.3), value(3.0, "gfid", 0.4)) == (UNCHANGED, "uncertainty +-0.5 (std, combined)")
    assert judged(value(3.3, "gfid", float("inf")), value(3.0, "gfid")) == (REGRESSION, "")  # +10% > 5%
    # twice the combined std (2 x hypot(0.3, 0.4) = 1.0) exactly equal to the tolerance (25% of 4.0): not named
    assert judged(value(4.5, std=0.3), value(4.0, std=0.4), tolerance=0.25) == (UNCHANGED, "")


def test_medians_exactly_at_the_no_spread_bound_are_not_a_change():
    one = speed([1.0])
    assert row(speed([1.25]), one).verdict == UNCHANGED  # 1.25 == 1.0 x (1 + 25%)
    assert row(one, speed([1.25])).verdict == UNCHANGED
    assert row(speed([1.25]), one).note == "base has no spread"


def test_bootstrap_replicate_counts_and_seed():
    from bench.metrics.streaming import BootstrapGaussians

    with pytest.raises(ValueError, match="a bootstrap needs at least 2 replicates, got 1"):
        BootstrapGaussians(2, 1)
    x = np.random.default_rng(0).normal(size=(50, 2))
    two, seeded = BootstrapGaussians(2, 2), BootstrapGaussians(2, 2, seed=7)
    two.update(x)
    seeded.update(x)
    assert two.statistics(1)[0].shape == (2,)
    assert not np.allclose(two.statistics(0)[0], seeded.statistics(0)[0])  # the seed is used
    # a replicate that drew exactly 2 images has a covariance; one that drew 1 does not
    b = BootstrapGaussians(2, 2)
    b.weight[:] = [2.0, 1.0]
    b.m2[0] = np.eye(2)
    np.testing.assert_array_equal(b.statistics(0)[1], np.eye(2))
    with pytest.raises(ValueError, match="bootstrap replicate 1 drew fewer than 2 images"):
        b.statistics(1)
