"""Every metric the harness writes has a direction: real runs of the tasks enumerate the names, so a new metric
without a rule in bench/records/rules.py fails here instead of passing `compare` unchecked."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.records.rules import HIGHER, INFO, LOWER, RULES, rule_for
from bench.records.store import read_records

SPEED_AND_RECON = """
[defaults]
iters = 2
warmup = 0
batch_sizes = [1]
[[run]]
task = "speed"
models = ["titok_tiny_vq"]
ops = ["decode"]
count_flops = true
[[run]]
task = "speed"
kind = "generator"
models = ["titok_tiny_bert"]
ops = ["generate"]
[[run]]
task = "recon"
models = ["titok_tiny_vq"]
data = "builtin:procedural"
limit = 2
eval_batch_size = 2
metrics = ["psnr", "ssim"]
"""


def _run(tmp_path, text: str) -> list[dict]:
    suite = tmp_path / "suite.toml"
    suite.write_text(text)
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "out")]) == 0
    res = read_records(tmp_path / "out" / "results.jsonl")
    assert res.records and not res.problems
    return res.records


def _unruled(records: list[dict]) -> set[str]:
    return {name for r in records for name in r["metrics"] if rule_for(name) is None}


def test_speed_and_recon_metrics_have_directions_and_speed_keeps_its_noise(tmp_path):
    records = _run(tmp_path, SPEED_AND_RECON)
    assert {r["task"] for r in records} == {"speed", "recon"}
    assert not _unruled(records), "metrics without a direction in bench/records/rules.py"
    for r in (r for r in records if r["task"] == "speed"):
        it = r["spreads"]["sec_per_batch"]
        assert it["n"] == 2 == len(it["values"]) and it["min"] <= it["median"] <= it["max"]
        assert it["spread"] == pytest.approx((it["max"] - it["min"]) / it["median"])
        assert {"load_avg_1m", "cores", "threads", "cpu_model", "cpu_mhz", "loaded"} <= set(r["machine"])
        assert r["machine"]["cores"] >= 1 and isinstance(r["machine"]["loaded"], bool)
    assert "gflop_per_image" in next(r for r in records if r["model"] == "titok_tiny_vq" and r["task"] == "speed")[
        "metrics"]


@pytest.mark.metrics
@pytest.mark.slow  # about 20 s of CPU: stand-in Inception over the stats, recon and gen runs
def test_stats_gen_and_fid_metrics_have_directions(tmp_path, standin_inception):
    records = _run(tmp_path, f"""
[defaults]
inception_weights = "{standin_inception}"
eval_batch_size = 10
[[run]]
task = "stats"
data = "builtin:procedural"
image_size = 32
limit = 10
features = true
reference = "${{OUT_DIR}}/reference.npz"
[[run]]
task = "recon"
models = ["titok_tiny_vq"]
data = "builtin:procedural"
limit = 10
metrics = ["fid"]
fid_bootstrap = 2
[[run]]
task = "gen"
models = ["titok_tiny_bert"]
reference = "${{OUT_DIR}}/reference.npz"
num_samples = 10
metrics = ["kid", "prc"]
""")
    assert {r["task"] for r in records} == {"stats", "recon", "gen"}
    names = {n for r in records for n in r["metrics"]}
    assert {"standin_gfid", "standin_sfid", "standin_isc_mean", "standin_rfid", "standin_precision"} <= names
    assert not _unruled(records), "metrics without a direction in bench/records/rules.py"
    recon = next(r for r in records if r["task"] == "recon")
    spread = recon["spreads"]["standin_rfid"]  # the uncertainty compare judges rFID changes against
    assert spread["n"] == 2 and spread["std"] > 0 and spread["method"] == "poisson-bootstrap over images"
    assert "fid_bootstrap" not in recon["protocol"]  # a run with and without it still compare with each other


@pytest.mark.parametrize(("metric", "direction"), [
    ("gfid", LOWER), ("rfid", LOWER), ("standin_rfid", LOWER), ("kid_mean", LOWER), ("isc_mean", HIGHER),
    ("psnr", HIGHER), ("ssim", HIGHER), ("images_per_sec", HIGHER), ("peak_memory_mb", LOWER),
    ("peak_host_mb", LOWER), ("precision", HIGHER), ("recall", HIGHER), ("sec_per_batch", INFO),
])
def test_directions(metric, direction):
    assert rule_for(metric).direction == direction


def test_one_judged_metric_per_kind():
    judged: dict[str, str] = {}
    for name, rule in RULES.items():
        if rule.direction != INFO and rule.kind not in ("fid",):  # fid/rfid/gfid: one per record by task
            assert rule.kind not in judged, f"{name} and {judged.get(rule.kind)} judge the same {rule.kind}"
            judged[rule.kind] = name
