"""Edges of bench.metrics.image_sets' numeric helpers that the reference tests do not reach: precision/recall's input
checks, k-NN radii dtype and block sizes, the statistics file's checks and messages, the few-images threshold, the sFID
tap's checks, per-image PSNR and SSIM's window. Each was a mutant that survived `tox -e mutation`
(results/mutation/2026-12-06-numeric-core.md); expected values are written here or come from scikit-image.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.metrics import image_sets as metrics
from bench.metrics.base import FEATURE_DIM, MetricError
from bench.metrics.image_sets import few_images_warning, inside_any_ball, knn_radii, precision_recall, spatial_features
from bench.metrics.pixel import psnr, psnr_per_image, ssim_per_image
from bench.metrics.statistics_file import load_reference_stats


def test_few_images_warning_threshold_and_rank():
    """Below 2048 images the covariance has rank at most n - 1 (never below 0); at 2048 there is no warning."""
    assert few_images_warning(FEATURE_DIM, "images") is None
    assert "rank <= 2046" in few_images_warning(FEATURE_DIM - 1, "images")
    assert "rank <= 0" in few_images_warning(1, "images") and "rank <= 0" in few_images_warning(0, "images")


class _Tap:
    def __init__(self, value):
        self.value = value

    def take(self):
        return self.value


def test_spatial_features_are_float64_and_checked():
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7
    got = spatial_features(_Tap(x))
    assert got.dtype == np.float64 and np.array_equal(got, x.double().numpy())
    with pytest.raises(MetricError, match="did not reach"):
        spatial_features(_Tap(None))
    bad = x.clone()
    bad[0, 1], bad[1, 2] = float("nan"), float("inf")
    with pytest.raises(MetricError, match=r"non-finite Inception spatial features \(2 values\)"):
        spatial_features(_Tap(bad))


def test_precision_recall_refuses_sets_of_other_shapes():
    a = torch.randn(6, 4)
    for fake, real in ((a, torch.randn(6, 5)), (a[0], a), (a, a[0])):
        with pytest.raises(MetricError, match=r"needs \(N, D\) feature sets of one D"):
            precision_recall(fake, real)
    with pytest.raises(MetricError, match="k=3 needs more than 3 images per set, got 3"):
        knn_radii(torch.randn(3, 4))


def test_row_blocks_partition_the_rows_by_the_byte_budget():
    blocks = metrics._row_blocks
    assert list(blocks(10, 3, 24)) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]  # 24 B / (3 x 4 B) = 2 rows
    assert list(blocks(5, 3, 48, itemsize=8)) == [(0, 2), (2, 4), (4, 5)]
    assert list(blocks(3, 100, 8)) == [(0, 1), (1, 2), (2, 3)]  # a row over budget still goes, one at a time


def test_radii_and_balls_keep_the_dtype_and_the_block_size(monkeypatch):
    """float64 features give float64 radii (the k-th smallest of each row of the full distance matrix, written
    here); distances are taken block_bytes // (columns x itemsize) rows at a time; membership is bool."""
    g = torch.Generator().manual_seed(0)
    points, centers = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    want = torch.cdist(points, points).sort(dim=1).values[:, 3]
    calls = []
    cdist = torch.cdist
    monkeypatch.setattr(torch, "cdist", lambda x, y: calls.append(tuple(x.shape)) or cdist(x, y))
    radii = knn_radii(points, block_bytes=5 * 10 * 8)  # 5 rows of 10 float64 distances per block
    assert radii.dtype == torch.float64 and torch.equal(radii, want)
    assert calls == [(5, 3), (5, 3)]
    calls.clear()
    inside = inside_any_ball(points, centers, torch.full((4,), 1.5, dtype=torch.float64), block_bytes=5 * 4 * 8)
    assert calls == [(5, 3), (5, 3)] and inside.dtype == torch.bool and inside.shape == (10,)
    assert torch.equal(inside, (cdist(points, centers) <= 1.5).any(dim=1))


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_statistics_file_checks_name_what_is_wrong(tmp_path):
    mu, sigma = np.zeros(FEATURE_DIM, np.float32), np.eye(FEATURE_DIM, dtype=np.float32)
    got_mu, got_sigma = load_reference_stats(_save(tmp_path / "ok.npz", mu=mu, sigma=sigma))
    assert got_mu.dtype == got_sigma.dtype == np.float64  # float32 files are read as float64
    with pytest.raises(MetricError, match="statistics file not found: .*absent.npz"):
        load_reference_stats(tmp_path / "absent.npz")
    with pytest.raises(MetricError, match="needs arrays 'mu' and 'sigma', found \\['mu'\\]"):
        load_reference_stats(_save(tmp_path / "mu_only.npz", mu=mu))
    with pytest.raises(MetricError, match="expected mu"):
        load_reference_stats(_save(tmp_path / "small_sigma.npz", mu=mu, sigma=np.eye(3)))
    bad = sigma.copy()
    bad[0, 0] = np.nan
    with pytest.raises(MetricError, match=r"non-finite values \(NaN/inf\)"):
        load_reference_stats(_save(tmp_path / "nan_sigma.npz", mu=mu, sigma=bad))
    np.save(tmp_path / "single.npy", np.zeros((2, 3)))
    with pytest.raises(MetricError, match=r"must be an .npz archive .* found a single array of shape \(2, 3\)"):
        load_reference_stats(tmp_path / "single.npy")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(MetricError, match="text.npz: not a readable .npz statistics file"):
        load_reference_stats(tmp_path / "text.npz")
    # Data only: an object array (a pickle) is refused, even one that would convert to numbers.
    np.savez(tmp_path / "pickled.npz", mu=np.array(list(mu), dtype=object), sigma=sigma)
    with pytest.raises(MetricError, match="pickled.npz: not a readable .npz statistics file"):
        load_reference_stats(tmp_path / "pickled.npz")


