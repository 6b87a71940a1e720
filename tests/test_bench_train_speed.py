"""The training-throughput task (bench/run/tasks/train_speed.py) through the harness: a suite of task "train" writes
one record per training stage with its protocol (batch, the release's per-GPU batch and the scale, precision,
preset, recipe) and per-iteration times, and `compare` calls a slower training step a regression as it does an
inference one. Tiny presets, one thread; no timing is asserted."""

from __future__ import annotations

import copy
import json

import pytest

from bench import cli as bench_cli
from bench.records.compare import REGRESSION, UNCHANGED, compare
from bench.run.suite import SuiteError, load_suite

SUITE = """
[suite]
name = "train-tiny"
[defaults]
warmup = 0
iters = 2
[[run]]
task = "train"
kind = "tokenizer"
models = ["titok_tiny_2stage"]
batch_sizes = [2]
[[run]]
task = "train"
kind = "generator"
models = ["titok_tiny_bert"]
batch_sizes = [4]
precisions = ["fp32", "bf16"]
"""


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_speed")
    (root / "suite.toml").write_text(SUITE)
    assert bench_cli.main(["run", f"--suite={root / 'suite.toml'}", f"--out={root / 'out'}", "--device=cpu",
                           "-q"]) == 0
    return [json.loads(line) for line in (root / "out" / "results.jsonl").read_text().splitlines()]


def test_one_record_per_training_stage_with_its_protocol(records):
    by_op = {(r["model"], r["protocol"]["op"], r["protocol"]["precision"]): r for r in records}
    assert sorted(by_op) == [("titok_tiny_2stage", "decoder_finetune", "fp32"),
                             ("titok_tiny_2stage", "proxy_codes", "fp32"),
                             ("titok_tiny_bert", "generator", "bf16"), ("titok_tiny_bert", "generator", "fp32")]
    assert all(r["task"] == "train" for r in records)
    for (_, op, precision), r in by_op.items():
        p = r["protocol"]
        if precision == "bf16":  # autocast is measured on CUDA only: recorded as such, not dropped
            assert "CUDA only" in r["error"]
            continue
        assert not r.get("error") and r["metrics"]["images_per_sec"] > 0 and r["metrics"]["params_m"] > 0
        assert len(r["spreads"]["sec_per_batch"]["values"]) == 2  # the iterations compare judges noise by
        release = 64 if op == "generator" else 32
        assert (p["batch_size"], p["release_per_gpu_batch"], p["batch_scale"]) == (
            p["batch_size"], release, p["batch_size"] / release)
        assert p["resolution"] == 32 and p["iters"] == 2 and p["device"] == "cpu"
    # stage 2 is timed with the discriminator (and LeCam, as the default config has it); the others without
    assert by_op[("titok_tiny_2stage", "decoder_finetune", "fp32")]["protocol"]["discriminator"]["stages"] >= 1
    assert by_op[("titok_tiny_2stage", "proxy_codes", "fp32")]["protocol"]["discriminator"] is None


def _slowed(rec: dict, factor: float) -> dict:
    slow = copy.deepcopy(rec)
    s = slow["spreads"]["sec_per_batch"]
    s["values"] = [v * factor for v in s["values"]]
    for k in ("min", "median", "max"):
        s[k] *= factor
    slow["metrics"]["images_per_sec"] /= factor
    slow["metrics"]["sec_per_batch"] *= factor
    return slow


def test_compare_flags_a_training_slowdown(records):
    base = [r for r in records if not r.get("error")]
    for r in base:  # judged as on a quiet machine, and spreads as tight as a good run's
        r["machine"] = {**r.get("machine", {}), "loaded": False}
        s = r["spreads"]["sec_per_batch"]
        s["values"] = [s["median"], s["median"] * 1.01]
        s["min"], s["max"], s["spread"] = s["median"], s["median"] * 1.01, 0.01
    same = compare(base, base)
    assert not same.regressions and {row.verdict for row in same.rows if row.metric == "images_per_sec"} == {
        UNCHANGED}
    slower = compare([_slowed(r, 1.5) for r in base], base)
    flagged = {(row.model, row.task) for row in slower.rows if row.verdict == REGRESSION
               and row.metric == "images_per_sec"}
    assert flagged == {("titok_tiny_2stage", "train"), ("titok_tiny_bert", "train")}
    assert len([row for row in slower.regressions if row.metric == "images_per_sec"]) == len(base)


def test_suite_checks_training_ops_and_the_builtin_suite_loads(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[run]]\ntask = "train"\nkind = "tokenizer"\nmodels = ["titok_l32"]\nops = ["encode"]\n')
    with pytest.raises(SuiteError, match="unknown op.*proxy_codes, decoder_finetune, single_stage"):
        load_suite(str(bad))
    suite = load_suite("train-cpu")
    assert [(r.task, r.settings["kind"], r.settings["batch_sizes"]) for r in suite.runs] == [
        ("train", "tokenizer", [2]), ("train", "generator", [4])]  # the release's 32 and 64 per GPU, / 16
