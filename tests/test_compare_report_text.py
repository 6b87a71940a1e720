"""What `titok-bench compare` prints, word for word, and the judgments behind its less travelled rows: seconds per
image when the two sides ran other batch sizes, records without a batch size or a spread, one judged metric per kind,
per-metric tolerances, the loaded-machine rows, long error messages and the hints for base records without a partner.
Tests that killed mutmut's survivors in bench/records/compare.py (results/mutation/2026-12-06-compare-streaming-2.md).
"""

from __future__ import annotations

import pytest

from bench.records.compare import (
    ENV_DIFFERS,
    FAILS_NOW,
    IMPROVED,
    LOADED,
    NOT_JUDGED,
    REGRESSION,
    STILL_FAILING,
    UNCHANGED,
    Report,
    Row,
    compare,
    summary_of,
)
from bench.records.store import make_record
from bench.run.env import environment

ENV = environment("cpu")
QUIET = {"load_avg_1m": 0.5, "cores": 2, "loaded": False}
BUSY = {"load_avg_1m": 7.25, "cores": 2, "loaded": True}


def record(metrics: dict, *, task="recon", protocol=None, spreads=None, machine=QUIET, env=ENV, error=None,
           weights="w1", model="m") -> dict:
    rec = make_record(run_id="r", model=model, task=task, commit="c", env=env, machine=machine, metrics=metrics,
                      protocol=protocol if protocol is not None else {"data": "d", "resolution": 256},
                      spreads=spreads, error=error)
    rec["weights_tag"] = weights
    return rec


def speed(sec_per_batch: float, batch: int | None = 4, used: int | None = None, spread=None, machine=QUIET,
          **metrics) -> dict:
    protocol = {"op": "decode", "precision": "fp32", "iters": 3}
    if batch is not None:
        protocol["batch_size"] = batch
    if used is not None:
        protocol["batch_size_used"] = used
    spreads = {"sec_per_batch": spread} if spread else None
    m = {"images_per_sec": (used or batch or 1) / sec_per_batch, "sec_per_batch": sec_per_batch, **metrics}
    return record(m, task="speed", protocol=protocol, spreads=spreads, machine=machine)


def only(rows, metric):
    (r,) = [r for r in rows if r.metric == metric]
    return r


def test_row_lines_word_for_word():
    assert Row(REGRESSION, "m", "recon", "d/256", "rfid", 2.0, 2.5, "why").line() == \
        f"{REGRESSION:<20} m recon d/256: rfid 2 -> 2.5 (+25.0%)  [why]"
    assert Row(UNCHANGED, "m", "recon", "d/256", "psnr", 21.123456, 21.123456).line() == \
        f"{UNCHANGED:<20} m recon d/256: psnr 21.12 -> 21.12 (+0.0%)"
    assert Row(REGRESSION, "m", "recon", "-", "rfid", 2.0, None, "missing").line() == \
        f"{REGRESSION:<20} m recon -: rfid 2 -> -  [missing]"
    assert Row(REGRESSION, "m", "recon", "-", "rfid", None, 3.0).line() == f"{REGRESSION:<20} m recon -: rfid - -> 3"
    assert Row(NOT_JUDGED, "m", "recon", "-", "rfid", note="base value 'x' is not a number").line() == \
        f"{NOT_JUDGED:<20} m recon -: rfid  [base value 'x' is not a number]"
    assert Row(FAILS_NOW, "m", "speed", "-", "").line() == f"{FAILS_NOW:<20} m speed -"
    assert Row(NOT_JUDGED, "m", "recon", "-", "odd", "a", "b").line() == f"{NOT_JUDGED:<20} m recon -: odd a -> b"


def test_summary_word_for_word():
    rep = Report(rows=[Row(REGRESSION, "m", "t", "-", ""), Row(REGRESSION, "m", "t", "-", ""),
                       Row(IMPROVED, "m", "t", "-", "")],
                 matched=3, base_total=4, only_new=["a"], only_base=["b", "c"])
    assert rep.summary() == ("3 of 4 base measurements matched (1 new only, 2 base only); 2 regression, "
                             "1 improved")
    rep = Report(matched=0, base_total=1, retired=["x", "y"])
    assert rep.summary() == ("0 of 1 base measurements matched (0 new only, 0 base only); nothing to judge; 2 "
                             "older-protocol base records left out (the base's later commit measured them again "
                             "under a newer protocol)")


def test_summary_of_names_the_setting_by_todays_option_label():
    import dataclasses

    from titok.inference import DEFAULT, describe

    rec = record({}, task="speed", protocol={"op": "decode", "resolution": 256, "batch_size": 4, "precision": "bf16",
                                             "options": dataclasses.asdict(DEFAULT), "options_label": "old words",
                                             "data": "imagenet"})
    assert summary_of(rec) == f"decode/256/4/bf16/{describe(DEFAULT)}/imagenet"
    legacy = record({}, task="speed", protocol={"op": "decode", "options_label": "old words"})
    assert summary_of(legacy) == "decode/old words"
    assert summary_of(record({}, protocol={})) == "-"


