"""Edges of the training losses that the by-hand tests of test_train_losses.py do not reach: the masks' per-sample
draws, the clamps of the mask ratio, the epsilons of the token loss, the LeCam EMA's default decay and the
discriminator loss's cross-process mean. Each was a mutant that survived `tox -e mutation`
(results/mutation/2026-12-06-numeric-core.md); the expected values are written here from the release's formulas.
"""

from __future__ import annotations

import math

import pytest
import torch

from titok.train.discriminator import BlurDownsample, LeCamEMA, discriminator_loss
from titok.train.losses import arccos_masks, mask_ratio, masked_token_loss, per_sample_normal


def test_arccos_masks_draw_t_then_the_uniforms_then_the_dropout_from_each_samples_seed():
    """Per sample: t, then N uniforms, then the class-dropout uniform, from torch.Generator().manual_seed(seed);
    count = max(1, round-half-even(N * arccos(t) / (pi / 2))); position i is masked iff argsort(u)[i] < count (the
    release's rule: an index, not a rank); dropped iff the third draw < label_dropout."""
    seeds, n, dropout = [11, 12, 13, 14, 15, 16, 17, 18], 7, 0.5
    masks, drop = arccos_masks(torch.tensor(seeds), n, dropout)
    assert masks.shape == (len(seeds), n) and masks.dtype == torch.bool and drop.shape == (len(seeds),)
    counts = set()
    for i, s in enumerate(seeds):
        g = torch.Generator().manual_seed(s)
        t = torch.rand((), generator=g).item()
        u = torch.rand(n, generator=g).tolist()
        d = torch.rand((), generator=g).item()
        count = max(1, round(n * math.acos(t) / (math.pi / 2)))  # Python's round is half to even, as torch's
        order = sorted(range(n), key=u.__getitem__)
        assert masks[i].tolist() == [order[j] < count for j in range(n)], s
        assert bool(drop[i]) == (d < dropout), s
        counts.add(count)
    assert len(counts) > 2 and 0 < int(drop.sum()) < len(seeds)  # not a vacuous comparison
    # A sample's mask is its seed's alone, whatever batch it is in.
    alone, alone_drop = arccos_masks(torch.tensor(seeds[3:4]), n, dropout)
    assert torch.equal(alone[0], masks[3]) and alone_drop[0] == drop[3]


def test_mask_ratio_is_clamped_to_the_releases_bounds():
    """The release: clamp(arccos(t) / (pi / 2), min=1e-6, max=1); t = 1 and t = -1 reach the two bounds."""
    got = mask_ratio(torch.tensor([1.0, -1.0, 0.5]))
    assert got[0].item() == pytest.approx(1e-6, rel=1e-6) and got[1].item() == 1.0
    assert got[2].item() == pytest.approx(2 / 3, rel=1e-6)  # arccos(0.5) = pi / 3


def test_token_loss_names_a_bad_norm():
    logits, targets, masks = torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=bool)
    with pytest.raises(ValueError, match="norm must be one of .*'mean'"):
        masked_token_loss(logits, targets, masks, norm="mean")


def test_token_loss_epsilons_at_tiny_and_zero_weights():
    """MLMLoss divides by (sum of weights + 1e-8): with a weight sum of 1e-8 that halves the mean, and a batch with
    nothing weighted gives 0, not NaN. norm="sample" divides each image by max(its weight sum, 1e-8), so an image
    whose only weights are 0.1 on its unmasked tokens gets their weighted mean."""
    logits = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])  # token 0: p = (3/4, 1/4); token 1: uniform
    targets = torch.tensor([[0, 1]])
    ce = [math.log(4 / 3), math.log(2.0)]
    none = torch.tensor([[False, False]])
    tiny = masked_token_loss(logits, targets, none, unmasked_weight=1e-8).item()
    assert tiny == pytest.approx(sum(ce) * 1e-8 / (2e-8 + 1e-8), rel=1e-4)
    for norm in ("batch", "sample"):
        assert masked_token_loss(logits, targets, none, norm=norm).item() == 0.0
    # Row 0: token 0 masked (weight 1), token 1 unmasked (0.1); row 1: nothing masked (weights 0.1, 0.1 sum to 0.2).
    pair = torch.cat([logits, logits]), torch.cat([targets, targets]), torch.tensor([[True, False], [False, False]])
    want = ((ce[0] + 0.1 * ce[1]) / 1.1 + (0.1 * ce[0] + 0.1 * ce[1]) / 0.2) / 2
    assert masked_token_loss(*pair, unmasked_weight=0.1, norm="sample").item() == pytest.approx(want, rel=1e-6)


