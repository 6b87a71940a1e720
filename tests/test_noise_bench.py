"""The noise + pick benchmark runs, times the three ways side by side and writes its report with the command."""

from __future__ import annotations

import torch

from bench.devtools.noise_bench import main, release_way, schemes


def test_noise_bench_writes_all_three_ways(tmp_path):
    out = tmp_path / "noise.md"
    assert main(["--batch", "4", "--tokens", "3", "--codes", "16", "32", "--rounds", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "python -m bench.devtools.noise_bench --batch 4" in text
    for name in ("counter-icdf-v1", "counter-hash-v1", "release (uniform_ + Gumbel-max)"):
        assert text.count(f"| {name} |") == 2  # one row per K


def test_every_way_returns_codes_and_noisy_confidence():
    for name, fn in schemes(4, 3, 16).items():
        codes, confidence = fn()
        assert codes.shape == (4, 3) and confidence.shape == (4, 3), name
        assert int(codes.min()) >= 0 and int(codes.max()) < 16, name
    codes, conf = release_way(torch.zeros(2, 3, 5), torch.zeros(2, 3), 0.0)  # temperature 0: argmax, no noise
    assert (codes == 0).all() and (conf == 0).all()
