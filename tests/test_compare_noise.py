"""`compare` decides with the noise: planted load is not a regression, a planted slowdown with tight spreads is,
FID within its recorded uncertainty is not; failures and thin coverage never pass unchecked."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import pytest

from bench.cli import main
from bench.records.compare import ENV_DIFFERS, FAILS_NOW, IMPROVED, LOADED, REGRESSION, UNCHANGED, compare
from bench.records.store import append_record, make_record
from bench.run.env import environment
from bench.run.timing import iteration_summary

ENV = environment("cpu")
QUIET = {"load_avg_1m": 0.5, "load_avg_5m": 0.5, "cores": 2, "threads": 2, "cpu_model": "x", "cpu_mhz": None,
         "loaded": False}
SMOKE = Path(__file__).parent.parent / "results" / "smoke-cpu-amd-epyc-2threads-torch2.14.1.jsonl"


def timed(seconds: list[float], model="titok_l32", op="decode", machine=QUIET, env=ENV, mem=100.0) -> dict:
    """A speed record as bench/run/tasks/speed.py writes it, from planted per-iteration times (batch 1)."""
    med = statistics.median(seconds)
    return make_record(run_id="r", model=model, task="speed", commit="c", env=env, machine=machine,
                       metrics={"images_per_sec": 1 / med, "sec_per_batch": med, "sec_per_batch_min": min(seconds),
                                "sec_per_batch_max": max(seconds), "peak_memory_mb": mem, "params_m": 5.0},
                       protocol={"op": op, "batch_size": 1, "precision": "fp32", "resolution": 256,
                                 "iters": 5 if len(seconds) > 1 else 1},  # the suite's setting: part of the protocol
                       spreads={"sec_per_batch": iteration_summary(seconds)})


def gen(gfid: float, std: float | None = None, model="titok_l32") -> dict:
    spreads = {"gfid": {"std": std, "n": 5, "method": "seed repeats"}} if std is not None else None
    return make_record(run_id="r", model=model, task="gen", commit="c", env=ENV, spreads=spreads,
                       metrics={"gfid": gfid, "isc_mean": 100.0, "eval_wall_s": 10.0},
                       protocol={"num_samples": 50000, "seed": 0, "resolution": 256})


BASE = [1.00, 1.02, 0.99, 1.01, 1.00]


def verdicts(rep) -> dict[str, str]:
    return {r.metric: r.verdict for r in rep.rows}


def test_a_rerun_under_2_to_4x_load_is_not_a_regression():
    loaded = timed([2.1, 3.9, 2.7, 3.3, 2.4])  # other jobs on the cores: 2-4x slower, widely spread
    rep = compare([loaded], [timed(BASE)])
    assert verdicts(rep)["images_per_sec"] == LOADED and not rep.regressions
    assert "spread" in rep.rows[0].note
    # A tight but slow rerun whose machine says it was loaded: also not called a regression.
    busy = dict(QUIET, load_avg_1m=6.3, loaded=True)
    rep = compare([timed([2.0, 2.02, 2.01], machine=busy)], [timed(BASE)])
    assert verdicts(rep)["images_per_sec"] == LOADED and "load 6.3 on 2 cores" in rep.rows[0].note


def test_a_20_percent_slowdown_with_tight_spreads_is_a_regression():
    slower = timed([s * 1.2 for s in BASE])
    rep = compare([slower], [timed(BASE)])
    assert [(r.verdict, r.metric) for r in rep.regressions] == [(REGRESSION, "images_per_sec")]  # once, not twice
    assert rep.regressions[0].relative == pytest.approx(1 / 1.2 - 1)
    assert "slower than base worst" in rep.regressions[0].note


def test_drift_within_the_spreads_is_unchanged_and_a_loaded_base_excuses_no_slowdown():
    assert verdicts(compare([timed([s * 1.06 for s in BASE])], [timed(BASE)]))["images_per_sec"] == UNCHANGED
    loaded_base = timed([1.5, 1.9, 1.7], machine=dict(QUIET, load_avg_1m=5.0, loaded=True))
    assert verdicts(compare([timed([2.5, 2.52, 2.51])], [loaded_base]))["images_per_sec"] == REGRESSION
    # ... but an apparent speed-up over a loaded base is not an improvement.
    assert verdicts(compare([timed(BASE)], [loaded_base]))["images_per_sec"] == LOADED
    assert verdicts(compare([timed(BASE)], [timed([1.5, 1.52, 1.51])]))["images_per_sec"] == IMPROVED


def test_base_without_spread_is_judged_with_a_wider_tolerance():
    one = timed([1.0])  # one timed call (the smoke suite's generators): no spread on either side
    assert verdicts(compare([timed([1.2])], [one]))["images_per_sec"] == UNCHANGED
    rep = compare([timed([1.4])], [one])
    assert verdicts(rep)["images_per_sec"] == REGRESSION and "base has no spread" in rep.rows[0].note
    # Records made before spreads were kept: min/max metrics of 2+ iterations are their spread.
    old = timed(BASE)
    del old["spreads"]
    assert verdicts(compare([timed([s * 1.2 for s in BASE])], [old]))["images_per_sec"] == REGRESSION


def test_speed_and_memory_across_environments_are_not_regressions():
    other = dict(ENV, torch="2.99.0+cpu")
    rep = compare([timed([s * 1.5 for s in BASE], env=other, mem=150.0)], [timed(BASE)])
    assert set(verdicts(rep).values()) == {ENV_DIFFERS} and "torch" in rep.rows[0].note


def test_fid_within_its_recorded_uncertainty_is_not_a_regression():
    assert verdicts(compare([gen(3.3, std=0.2)], [gen(3.0, std=0.2)]))["gfid"] == UNCHANGED  # 10% < 2 x 0.28
    assert verdicts(compare([gen(3.7, std=0.2)], [gen(3.0, std=0.2)]))["gfid"] == REGRESSION
    assert verdicts(compare([gen(3.3)], [gen(3.0)]))["gfid"] == REGRESSION  # no uncertainty: 5% tolerance
    assert verdicts(compare([gen(2.5)], [gen(3.0)]))["gfid"] == IMPROVED  # lower FID is better
    assert "eval_wall_s" not in verdicts(compare([gen(3.0)], [gen(3.0)]))  # wall time is not judged


@pytest.mark.parametrize(("metric", "worse"), [("psnr", 18.0), ("ssim", 0.4), ("isc_mean", 80.0),
                                               ("peak_memory_mb", 200.0)])
def test_every_direction_is_checked(metric, worse):
    rec = timed(BASE) if metric == "peak_memory_mb" else make_record(
        run_id="r", model="m", task="recon", commit="c", env=ENV, protocol={"data": "d"},
        metrics={"psnr": 20.0, "ssim": 0.5, "isc_mean": 100.0})
    new = copy.deepcopy(rec)
    new["metrics"][metric] = worse
    assert verdicts(compare([new], [rec]))[metric] == REGRESSION


def test_failures_missing_and_non_numbers_now_are_regressions():
    base = [timed(BASE, model="a"), timed(BASE, model="b"), timed(BASE, model="c")]
    new = copy.deepcopy(base)
    new[0]["error"], new[0]["metrics"] = "OutOfMemoryError: CUDA out of memory", {}
    del new[1]["metrics"]["peak_memory_mb"]
    new[2]["metrics"]["peak_memory_mb"] = "nan"
    rep = compare(new, base)
    assert rep.matched == 3 and not rep.only_base
    assert rep.rows[0].verdict == FAILS_NOW and rep.rows[0].model == "a"  # most severe first
    assert {(r.model, r.verdict) for r in rep.regressions} == {("a", FAILS_NOW), ("b", REGRESSION),
                                                               ("c", REGRESSION)}


def _write(path: Path, records: list[dict]) -> Path:
    for r in records:
        append_record(path, r)
    return path


def test_cli_exit_codes_summary_and_coverage(tmp_path, capsys):
    base = _write(tmp_path / "base.jsonl", [timed(BASE, model=m) for m in "abcd"])
    same = _write(tmp_path / "same.jsonl", [timed(BASE, model=m) for m in "abcd"])
    loaded = _write(tmp_path / "loaded.jsonl", [timed([2.1, 3.9, 2.7], model=m) for m in "abcd"])
    slower = _write(tmp_path / "slower.jsonl", [timed([s * (1.2 if m == "b" else 1) for s in BASE], model=m)
                                                for m in "abcd"])
    assert main(["compare", str(same), str(base)]) == 0
    assert main(["compare", str(loaded), str(base)]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 base measurements matched" in out and "4 machine loaded" in out
    assert main(["compare", str(slower), str(base)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "1 regression" in out[0] and out[1].startswith("REGRESSION") and " b speed " in out[1]
    # Matching nothing, or under half the base, is an error that says why.
    other = _write(tmp_path / "other.jsonl", [dict(timed(BASE, model=m), protocol=dict(
        timed(BASE)["protocol"], iters=3)) for m in "abcd"])
    assert main(["compare", str(other), str(base)]) == 2
    assert "0 of 4 base measurements matched" in capsys.readouterr().err
    partial = _write(tmp_path / "partial.jsonl", [timed(BASE, model="a")])
    assert main(["compare", str(partial), str(base)]) == 2
    err = capsys.readouterr().err
    assert "only 1 of 4" in err and "b speed was not run" in err
    assert main(["compare", str(partial), str(base), "--min-matched", "0.25"]) == 0


def test_other_protocol_is_named():
    a = timed(BASE)
    b = copy.deepcopy(a)
    b["protocol"]["batch_size"] = 8
    rep = compare([b], [a])
    assert rep.matched == 0 and "batch_size 8 here vs 1 in the base" in rep.coverage_error()


def test_committed_records_without_spreads_still_compare(tmp_path, capsys):
    """The committed smoke file holds runs from before iterations were kept (no `spreads`) beside newer ones."""
    records = [json.loads(line) for line in SMOKE.read_text().splitlines()]
    legacy = [r for r in records if "spreads" not in r and r["task"] == "speed"]
    assert len(legacy) >= 40
    old = tmp_path / "legacy.jsonl"
    old.write_text("".join(json.dumps(r) + "\n" for r in legacy))
    assert main(["compare", str(old), str(old)]) == 0
    assert f"{len(legacy)} of {len(legacy)} base measurements matched" in capsys.readouterr().out
    assert main(["compare", str(SMOKE), str(SMOKE)]) == 0  # the whole file, old and new records, against itself


def test_speed_is_judged_per_image_when_a_run_backed_off_to_a_smaller_batch():
    base = timed(BASE)
    base["protocol"]["batch_size"] = base["protocol"]["batch_size_used"] = 8
    halved = timed([s / 2 for s in BASE])  # out of memory at 8: batches of 4 in half the time, same speed
    halved["protocol"].update(batch_size=8, batch_size_used=4)
    assert verdicts(compare([halved], [base]))["images_per_sec"] == UNCHANGED
