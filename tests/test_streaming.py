"""Streaming accumulators equal the all-at-once computations they replace (np.cov, torch-fidelity's IS and FID),
whatever the batching, and the recon task's memory does not grow with the number of images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.metrics.streaming import (
    BootstrapGaussians,
    CodebookUsage,
    RunningGaussian,
    RunningInceptionScore,
    isc_split_of_index,
    poisson1_weights,
)
from tests.reference_scores import inception_score_by_definition
from titok.data.images import ImageFolder


def _batched(x, sizes):
    start = 0
    for s in sizes:
        yield x[start : start + s]
        start += s


def test_running_gaussian_equals_np_cov_for_any_batching():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 0.3, size=(517, 64)) + 5.0  # non-negative and offset, like pool features
    want_mu, want_sigma = x.mean(0), np.cov(x, rowvar=False)
    for sizes in ([517], [1] * 517, [3, 100, 7, 407], [256, 256, 5]):
        g = RunningGaussian(64)
        for b in _batched(x, sizes):
            g.update(b)
        mu, sigma = g.statistics()
        np.testing.assert_allclose(mu, want_mu, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sigma, want_sigma, rtol=1e-9, atol=1e-12)



@pytest.mark.parametrize("n", [10, 37, 1003])
def test_running_inception_score_equals_the_split_definition(n):
    logits = torch.randn(n, 1008, generator=torch.Generator().manual_seed(n)) * 3
    want = inception_score_by_definition(logits)
    for sizes in ([n], [1] * n if n < 100 else [7] * (n // 7) + [n % 7], [n // 2, n - n // 2]):
        isc = RunningInceptionScore(n, 1008)
        for b in _batched(logits, sizes):
            isc.update(b)
        assert isc.result() == pytest.approx(want, rel=1e-10)


def test_isc_split_assignment_is_a_balanced_permutation():
    split = isc_split_of_index(1003)
    counts = np.bincount(split, minlength=10)
    assert counts.sum() == 1003 and counts.max() - counts.min() <= 1
    assert (split[:100] != np.sort(split[:100])).any()  # shuffled, not contiguous chunks of the input order


def test_codebook_usage_matches_the_release_formula():
    u = CodebookUsage(8)
    u.update(torch.tensor([[0, 0, 1, 1]]))
    u.update(torch.tensor([[2, 2, 2, 2]]))
    r = u.result()
    p = torch.tensor([2, 2, 4, 0, 0, 0, 0, 0], dtype=torch.float64) / 8
    entropy = float((-torch.log2(p + 1e-8) * p).sum())  # evaluator.py of the TiTok release
    assert r["codebook_usage"] == 3 / 8
    assert r["codebook_entropy_bits"] == pytest.approx(entropy) and entropy == pytest.approx(1.5, abs=1e-6)
    assert r["codebook_perplexity"] == pytest.approx(2**1.5, rel=1e-6)


@pytest.mark.metrics
def test_streamed_is_and_fid_equal_torch_fidelity(image_folders, standin_inception):
    import torch_fidelity

    from bench.metrics.image_sets import compute_image_metrics

    a, b = image_folders
    ref = torch_fidelity.calculate_metrics(input1=str(a), input2=str(b), fid=True, isc=True, cuda=False,
                                           verbose=False, cache=False,
                                           feature_extractor_weights_path=str(standin_inception))
    for bs in (1, 5, 64):
        ours = compute_image_metrics(ImageFolder(a), ImageFolder(b), inception_weights=standin_inception,
                                     metrics=("fid", "isc"), batch_size=bs).values
        assert ours["standin_fid"] == pytest.approx(ref["frechet_inception_distance"], abs=1e-4)
        assert ours["standin_isc_mean"] == pytest.approx(ref["inception_score_mean"], rel=1e-6)
        assert ours["standin_isc_std"] == pytest.approx(ref["inception_score_std"], rel=1e-5, abs=1e-9)


def test_bootstrap_weights_are_poisson_one_and_a_function_of_the_image_index_only():
    w = poisson1_weights(0, 20000, 3, seed=7)
    assert w.shape == (3, 20000)
    np.testing.assert_allclose(w.mean(1), 1.0, atol=0.03)  # Poisson(1): mean 1, variance 1
    np.testing.assert_allclose(w.var(1), 1.0, atol=0.05)
    assert np.mean(w == 0) == pytest.approx(math.exp(-1), abs=0.01)
    pieces = np.concatenate([poisson1_weights(0, 7, 3, 7), poisson1_weights(7, 93, 3, 7)], axis=1)
    np.testing.assert_array_equal(pieces, w[:, :100])  # batching does not change any image's weight
    assert not np.array_equal(poisson1_weights(0, 100, 3, seed=8), w[:, :100])  # the seed does
    assert not np.array_equal(w[0], w[1])  # replicates differ


def test_bootstrap_replicates_equal_weighted_np_cov_for_any_batching():
    rng = np.random.default_rng(1)
    x = rng.gamma(2.0, 0.3, size=(300, 12)) + 5.0
    weights = poisson1_weights(0, 300, 4)
    for sizes in ([300], [1] * 300, [7, 200, 93]):
        b = BootstrapGaussians(12, 4)
        for chunk in _batched(x, sizes):
            b.update(chunk)
        for r in range(4):
            mu, sigma = b.statistics(r)
            np.testing.assert_allclose(mu, np.average(x, axis=0, weights=weights[r]), rtol=1e-12)
            np.testing.assert_allclose(sigma, np.cov(x, rowvar=False, fweights=weights[r].astype(int)), rtol=1e-9)


@pytest.mark.metrics
def test_bootstrap_std_of_fid_tracks_its_sampling_std():
    """The std of the bootstrap FIDs from ONE set of N features estimates the std of FID over independent sets of N
    (here 40 of them, drawn from a known Gaussian against its population statistics): within 40% on this draw,
    measured 1.10x; a bootstrap that ignored its weights, or reused one set of weights, would give 0."""
    from bench.metrics.image_sets import frechet_distance

    rng = np.random.default_rng(0)
    d, n = 16, 400
    mix = rng.normal(size=(d, d)) / math.sqrt(d)
    shift = rng.normal(size=d) * 0.1

    def draw(k, s=0.0):
        return rng.normal(size=(k, d)) @ (mix.T * (1 + s)) + shift + s

    pop = draw(200_000)
    mu_ref, sigma_ref = pop.mean(0), np.cov(pop, rowvar=False)
    fids = []
    for _ in range(40):
        x = draw(n, 0.3)
        fids.append(frechet_distance(x.mean(0), np.cov(x, rowvar=False), mu_ref, sigma_ref))
    x = draw(n, 0.3)
    boot = BootstrapGaussians(d, 50)
    for chunk in _batched(x, [64] * 6 + [16]):
        boot.update(chunk)
    boot_fids = [frechet_distance(*boot.statistics(r), mu_ref, sigma_ref) for r in range(50)]
    ratio = np.std(boot_fids, ddof=1) / np.std(fids, ddof=1)
    assert 0.6 < ratio < 1.4, ratio
