"""Training losses: pixel reconstruction, and the masked-token objective of the MaskGIT-style generator (arccos
schedule, class dropout, label smoothing, a small weight on unmasked tokens) as the TiTok release computes them
(bytedance/1d-tokenizer modeling/modules/losses.py, MLMLoss; modeling/maskgit.py, masking_input_tokens), pinned by
`mlm_loss.npz` of the training vectors (titok/train/release_vectors/masked_tokens.py).

The perceptual loss lives in perceptual.py, the discriminator and its hinge/LeCam terms in discriminator.py.
Every random draw here comes from per-sample seeds, so a sample's mask does not depend on its batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TOKEN_LOSS_NORMS = ("batch", "sample")


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Mean L1 or L2 pixel error of (B, 3, H, W) images."""
    recon, target = recon.float(), target.float()
    return F.l1_loss(recon, target) if kind == "l1" else F.mse_loss(recon, target)


def mask_ratio(timesteps: torch.Tensor) -> torch.Tensor:
    """The training mask ratio arccos(t) / (pi / 2), clamped to [1e-6, 1], in float32 as the release computes it."""
    return (torch.acos(timesteps.float()) / (math.pi * 0.5)).clamp(1e-6, 1.0)


def mask_counts(timesteps: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Masked-token counts (B,) long for draws t ~ U(0, 1) (B,): round(num_tokens * mask_ratio(t)) with torch's
    round half to EVEN, then at least 1 (modeling/maskgit.py masking_input_tokens; sampling floors instead)."""
    return (num_tokens * mask_ratio(timesteps)).round().clamp(min=1).long()


def masks_from_draws(timesteps: torch.Tensor, rand: torch.Tensor) -> torch.Tensor:
    """The release's masks (B, N) bool from its two draws: t (B,) and uniforms (B, N).

    Position i is masked iff the i-th entry of argsort(rand) (an index, not position i's rank) is below the
    count: a uniformly random subset of that size, and the one the release picks from the same draws.
    """
    return rand.argsort(dim=-1) < mask_counts(timesteps, rand.shape[-1])[:, None]


def mask_tokens(tokens: torch.Tensor, masks: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The generator's input: `mask_id` where masked, the code elsewhere."""
    return torch.where(masks, torch.full_like(tokens, mask_id), tokens)


def arccos_masks(seeds: torch.Tensor, num_tokens: int, label_dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample training masks of the generator, from each sample's seed (CPU).

    Each sample draws t ~ U(0, 1), then N uniforms, then its class-dropout uniform, from its own generator;
    masks_from_draws turns the first two into the release's mask. A row's class is dropped with probability
    `label_dropout`. -> (masks (B, N) bool, drop (B,) bool). (The release draws the same quantities from one
    global stream per batch; per-sample streams keep a sample's mask independent of how batches are split.)
    """
    times, rands, drop = [], [], []
    for s in seeds.tolist():
        g = torch.Generator().manual_seed(int(s))
        times.append(torch.rand((), generator=g))
        rands.append(torch.rand(num_tokens, generator=g))
        drop.append(torch.rand((), generator=g).item() < label_dropout)
    return masks_from_draws(torch.stack(times), torch.stack(rands)), torch.tensor(drop)


def masked_token_loss(logits: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor, label_smoothing: float = 0.0,
                      unmasked_weight: float = 0.0, norm: str = "batch") -> torch.Tensor:
    """The generator's token loss: cross-entropy with PyTorch's label smoothing (the smoothing mass spread over
    ALL classes, the target included) weighted 1 on masked positions and `unmasked_weight` on the others.

    logits (B, N, K), targets (B, N) long, masks (B, N) bool. `norm` "batch" (the release's MLMLoss): the weighted
    sum over the whole batch divided by (the weights' sum + 1e-8), so an image with more masked tokens weighs more.
    "sample" (ours, an option): normalised per image, then averaged, which weighs every image equally and makes the
    loss independent of how a batch is split over processes and accumulation steps.
    """
    if norm not in TOKEN_LOSS_NORMS:
        raise ValueError(f"norm must be one of {TOKEN_LOSS_NORMS}, got {norm!r}")
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none",
                         label_smoothing=label_smoothing)  # (B, N)
    m = masks.float()
    w = m + unmasked_weight * (1.0 - m)
    if norm == "sample":
        return ((ce * w).sum(1) / w.sum(1).clamp(min=1e-8)).mean()
    return (ce * w).sum() / (w.sum() + 1e-8)


def masked_token_accuracy(logits: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The release's logged `correct_tokens`: per image, the argmax accuracy over its masked positions (divided by
    their count + 1e-8), then averaged over the batch."""
    m = masks.float()
    hit = (logits.argmax(-1) == targets).float()
    return ((hit * m).sum(1) / (m.sum(1) + 1e-8)).mean()


def per_sample_normal(seeds: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise (B, *shape), row i drawn from seeds[i] (CPU)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds.tolist()])
