"""Counted FLOPs and utilisation (bench/run/flops.py), and the speed task's FLOP and options fields in records."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.records.store import read_records
from bench.records.tables import speed_table
from bench.run.flops import count_flops, peak_flops, utilisation_metrics


def test_counts_multiply_adds_twice():
    layer = nn.Linear(10, 20, bias=False)
    x = torch.randn(4, 10)
    assert count_flops(lambda: layer(x)) == 2 * 4 * 10 * 20
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    img = torch.randn(1, 3, 5, 5)
    assert count_flops(lambda: conv(img)) == 2 * 8 * 3 * 9 * 25


def test_fused_and_written_out_attention_count_the_same():
    from titok.blocks import multi_head_attention

    qkv = torch.randn(2, 17, 3 * 32)
    math = count_flops(lambda: multi_head_attention(qkv, 4, "math"))
    assert math == 2 * 2 * (2 * 4 * 17 * 17 * 8)  # 2 FLOPs x 2 products (QK^T, AV) x (B, H, L, L, D/H) MACs
    assert count_flops(lambda: multi_head_attention(qkv, 4, "sdpa")) == math


def test_peaks_are_matched_most_specific_first_and_unknown_is_none():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peak_flops("NVIDIA H200", "fp32") == 67e12
    assert peak_flops("AMD EPYC", "fp32") is None and peak_flops(None, "bf16") is None
    m = utilisation_metrics(2e9, 100.0, "NVIDIA H100 80GB HBM3", "bf16")
    assert m["achieved_tflops"] == pytest.approx(0.2) and m["peak_fraction"] == pytest.approx(0.2e12 / 989e12)
    assert "peak_fraction" not in utilisation_metrics(2e9, 100.0, "AMD EPYC", "fp32")


SUITE = """
[suite]
name = "options"
[defaults]
iters = 1
warmup = 0
batch_sizes = [2]
[[run]]
task = "speed"
models = ["titok_tiny_2stage"]
ops = ["decode"]
options = [{ attention = "math", cfg_batched = false, channels_last = false, fused_upsample = false }, {}]
[[run]]
task = "speed"
kind = "generator"
models = ["titok_tiny_bert"]
ops = ["sample"]
options = [{ cuda_graphs = true }]
"""


def test_speed_records_carry_options_flops_and_ratio(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "o")]) == 0
    recs = read_records(tmp_path / "o" / "results.jsonl").records
    ref, fast = (r for r in recs if r["model"] == "titok_tiny_2stage")
    assert ref["protocol"]["options_label"] == "reference" and fast["protocol"]["options"]["fused_upsample"]
    # The fused upsampling does fewer multiply-adds, and the counter sees it.
    assert 0 < fast["metrics"]["gflop_per_image"] < ref["metrics"]["gflop_per_image"]
    assert fast["metrics"]["achieved_tflops"] > 0 and "peak_fraction" not in fast["metrics"]
    table = speed_table(recs)
    ratios = table.set_index("options")["x reference"]
    assert ratios["reference"] == pytest.approx(1.0)
    assert ratios[fast["protocol"]["options_label"]] == pytest.approx(
        fast["metrics"]["images_per_sec"] / ref["metrics"]["images_per_sec"])
    graphs = next(r for r in recs if r["model"] == "titok_tiny_bert")
    assert graphs["error"].startswith("not supported: cuda_graphs") and not graphs["metrics"]


def test_unknown_option_in_a_suite_is_an_error(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE.replace("{ cuda_graphs = true }", "{ warp_speed = true }"))
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "o")]) == 2
    assert "warp_speed" in capsys.readouterr().err
