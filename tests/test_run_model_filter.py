"""`titok-bench run --model NAME`: one model of a suite alone (TiTok-L-32 of the paper suite, without the others)."""

from __future__ import annotations

import json

from bench.cli import main
from bench.run.suite import load_suite, select_models

TWO_MODELS = """
[suite]
name = "two"
[defaults]
iters = 1
warmup = 0
batch_sizes = [1]
[[run]]
task = "speed"
kind = "tokenizer"
ops = ["encode"]
models = ["titok_tiny_vq", "titok_tiny_vae"]
[[run]]
task = "speed"
kind = "tokenizer"
ops = ["decode"]
models = ["titok_tiny_vae"]
"""


def test_paper_suite_cut_to_one_model_keeps_each_of_its_tasks(monkeypatch, tmp_path):
    for var in ("IMAGENET_VAL", "INCEPTION_WEIGHTS", "ADM_REF_256", "WEIGHTS_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    full = load_suite("paper-256")
    cut = select_models(full, ["titok_l32"])
    assert [r.models for r in cut.runs] == [["titok_l32"]] * len(cut.runs)
    # titok_l32 is a tokenizer (recon, speed) and a generator (gen, speed): every task that measures it stays
    expected = [r.task for r in full.runs if "titok_l32" in r.models]
    assert [r.task for r in cut.runs] == expected and {"recon", "gen"} <= set(expected)
    assert [r["models"] for r in cut.resolved["run"]] == [r.models for r in cut.runs]
    # repeatable: two names keep both, in the suite's own order
    two = select_models(full, ["titok_s128", "titok_l32"])
    assert any(r.models == ["titok_l32", "titok_s128"] for r in two.runs)


def test_cli_runs_only_the_named_model(tmp_path):
    suite = tmp_path / "two.toml"
    suite.write_text(TWO_MODELS)
    out = tmp_path / "out"
    assert main(["run", "--suite", str(suite), "--model", "titok_tiny_vq", "--out", str(out), "--quiet"]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert records and {r["model"] for r in records} == {"titok_tiny_vq"}
    assert {r["protocol"]["op"] for r in records} == {"encode"}  # the decode run measured only the other model


def test_unknown_model_is_an_input_error_listing_the_suite_models(tmp_path, capsys):
    suite = tmp_path / "two.toml"
    suite.write_text(TWO_MODELS)
    status = main(["run", "--suite", str(suite), "--model", "titok_l32", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and "titok_l32" in err and "titok_tiny_vae, titok_tiny_vq" in err
    assert not (tmp_path / "o").exists()  # refused before any folder or record is made
