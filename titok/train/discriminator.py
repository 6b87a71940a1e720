"""The release's GAN discriminator and the terms it trains with: hinge losses and LeCam regularisation.

TiTok's stage 2 and single-stage tokenizers (arXiv 2406.07550; bytedance/1d-tokenizer
modeling/modules/discriminator.py, modeling/modules/losses.py) use a fully convolutional discriminator:
a 5x5 stem, `stages` blocks of (3x3 conv, blur-pool down by 2, GroupNorm(32), LeakyReLU(0.1)), an adaptive max-pool
to 16x16 and two convs to a (B, 1, 16, 16) logit map. Block i maps channels * m[i] -> channels * m[i + 1] with
m = (1, 1, 2, 4, ...) (the release's `in_channel_mult`): 128 -> 128 -> 256 -> 512 by default, 1,909,889 parameters
under the release's key names (pinned by ../shared/parity/vectors-train/discriminator_seed1.npz). It sees images in
[0, 1] as they are, reconstructions unclamped, and always runs in float32 (the release's loss module disables
autocast around it).

LeCam regularisation (Tseng et al., CVPR 2021) keeps the discriminator's mean logits near an EMA of the other
side's: relu(mean_real - ema_fake)^2 + relu(ema_real - mean_fake)^2, weighted 0.001 in the release, with EMAs of
decay 0.999 starting from 0. The penalty of a step compares against the EMAs from BEFORE the step; the EMAs are then
moved toward the step's mean logits. Unlike the hinge term it is not gated by the release's discriminator_factor (the
loop trains the discriminator only from `loss.disc_start` on, as the release's loop does). The release takes the means
over each GPU's batch and updates the EMAs once per loss call (per micro-batch); the loop takes them over the global
micro-batch (all processes) and updates once per optimizer step with the mean over its micro-batches, so a run means
the same at any process count and accumulation (identical to the release at 1 process, no accumulation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from titok.quantizer import full_precision

# 1-D binomial taps of the blur-pool, by kernel size (the release uses 4).
BLUR_TAPS = {3: (1.0, 2.0, 1.0), 4: (1.0, 3.0, 3.0, 1.0), 5: (1.0, 4.0, 6.0, 4.0, 1.0)}


def _same_conv(cin: int, cout: int, kernel: int) -> nn.Conv2d:
    # At stride 1 with an odd kernel, TF-style "same" padding is symmetric: kernel // 2 on each side.
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2)


class BlurDownsample(nn.Module):
    """Anti-aliased downsampling by 2: a normalised binomial kernel applied per channel at stride 2."""

    def __init__(self, taps: int = 4):
        super().__init__()
        t = torch.tensor(BLUR_TAPS[taps])
        kernel = t[:, None] * t[None, :]
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None], persistent=False)  # (1, 1, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))
        h, w = x.shape[-2:]
        # The release pads as TF "same" for a 4-tap, stride-2 window whatever the blur size: extra pixel at the end.
        ph, pw = (max((math.ceil(i / 2) - 1) * 2 + 4 - i, 0) for i in (h, w))
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.kernel.expand(x.shape[1], -1, -1, -1), stride=2, groups=x.shape[1])


class NLayerDiscriminator(nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> real/fake logits (B, 1, 16, 16). Key names follow the release's."""

    def __init__(self, channels: int = 128, stages: int = 3, blur_taps: int = 4):
        super().__init__()
        if channels % 32:
            raise ValueError(f"discriminator channels must be a multiple of 32 (GroupNorm(32)), got {channels}")
        act = lambda: nn.LeakyReLU(0.1)  # noqa: E731
        self.block_in = nn.Sequential(_same_conv(3, channels, 5), act())
        widths = [channels] + [channels * 2**i for i in range(stages)]  # the release's in_channel_mult (1, 1, 2, 4)
        self.blocks = nn.ModuleList(
            nn.Sequential(_same_conv(cin, cout, 3), BlurDownsample(blur_taps), nn.GroupNorm(32, cout), act())
            for cin, cout in zip(widths[:-1], widths[1:], strict=True))
        self.pool = nn.AdaptiveMaxPool2d((16, 16))
        c = widths[-1]
        self.to_logits = nn.Sequential(_same_conv(c, c, 1), act(), _same_conv(c, 1, 5))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with full_precision(images):
            h = self.block_in(images.float())
            for block in self.blocks:
                h = block(h)
            return self.to_logits(self.pool(h))


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """0.5 * (mean relu(1 - real) + mean relu(1 + fake))."""
    return 0.5 * (F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean())


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.float().mean()


def lecam_loss(real_mean: torch.Tensor, fake_mean: torch.Tensor, ema_real: torch.Tensor,
               ema_fake: torch.Tensor) -> torch.Tensor:
    """relu(mean real logit - EMA of fake)^2 + relu(EMA of real - mean fake logit)^2 (scalars in, scalar out)."""
    return F.relu(real_mean - ema_fake).pow(2) + F.relu(ema_real - fake_mean).pow(2)


class LeCamEMA(nn.Module):
    """The EMAs of the mean real and fake logits that LeCam compares against; saved with the checkpoint."""

    def __init__(self, decay: float = 0.999):
        super().__init__()
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    def loss(self, real_mean: torch.Tensor, fake_mean: torch.Tensor) -> torch.Tensor:
        """LeCam of this micro-batch's mean real and fake logits (scalars) against the EMAs before this step."""
        return lecam_loss(real_mean, fake_mean, self.ema_real, self.ema_fake)

    @torch.no_grad()
    def update(self, real_mean: torch.Tensor, fake_mean: torch.Tensor) -> None:
        """Move the EMAs toward this step's mean logits (over all processes and micro-batches)."""
        self.ema_real.mul_(self.decay).add_(real_mean.float() * (1 - self.decay))
        self.ema_fake.mul_(self.decay).add_(fake_mean.float() * (1 - self.decay))


def adversarial_active(step: int, disc_start: int) -> bool:
    """Whether the step (0 = the first optimizer step) trains with the discriminator: from `disc_start` on, inclusive
    (the release's should_discriminator_be_trained: global_step >= discriminator_start); -1 = never."""
    return 0 <= disc_start <= step


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, lecam: LeCamEMA | None,
                       lecam_weight: float, reduce=None) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """The discriminator's loss on one micro-batch, as the release's discriminator mode computes it.

    hinge(D(real), D(fake)) + lecam_weight * LeCam(mean logits vs the EMAs before this step); `fake` is detached
    here, so this loss moves no tokenizer weight. Real and fake go through in one pass (GroupNorm is per sample, so
    this equals two). `reduce` maps the (2,) local means to the global ones (DDP). The EMAs are NOT updated here:
    the caller folds in the step's means after the step (LeCamEMA.update). -> (loss, logs with the release's names
    and meanings: discriminator_loss = the total, lecam_loss = the weighted penalty; means (2,) real, fake).
    """
    real_logits, fake_logits = disc(torch.cat([real, fake.detach()])).chunk(2)
    loss = hinge_d_loss(real_logits, fake_logits)
    means = torch.stack([real_logits.float().mean(), fake_logits.float().mean()])
    logs = {}
    if lecam is not None:
        if reduce is not None:
            means = reduce(means)
        reg = lecam_weight * lecam.loss(means[0], means[1])
        loss = loss + reg
        logs["lecam_loss"] = reg.detach()
    logs["discriminator_loss"] = loss.detach()
    return loss, logs, means
