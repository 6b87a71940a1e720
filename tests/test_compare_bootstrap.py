"""FID's bootstrap is PAIRED: image i of both sets gets the same Poisson weight in each replicate.

rFID compares reconstructions with their originals, so the two sets are strongly correlated; resampling both by
the same image indices keeps that correlation and gives the narrow interval the FID really has. Resampling them
independently ("unpaired": another seed for one side, a shifted index, a replicate matched with another, weights
not tied to the index) adds both sets' sampling noise and widens the interval several-fold, so `compare` would
let real rFID regressions pass as noise. The expectations are computed here: Poisson(1) weights drawn with numpy,
a weighted mean and covariance, and the Frechet distance written out with scipy's sqrtm.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.metrics.streaming import BootstrapGaussians
from tests.reference_scores import frechet_by_definition, weighted_statistics


def correlated_sets(n: int = 200, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Originals and their 'reconstructions': the same points plus a small error and a slight shift."""
    rng = np.random.default_rng(3)
    real = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    fake = real + 0.15 * rng.normal(size=(n, d)) + 0.2
    return real, fake


def test_paired_bootstrap_of_correlated_sets_is_narrower_than_an_unpaired_one():
    real, fake = correlated_sets()
    n, d, replicates = len(real), real.shape[1], 200
    rng = np.random.default_rng(0)
    paired, unpaired = [], []
    for _ in range(replicates):
        w, w_other = rng.poisson(1.0, n).astype(float), rng.poisson(1.0, n).astype(float)
        paired.append(frechet_by_definition(*weighted_statistics(fake, w), *weighted_statistics(real, w)))
        unpaired.append(frechet_by_definition(*weighted_statistics(fake, w), *weighted_statistics(real, w_other)))
    paired_std, unpaired_std = np.std(paired, ddof=1), np.std(unpaired, ddof=1)
    assert unpaired_std > 4 * paired_std  # the data make the difference plain (measured: 9x)

    # The harness's replicates: one BootstrapGaussians per set, fed in different batchings, as the two sets of an
    # rFID are (reconstructions in model batches, originals in loader batches).
    b_fake, b_real = BootstrapGaussians(d, replicates), BootstrapGaussians(d, replicates)
    for i in range(0, n, 32):
        b_fake.update(fake[i : i + 32])
    for i in range(0, n, 50):
        b_real.update(real[i : i + 50])
    ours = [frechet_by_definition(*b_fake.statistics(r), *b_real.statistics(r)) for r in range(replicates)]
    ours_std = np.std(ours, ddof=1)
    assert 0.6 * paired_std < ours_std < 1.6 * paired_std, (ours_std, paired_std, unpaired_std)
    # The same image carries the same weight on both sides: the replicate means of the two sets differ by the
    # weighted mean of the per-image differences, exactly.
    for r in range(3):
        diff = b_fake.statistics(r)[0] - b_real.statistics(r)[0]
        w = b_fake.weight[r]
        assert w == b_real.weight[r]
        np.testing.assert_allclose(diff, (fake - real).mean(0), atol=0.1)  # near the full-set shift, not noise


@pytest.mark.metrics
@pytest.mark.slow  # about 20 s of CPU (4 x 8 images through the stand-in Inception); 90 s at load 10
def test_rfid_bootstrap_pairs_image_i_of_both_sets(standin_inception, monkeypatch):
    """Through the metric pipeline (stand-in Inception, real images): a set against itself, resampled by the SAME
    weights, gives equal statistics in every replicate; any unpairing (another seed for the real side, a replicate
    matched with another) makes the two resamples differ. The distance is swapped for a cheap one (squared
    differences of means and covariances) so that no 2048-d matrix square root is taken: this checks the pairing,
    test_streaming checks the FID."""
    import bench.metrics.image_sets
    from titok.data.images import builtin_images

    def distance(mu1, s1, mu2, s2) -> float:
        return float(np.sum((np.asarray(mu1) - mu2) ** 2) + np.sum((np.asarray(s1) - s2) ** 2))

    monkeypatch.setattr(bench.metrics.image_sets, "frechet_distance", distance)
    images = builtin_images("skimage", 32, 8, seed=0)
    same = bench.metrics.image_sets.compute_image_metrics(
        images, images.clone(), inception_weights=standin_inception, metrics=("fid",), batch_size=4, bootstrap=3
    ).spreads["standin_fid"]
    # The scale an unpairing would show: the same images in another order, so that image i of one side and
    # image i of the other are different images under the same weight.
    shuffled = images[torch.tensor([1, 0, 3, 2, 5, 4, 7, 6])]
    other = bench.metrics.image_sets.compute_image_metrics(
        images, shuffled, inception_weights=standin_inception, metrics=("fid",), batch_size=4, bootstrap=3
    ).spreads["standin_fid"]
    assert same["n"] == other["n"] == 3
    assert other["mean"] > 0 and same["mean"] <= 1e-9 * other["mean"], (same, other)