def test_psnr_is_per_image_then_averaged():
    a = torch.full((2, 3, 4, 4), 100, dtype=torch.uint8)
    b = a.clone()
    b[0] += 1  # MSE 1
    b[1] += 16  # MSE 256
    want = [10 * math.log10(255**2 / 1), 10 * math.log10(255**2 / 256)]
    torch.testing.assert_close(psnr_per_image(a, b), torch.tensor(want, dtype=torch.float64))
    assert psnr(a, b) == pytest.approx(sum(want) / 2, abs=1e-9)


def test_ssim_uses_wang_et_al_gaussian_window():
    """Wang et al. 2004 (scikit-image's gaussian_weights=True, sigma 1.5, population covariance), not skimage's
    default 7x7 uniform window, which gives another number on these images."""
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (1, 3, 24, 24), generator=g, dtype=torch.uint8)
    y = (x.int() + torch.randint(-40, 41, x.shape, generator=g)).clamp(0, 255).byte()
    nx, ny = x[0].permute(1, 2, 0).numpy(), y[0].permute(1, 2, 0).numpy()
    wang = structural_similarity(nx, ny, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    uniform = structural_similarity(nx, ny, channel_axis=2, data_range=255, use_sample_covariance=False)
    assert abs(wang - uniform) > 1e-4  # 1.8e-4 here, far above the 1e-9 of the comparison below
    assert ssim_per_image(x, y)[0] == pytest.approx(wang, abs=1e-9)


def test_precision_recall_converts_the_real_set_and_keeps_the_block_budget(monkeypatch):
    """A float64 real set is compared in the fake set's dtype (float32 here), as if it had been given so; and the
    block budget reaches all four distance passes: radii of real (4 x 4 float64 = 32 B a row: 3 rows a block),
    fake in real balls (3 rows), radii of fake (6 x 6: 2 rows), real in fake balls (2 rows)."""
    g = torch.Generator().manual_seed(1)
    fake, real = torch.randn(6, 3, generator=g), torch.randn(4, 3, generator=g, dtype=torch.float64)
    assert precision_recall(fake, real) == precision_recall(fake, real.float())
    calls = []
    cdist = torch.cdist
    monkeypatch.setattr(torch, "cdist", lambda x, y: calls.append(x.shape[0]) or cdist(x, y))
    precision_recall(fake.double(), real, block_bytes=96)
    assert calls == [3, 1, 3, 3, 2, 2, 2, 2, 2]


@pytest.mark.metrics
def test_fid_statistics_need_two_samples_of_any_dimension():
    """Two samples make a covariance (ddof 1, written here with numpy), whatever the dimension, even 1; one does
    not, and the message says how many there were."""
    from bench.metrics.image_sets import statistics

    two = np.array([[1.0], [4.0]])
    mu, sigma = statistics(two)
    assert np.allclose(mu, [2.5]) and np.allclose(sigma, [[4.5]])
    x = np.array([[1.0, 2.0, 0.0], [3.0, -1.0, 5.0]])
    mu, sigma = statistics(x)
    assert np.allclose(mu, x.mean(0)) and np.allclose(sigma, np.cov(x, rowvar=False))
    with pytest.raises(MetricError, match="at least 2 samples, got 1"):
        statistics(x[:1])
    # float32 features (the stored sets') are averaged in float64, as they are for the covariance.
    third = np.array([[1.0], [1.0], [2.0]], np.float32)
    mu, _ = statistics(third)
    assert mu.dtype == np.float64 and mu[0] == 4.0 / 3.0
