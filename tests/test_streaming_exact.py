"""The streaming accumulators compute in float64 whatever they are fed, and handle their edge cases: tests that
killed mutmut's survivors in bench/metrics/streaming.py (results/mutation/). Expectations are numpy in float64, here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.metrics.streaming import BootstrapGaussians, CodebookUsage, RunningGaussian


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


def test_running_pixel_metrics_average_per_image_values_over_batches():
    """PSNR and SSIM are per-image values averaged over every image of every batch (not per-batch means); only psnr
    and ssim are kept; nothing read gives no numbers. PSNR by its formula, SSIM by scikit-image (Wang et al.)."""

    from skimage.metrics import structural_similarity

    from bench.metrics.streaming import RunningPixelMetrics

    real = torch.full((3, 3, 16, 16), 100, dtype=torch.uint8)
    real[:, :, ::2] = 140
    recon = real.clone()
    recon[0] += 1  # MSE 1
    recon[1, :, :, ::2] += 4  # MSE 8
    recon[2] += 16  # MSE 256
    running = RunningPixelMetrics(("psnr", "fid", "ssim"))
    assert running.metrics == ("psnr", "ssim") and running.result() == {}
    running.update(recon[:1], real[:1])
    running.update(recon[1:], real[1:])
    psnr = sum(10 * math.log10(255**2 / mse) for mse in (1, 8, 256)) / 3
    ssim = sum(structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), channel_axis=2,
                                     data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
               for a, b in zip(recon, real, strict=True)) / 3
    got = running.result()
    assert got.keys() == {"psnr", "ssim"} and running.n == 3
    assert got["psnr"] == pytest.approx(psnr, abs=1e-9) and got["ssim"] == pytest.approx(ssim, abs=1e-9)
    only = RunningPixelMetrics(("psnr",))
    only.update(recon, real)
    assert only.result() == {"psnr": pytest.approx(psnr, abs=1e-9)}