def test_speed_is_judged_per_image_when_the_sides_ran_other_batch_sizes():
    """The new run backed off to batches of 2 (out of memory) at the same time per image as the base's 4."""
    spread = {"n": 3, "min": 0.9, "median": 1.0, "max": 1.1}
    base = speed(1.0, batch=4, spread=spread)
    same_per_image = speed(0.5, batch=4, used=2, spread={"n": 3, "min": 0.45, "median": 0.5, "max": 0.55})
    assert only(compare([same_per_image], [base]).rows, "images_per_sec").verdict == UNCHANGED
    slower = speed(1.0, batch=4, used=2, spread=spread)  # twice the time per image
    r = only(compare([slower], [base]).rows, "images_per_sec")
    assert r.verdict == REGRESSION
    assert r.note == "new best 0.45s slower than base worst 0.275s per image"


def test_records_without_spreads_or_batch_sizes_are_judged_per_image():
    """Older records: no kept iterations, only sec_per_batch (and its min/max); no batch size means one image."""
    base = speed(1.0, batch=None, sec_per_batch_min=0.9, sec_per_batch_max=1.1)
    new = speed(2.0, batch=None, sec_per_batch_min=1.9, sec_per_batch_max=2.1)
    r = only(compare([new], [base]).rows, "images_per_sec")
    assert (r.verdict, r.note) == (REGRESSION, "new best 1.9s slower than base worst 1.1s per image")
    base = speed(1.0, batch=4, sec_per_batch_min=0.9, sec_per_batch_max=1.1)
    new = speed(2.0, batch=4, sec_per_batch_min=1.9, sec_per_batch_max=2.1)
    r = only(compare([new], [base]).rows, "images_per_sec")
    assert (r.verdict, r.note) == (REGRESSION, "new best 0.475s slower than base worst 0.275s per image")
    no_ips = record({"images_per_sec": "x", "sec_per_batch": 1.0}, task="speed",
                    protocol={"op": "decode", "iters": 1})
    new_no_ips = record({"images_per_sec": "y", "sec_per_batch": 2.0}, task="speed",
                        protocol={"op": "decode", "iters": 1})
    rows = compare([new_no_ips], [no_ips]).rows
    assert [r.verdict for r in rows if r.metric == "images_per_sec"] == [NOT_JUDGED]


def test_a_median_of_zero_seconds_is_judged_without_a_spread_not_divided_by():
    spread0 = {"n": 3, "min": 0.0, "median": 0.0, "max": 0.0}
    base, new = speed(1.0, spread=spread0), speed(1.0, spread=spread0)
    base["metrics"]["images_per_sec"] = new["metrics"]["images_per_sec"] = 1e9
    assert only(compare([new], [base]).rows, "images_per_sec").verdict == UNCHANGED
    legacy0 = record({"images_per_sec": 1e9, "sec_per_batch": 0.0, "sec_per_batch_min": 0.0,
                      "sec_per_batch_max": 0.0}, task="speed", protocol={"op": "decode", "batch_size": 4, "iters": 3})
    assert only(compare([legacy0], [legacy0]).rows, "images_per_sec").verdict == UNCHANGED


def test_a_per_metric_tolerance_applies_to_speed():
    base = speed(1.0, spread={"n": 3, "min": 0.99, "median": 1.0, "max": 1.01})
    new = speed(1.2, spread={"n": 3, "min": 1.19, "median": 1.2, "max": 1.21})
    assert only(compare([new], [base]).rows, "images_per_sec").verdict == REGRESSION
    assert only(compare([new], [base], metric_tolerance={"images_per_sec": 0.5}).rows,
                "images_per_sec").verdict == UNCHANGED


def test_a_loaded_machine_is_named_only_where_it_could_explain_the_change():
    quiet = {"n": 3, "min": 0.99, "median": 1.0, "max": 1.01}
    base = speed(1.0, spread=quiet)
    same_busy = speed(1.0, spread=quiet, machine=BUSY)
    assert only(compare([same_busy], [base]).rows, "images_per_sec").verdict == UNCHANGED  # no change to explain
    assert only(compare([base], [same_busy]).rows, "images_per_sec").verdict == UNCHANGED
    slower_busy = speed(2.0, spread={"n": 3, "min": 1.99, "median": 2.0, "max": 2.01}, machine=BUSY)
    r = only(compare([slower_busy], [base]).rows, "images_per_sec")
    assert r.verdict == LOADED
    assert r.note == ("new machine loaded: load 7.2 on 2 cores; new best 0.4975s slower than base worst 0.2525s per "
                      "image; rerun on a quiet machine")


