"""Training losses: pixel reconstruction, and the masked-token objective of the MaskGIT-style generator (arccos
schedule, class dropout, label smoothing, a small weight on unmasked tokens) as the TiTok release computes them
(bytedance/1d-tokenizer modeling/modules/losses.py, MLMLoss; modeling/maskgit.py, masking_input_tokens).

The perceptual loss lives in perceptual.py, the discriminator and its hinge/LeCam terms in discriminator.py.
Every random draw here comes from per-sample seeds, so a sample's loss does not depend on its batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Mean L1 or L2 pixel error of (B, 3, H, W) images."""
    recon, target = recon.float(), target.float()
    return F.l1_loss(recon, target) if kind == "l1" else F.mse_loss(recon, target)


def arccos_masks(seeds: torch.Tensor, num_tokens: int, label_dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample training masks of the generator, from each sample's seed (CPU).

    u ~ U(0, 1), mask ratio arccos(u) / (pi / 2), round(N * ratio) (at least 1) positions masked, chosen
    uniformly; a row's class is dropped with probability `label_dropout`. -> (masks (B, N) bool, drop (B,) bool).
    """
    masks, drop = [], []
    for s in seeds.tolist():
        g = torch.Generator().manual_seed(int(s))
        u = torch.rand((), generator=g).item()
        ratio = min(max(math.acos(u) / (math.pi / 2), 1e-6), 1.0)
        count = max(1, round(num_tokens * ratio))
        rank = torch.rand(num_tokens, generator=g).argsort().argsort()  # a random rank per position
        masks.append(rank < count)
        drop.append(torch.rand((), generator=g).item() < label_dropout)
    return torch.stack(masks), torch.tensor(drop)


def masked_token_loss(logits: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor, label_smoothing: float = 0.0,
                      unmasked_weight: float = 0.0) -> torch.Tensor:
    """The generator's token loss: cross-entropy (with label smoothing) weighted 1 on masked positions and
    `unmasked_weight` on the others, normalised by the weights' sum per sample, then averaged over the batch.

    logits (B, N, K), targets (B, N) long, masks (B, N) bool. The release (label smoothing 0.1, unmasked weight 0.1)
    normalises by the weights' sum over the whole per-GPU batch instead; per sample keeps the loss independent of
    how a batch is split over processes and accumulation steps (2 processes train as 1), at the cost of weighting
    every image equally rather than by its number of masked tokens.
    """
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none",
                         label_smoothing=label_smoothing)  # (B, N)
    m = masks.float()
    w = m + unmasked_weight * (1.0 - m)
    return ((ce * w).sum(1) / w.sum(1).clamp(min=1e-8)).mean()


def per_sample_normal(seeds: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise (B, *shape), row i drawn from seeds[i] (CPU)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds.tolist()])
