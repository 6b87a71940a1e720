"""The streaming accumulators compute in float64 whatever they are fed, and handle their edge cases: tests that
killed mutmut's survivors in bench/streaming.py (results/mutation/). Expectations are numpy in float64, here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.streaming import BootstrapGaussians, CodebookUsage, RunningGaussian


def far_from_zero(n: int = 400, d: int = 4) -> np.ndarray:
    """float32 features with a large mean and a small spread: float32 arithmetic loses the covariance here."""
    rng = np.random.default_rng(5)
    return (1000.0 + 0.01 * rng.normal(size=(n, d))).astype(np.float32)


def test_running_gaussian_of_float32_features_is_float64_exact():
    x = far_from_zero()
    g = RunningGaussian(x.shape[1])
    for i in range(0, len(x), 64):
        g.update(x[i : i + 64])
    mu, sigma = g.statistics()
    exact = x.astype(np.float64)
    np.testing.assert_allclose(mu, exact.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(exact, rowvar=False), rtol=1e-9, atol=1e-15)
    assert g.n == len(x)


def test_bootstrap_replicates_of_float32_features_equal_those_of_their_float64_values():
    x = far_from_zero(200)
    a, b = BootstrapGaussians(x.shape[1], 3), BootstrapGaussians(x.shape[1], 3)
    for i in range(0, len(x), 50):
        a.update(x[i : i + 50])
        b.update(x[i : i + 50].astype(np.float64))
    for r in range(3):
        for got, want in zip(a.statistics(r), b.statistics(r), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_codebook_usage_in_float64_and_of_a_single_token():
    counts = np.arange(1, 1001)  # code k used k times (k = 1..1000) of a 2048-entry codebook
    codes = torch.from_numpy(np.repeat(np.arange(1000), counts))
    usage = CodebookUsage(2048)
    usage.update(codes[: len(codes) // 3])
    usage.update(codes[len(codes) // 3 :])
    p = counts / counts.sum()
    entropy = float(-(np.log2(p + 1e-8) * p).sum())  # the release's formula, with its 1e-8
    got = usage.result()
    assert got["codebook_usage"] == pytest.approx(1000 / 2048, rel=1e-15)
    assert got["codebook_entropy_bits"] == pytest.approx(entropy, rel=1e-12)
    assert got["codebook_perplexity"] == pytest.approx(2.0**entropy, rel=1e-12)
    one = CodebookUsage(16)
    assert one.result() == {}  # nothing counted: no numbers
    one.update(torch.tensor([3]))
    got = one.result()
    assert got["codebook_usage"] == 1 / 16
    assert got["codebook_entropy_bits"] == pytest.approx(-math.log2(1 + 1e-8), abs=1e-15)
