"""The streaming accumulators' reduce() over 2 ranks equals one process over the whole set, and the formulas
written here (np.cov, frequency-weighted np.cov, the Inception Score's split definition, PSNR, code counts).

Ranks are threads of this process (tests/thread_world.py) so the arithmetic runs fast and under mutation testing;
the same reduces across 2 gloo processes are tested in tests/test_distributed_metrics.py. Rank r owns the global
batches j*B .. (j+1)*B - 1 with j % 2 == r, written out here (`_mine`), and passes their positions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.metrics.streaming import (
    BootstrapGaussians,
    CodebookUsage,
    FeatureStore,
    RunningGaussian,
    RunningInceptionScore,
    RunningPixelMetrics,
    poisson1_weights,
    poisson1_weights_at,
)
from tests.reference_scores import inception_score_by_definition
from tests.thread_world import ThreadWorld

N, B = 23, 4  # 6 batches, the last of 3: rank 0 gets batches 0, 2, 4 (12 images), rank 1 gets 1, 3, 5 (11)


def _mine(rank: int, world: int = 2, n: int = N, b: int = B) -> list[range]:
    return [range(j * b, min(j * b + b, n)) for j in range(-(-n // b)) if j % world == rank]


@pytest.fixture
def world(monkeypatch):
    w = ThreadWorld(2)
    w.install(monkeypatch)
    return w


def _features(n=N, d=16, seed=0):
    return np.random.default_rng(seed).gamma(2.0, 0.3, size=(n, d)) + 5.0  # offset, like pool features


def test_batches_of_the_two_ranks_cover_the_set_once():
    assert sorted(i for r in (0, 1) for b in _mine(r) for i in b) == list(range(N))
    assert [len(b) for b in _mine(1)] == [4, 4, 3]


def test_running_gaussian_of_two_ranks_equals_np_cov_on_every_rank(world):
    x = _features()

    def work(rank):
        g = RunningGaussian(x.shape[1])
        for b in _mine(rank):
            g.update(x[b.start:b.stop])
        g.reduce()
        return g.n, *g.statistics()

    for n, mu, sigma in world.run(work):
        assert n == N
        np.testing.assert_allclose(mu, x.mean(0), rtol=1e-13)
        np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-11, atol=1e-14)


def test_a_rank_without_images_adds_nothing(world):
    x = _features(n=6)

    def work(rank):
        g = RunningGaussian(x.shape[1])
        if rank == 1:
            g.update(x)
        g.reduce()
        return g.n, *g.statistics()

    for n, mu, sigma in world.run(work):
        assert n == 6
        np.testing.assert_allclose(mu, x.mean(0), rtol=1e-13)
        np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-11, atol=1e-14)


@pytest.mark.filterwarnings("error")  # no 0/0 on the way
def test_gaussians_of_weight_zero_and_one_across_ranks(world):
    x = _features(n=1)

    def work(rank):
        empty, single = RunningGaussian(16), RunningGaussian(16)
        if rank == 1:
            single.update(x)
        empty.reduce()
        single.reduce()
        return empty, single

    for empty, single in world.run(work):
        assert empty.n == 0 and not empty.mean.any() and not empty.m2.any()
        assert single.n == 1
        np.testing.assert_array_equal(single.mean, x[0])
        assert not single.m2.any()


def test_bootstrap_weights_are_the_documented_draw_of_the_sampling_noise_hash():
    """Poisson(1) inverse CDF (scipy) of the counter-hash uniform of (seed, position): stream 2, step 0, one
    position, one code per replicate (titok.generators.noise), seeds (seed << 32) + position. Pins the weights
    records were made with, so a spread stays comparable across versions."""
    from scipy.stats import poisson

    from titok.generators.noise import counter_uniforms, seed_tensor

    positions, seed, replicates = [0, 1, 7, 2**20 + 3], 5, 6
    u = counter_uniforms(seed_tensor([(seed << 32) + p for p in positions], "cpu"), 2, 0, 1, replicates)[:, 0, :]
    want = poisson.ppf(u.double().numpy(), 1.0).T
    got = poisson1_weights_at(positions, replicates, seed)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(poisson1_weights(7, 1, replicates, seed)[:, 0], want[:, 2])


def test_bootstrap_replicates_of_two_ranks_weight_each_image_by_its_position(world):
    x, replicates = _features(), 4
    w = poisson1_weights(0, N, replicates, seed=3)  # a function of (seed, position, replicate) only, tested elsewhere

    def work(rank):
        bs = BootstrapGaussians(x.shape[1], replicates, seed=3)
        for b in reversed(_mine(rank)):  # added out of order: positions, not arrival, decide the weights
            bs.update(x[b.start:b.stop], b)
        bs.reduce()
        return bs.weight.copy(), [bs.statistics(r) for r in range(replicates)]

    for weight, stats in world.run(work):
        np.testing.assert_array_equal(weight, w.sum(1))
        for r, (mu, sigma) in enumerate(stats):
            fw = w[r].astype(np.int64)
            np.testing.assert_allclose(mu, (fw @ x) / fw.sum(), rtol=1e-12)
            np.testing.assert_allclose(sigma, np.cov(x, rowvar=False, fweights=fw), rtol=1e-10, atol=1e-13)



def test_inception_score_of_two_ranks_uses_each_image_position_for_its_split(world):
    logits = torch.randn(N, 1008, generator=torch.Generator().manual_seed(5)) * 3
    want = inception_score_by_definition(logits)

    def work(rank):
        isc = RunningInceptionScore(N, 1008)
        for b in _mine(rank):
            isc.update(logits[b.start:b.stop], b)
        isc.reduce()
        return isc.count.copy(), isc.seen, isc.result()

    for count, seen, got in world.run(work):
        assert count.sum() == seen == N
        assert got == pytest.approx(want, rel=1e-10)


def test_inception_score_positions_are_checked():
    isc = RunningInceptionScore(12, 1008)
    with pytest.raises(ValueError, match="announced"):
        isc.update(torch.zeros(2, 1008), [3, 12])
    with pytest.raises(ValueError, match="positions"):
        isc.update(torch.zeros(2, 1008), [3])
    with pytest.raises(ValueError, match="positions"):
        isc.update(torch.zeros(2, 1008), [3, -1])
    with pytest.raises(ValueError, match="positions"):
        isc.update(torch.zeros(2, 1008), [3.0, 4.0])
    isc.update(torch.zeros(0, 1008), [])  # an empty batch moves nothing
    assert isc.count.sum() == 0 and isc.seen == 0
    isc.update(torch.zeros(2, 1008), [10, 11])
    with pytest.raises(ValueError, match="position 12"):
        isc.update(torch.zeros(1, 1008))  # the position after the highest so far: 12, one too many
    isc.update(torch.zeros(1, 1008), range(0, 1))
    assert isc.count.sum() == 3 and isc.seen == 12


def test_feature_store_gathers_to_rank_zero_in_position_order(world):
    x = _features().astype(np.float32)

    def work(rank):
        store = FeatureStore()
        for b in reversed(_mine(rank)):
            store.update(x[b.start:b.stop], b)
        store.reduce()
        return store.array(), store.indices()

    (a0, i0), (a1, i1) = world.run(work)
    np.testing.assert_array_equal(a0, x)
    assert i0.tolist() == list(range(N))
    assert a1.shape[0] == 0 and i1.size == 0


def test_feature_store_keeps_float32_in_position_order_and_numbers_unplaced_batches_after_the_last():
    store = FeatureStore()
    assert store.array().shape == (0, 0) and store.array().dtype == np.float32
    assert store.indices().dtype == np.int64 and store.indices().size == 0
    x = _features(n=8)  # float64 in
    store.update(x[:2])  # positions 0, 1
    store.update(x[5:7], [6, 5])
    store.update(x[7:8])  # after the highest so far: 7
    store.update(x[2:5], range(2, 5))
    assert store.indices().tolist() == list(range(8))
    got = store.array()
    assert got.dtype == np.float32  # 4 bytes per value: the documented memory of KID and precision/recall
    np.testing.assert_array_equal(got, np.concatenate([x[:5], x[6:7], x[5:6], x[7:]]).astype(np.float32))


def test_pixel_sums_and_code_counts_of_two_ranks(world):
    g = torch.Generator().manual_seed(1)
    real = torch.randint(0, 256, (N, 3, 8, 8), dtype=torch.uint8, generator=g)
    recon = (real.int() + torch.randint(-9, 10, real.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    codes = torch.randint(0, 11, (N, 5), generator=g)  # codebook of 16: five codes never used

    def work(rank):
        pixels, usage = RunningPixelMetrics(("psnr",)), CodebookUsage(16)
        for b in _mine(rank):
            pixels.update(recon[b.start:b.stop], real[b.start:b.stop])
            usage.update(codes[b.start:b.stop])
        pixels.reduce()
        usage.reduce()
        return pixels.n, pixels.result(), usage.counts.clone(), usage.result()

    mse = ((recon.double() - real.double()) ** 2).flatten(1).mean(1).numpy()
    counts = np.bincount(codes.flatten().numpy(), minlength=16).astype(np.float64)
    p = counts / counts.sum()
    entropy = float(-(np.log2(p + 1e-8) * p).sum())
    for n, pix, got_counts, use in world.run(work):
        assert n == N
        assert pix["psnr"] == pytest.approx(float(np.mean(10 * np.log10(255.0**2 / mse))), rel=1e-12)
        np.testing.assert_array_equal(got_counts.numpy(), counts)
        assert use["codebook_usage"] == 11 / 16
        assert use["codebook_entropy_bits"] == pytest.approx(entropy, rel=1e-12)


def test_reduce_in_one_process_changes_nothing():
    x = _features()
    g, bs, isc = RunningGaussian(16), BootstrapGaussians(16, 3), RunningInceptionScore(N, 1008)
    logits = torch.randn(N, 1008, generator=torch.Generator().manual_seed(2))
    for b in _mine(0, 1):
        g.update(x[b.start:b.stop])
        bs.update(x[b.start:b.stop])
        isc.update(logits[b.start:b.stop])
    before = [a.copy() for a in (g.mean, g.m2, bs.mean, bs.m2, bs.weight, isc.plogp, isc.psum, isc.count)]
    for part in (g, bs, isc):
        part.reduce()
    after = (g.mean, g.m2, bs.mean, bs.m2, bs.weight, isc.plogp, isc.psum, isc.count)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)  # bitwise: not even the rounding of n * mean / n
    assert g.n == N and isc.seen == N