def test_one_judged_metric_per_kind_and_stand_in_apart():
    base = record({"rfid": 2.0, "standin_rfid": 30.0, "gfid": 5.0})
    new = record({"rfid": 4.0, "standin_rfid": 60.0, "gfid": 10.0})
    rows = compare([new], [base]).rows
    assert sorted(r.metric for r in rows) == ["rfid", "standin_rfid"]  # gfid is the same kind as rfid: once
    assert {r.verdict for r in rows} == {REGRESSION}


def test_long_errors_are_cut_in_the_notes():
    long_error = "E" * 500
    ok = record({"rfid": 2.0})
    failed = record({}, error=long_error)
    assert only(compare([failed], [failed]).rows, "").note == "E" * 200
    assert only(compare([failed], [ok]).rows, "").note == "worked in the base; now: " + "E" * 200
    r = only(compare([ok], [failed]).rows, "")
    assert (r.verdict, r.note) == (IMPROVED, "works now; base: " + "E" * 120)
    assert only(compare([failed], [failed]).rows, "").verdict == STILL_FAILING


def test_a_change_on_another_machine_names_the_difference():
    other = dict(ENV, device="cuda", torch="9.9")
    base = record({"peak_memory_mb": 100.0}, task="speed", protocol={"op": "decode"})
    new = record({"peak_memory_mb": 200.0}, task="speed", protocol={"op": "decode"}, env=other)
    r = only(compare([new], [base]).rows, "peak_memory_mb")
    assert r.verdict == ENV_DIFFERS
    assert r.note == f"device {ENV['device']} -> cuda, torch {ENV['torch']} -> 9.9"


@pytest.mark.parametrize("case", ["weights", "protocol", "closest", "not run"])
def test_the_hint_for_a_base_record_without_a_partner(case):
    base = record({"rfid": 2.0}, protocol={"data": "d", "resolution": 256, "batch_size_used": 8})
    if case == "weights":  # the weights differ too: named first
        new = [record({"rfid": 2.0}, protocol={"data": "e", "resolution": 256}, weights="w2")]
        want = "other protocol: m recon weights 'w2' here vs 'w1' in the base"
    elif case == "protocol":  # a key the base has and the new record lacks; batch_size_used is volatile
        new = [record({"rfid": 2.0}, protocol={"data": "d", "batch_size_used": 4})]
        want = "other protocol: m recon resolution None here vs 256 in the base"
    elif case == "closest":  # of two candidates the one with fewer differences, the first of equals
        new = [record({"rfid": 2.0}, protocol={"data": "x", "resolution": 512}),
               record({"rfid": 2.0}, protocol={"data": "y", "resolution": 256}),
               record({"rfid": 2.0}, protocol={"data": "z", "resolution": 256})]
        want = "other protocol: m recon data 'y' here vs 'd' in the base"
    else:
        new = [record({"rfid": 2.0}, model="other")]
        want = "m recon was not run"
    rep = compare(new, [base])
    assert rep.matched == 0 and want in rep.mismatch_hints, rep.mismatch_hints


def test_stand_in_metrics_of_one_kind_are_judged_once_too():
    rows = compare([record({"standin_rfid": 60.0, "standin_gfid": 10.0})],
                   [record({"standin_rfid": 30.0, "standin_gfid": 5.0})]).rows
    assert [r.metric for r in rows] == ["standin_rfid"]


def test_rows_are_ordered_by_severity_then_size_of_change():
    base = [record({"rfid": 2.0}, model="a"), record({"rfid": 2.0}, model="b"), record({"psnr": 20.0}, model="c"),
            record({"psnr": 20.0}, model="d")]
    new = [record({"rfid": 2.2}, model="a"), record({"rfid": 3.0}, model="b"), record({"psnr": 20.0}, model="c"),
           record({"psnr": 20.1}, model="d")]
    rows = compare(new, base, tolerance=0.05).rows
    assert [(r.verdict, r.model) for r in rows] == [(REGRESSION, "b"), (REGRESSION, "a"), (UNCHANGED, "d"),
                                                    (UNCHANGED, "c")]


def test_unmatched_base_records_hint_once_each_and_another_environment_first():
    other = dict(ENV, device="cuda")
    base = [record({"rfid": 2.0}, model="gone", protocol={"data": "d"}),
            record({"rfid": 2.0}, model="gone", protocol={"data": "e"}), record({"rfid": 2.0})]
    rep = compare([record({"rfid": 2.0}, env=other)], base)
    assert rep.mismatch_hints == [f"other environment (device {ENV['device']} -> cuda)", "gone recon was not run"]
    assert compare([], base).mismatch_hints == ["gone recon was not run", "m recon was not run"]
    assert compare([record({"rfid": 2.0})], []).rows == [] and compare([], []).summary().startswith("0 of 0")