def test_lecam_ema_default_decay_is_the_releases():
    """The release's lecam_ema_decay is 0.999: one update from 0 moves each EMA by 0.001 of the step's mean."""
    ema = LeCamEMA()
    ema.update(torch.tensor(2.0), torch.tensor(-4.0))
    assert ema.ema_real.item() == pytest.approx(0.002, rel=1e-5)
    assert ema.ema_fake.item() == pytest.approx(-0.004, rel=1e-5)


def test_blur_downsample_of_an_odd_size_pads_one_before_and_two_after():
    """TF "same" for a 4-tap window at stride 2 over 5 pixels: 3 outputs, padding 3 in all, 1 before and 2 after,
    so pixel 2 sits at padded index 3: output 0 sees it at tap 3 (weight 1), output 1 at tap 1 (3), output 2 not."""
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 64.0  # the kernel is (1, 3, 3, 1)^T (1, 3, 3, 1) / 64
    want = torch.tensor([[1.0, 3.0, 0.0], [3.0, 9.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(BlurDownsample(4)(x)[0, 0], want)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])  # the release's default blur: 4 taps
    torch.testing.assert_close(BlurDownsample().kernel[0, 0], taps[:, None] * taps[None, :] / 64)


class _FixedLogits(torch.nn.Module):
    """The joint (real, fake) pass of a discriminator that rates every real image `real` and every fake `fake`."""

    def __init__(self, real: float, fake: float):
        super().__init__()
        self.real, self.fake = real, fake

    def forward(self, x):
        half = x.shape[0] // 2
        return torch.cat([torch.full((half,), self.real), torch.full((half,), self.fake)])


def test_discriminator_loss_takes_lecams_means_over_every_process():
    """With `reduce` (DDP's mean over processes), LeCam reads the global mean logits and returns them; the hinge
    stays this process's. Here another process is simulated by averaging with its means (2.5, -1.5)."""
    ema = LeCamEMA(0.9)
    ema.ema_real.fill_(0.5), ema.ema_fake.fill_(-0.25)
    other = torch.tensor([2.5, -1.5])
    loss, logs, means = discriminator_loss(_FixedLogits(0.5, 0.5), torch.zeros(2), torch.zeros(2), ema, 0.1,
                                           reduce=lambda m: (m + other) / 2)
    real_mean, fake_mean = (0.5 + 2.5) / 2, (0.5 - 1.5) / 2  # 1.5, -0.5
    assert means.tolist() == [real_mean, fake_mean]
    lecam = max(real_mean - (-0.25), 0) ** 2 + max(0.5 - fake_mean, 0) ** 2  # 1.75^2 + 1^2
    hinge = 0.5 * (max(1 - 0.5, 0) + max(1 + 0.5, 0))  # local logits
    assert logs["lecam_loss"].item() == pytest.approx(0.1 * lecam, rel=1e-6)
    assert loss.item() == pytest.approx(hinge + 0.1 * lecam, rel=1e-6)


def test_per_sample_normal_rows_are_their_seeds_draws():
    """Row i is torch.randn(shape) from a generator seeded with seeds[i]: the same at every call and in any batch."""
    got = per_sample_normal(torch.tensor([3, 4]), (5,))
    assert torch.equal(got, per_sample_normal(torch.tensor([3, 4]), (5,)))
    assert torch.equal(got[1], torch.randn(5, generator=torch.Generator().manual_seed(4)))
    assert torch.equal(got[0], per_sample_normal(torch.tensor([3]), (5,))[0]) and not torch.equal(got[0], got[1])
