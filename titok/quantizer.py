"""Quantizers of TiTok's latent tokens: a VQ codebook (optionally l2-normalised) and a diagonal Gaussian.

`VectorQuantizer` keeps the release's key (`embedding.weight`). With `use_l2_norm` (titok_l32/b64/s128)
both the tokens and the codes are unit-normalised before the nearest-neighbour search, and the looked-up
codes are normalised too. The nearest-code search, the code lookup and the VQ losses run in float32 with autocast
switched off, as the release does: casting tokens to float32 is not enough, because an enclosing bf16 autocast
recasts the distance matmul to bf16 and a few percent of codes flip (3.7% with 4096 codes of 12 dims). That would
silently corrupt a tokenizer's codes and the stage-1 teacher's (MaskGIT-VQGAN, same class) proxy labels.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (..., D), straight-through gradient to the input
    codes: torch.Tensor  # (...,) long
    loss: torch.Tensor  # commitment + codebook loss (scalar)
    commitment: torch.Tensor | None = None  # its parts, as the release logs them: commitment_cost * MSE(z, sg(zq))
    codebook: torch.Tensor | None = None  # MSE(zq, sg(z))


def full_precision(t: torch.Tensor) -> AbstractContextManager:
    """Autocast off on `t`'s device: what runs inside computes in the dtype of its inputs (float32 here).

    Meta tensors (FLOP counting) have no autocast to switch off."""
    if t.device.type == "meta":
        return nullcontext()
    return torch.autocast(device_type=t.device.type, enabled=False)


class VectorQuantizer(nn.Module):
    def __init__(self, num_codes: int, dim: int, use_l2_norm: bool = False, commitment_cost: float = 0.25):
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.use_l2_norm = use_l2_norm
        self.commitment_cost = commitment_cost
        self.embedding = nn.Embedding(num_codes, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)

    def _codebook(self) -> torch.Tensor:
        w = self.embedding.weight.float()
        return F.normalize(w, dim=-1) if self.use_l2_norm else w

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., D) -> indices (...,) of the closest code (squared L2, float32)."""
        with full_precision(z):
            flat = z.reshape(-1, self.dim).float()
            if self.use_l2_norm:
                flat = F.normalize(flat, dim=-1)
            codes = self._codebook()
            d = flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * flat @ codes.t()  # (M, K)
            return d.argmin(dim=1).reshape(z.shape[:-1])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (...,) long -> vectors (..., D)."""
        if codes.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"codes must be integer, got {codes.dtype}")
        # The range check reads values back to Python; under torch.compile that would split the graph, and the
        # embedding lookup itself refuses an out-of-range index there.
        # Meta tensors (FLOP counting) hold no values to check.
        checked = codes.numel() and not codes.is_meta and not torch.compiler.is_compiling()
        if checked and (int(codes.min()) < 0 or int(codes.max()) >= self.num_codes):
            lo, hi = int(codes.min()), int(codes.max())
            raise ValueError(f"codes out of range [0, {self.num_codes}): min {lo}, max {hi}")
        with full_precision(codes):
            z = self.embedding(codes)
            return F.normalize(z, dim=-1) if self.use_l2_norm else z

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize with the VQ-VAE losses (used in training)."""
        codes = self.nearest(z)
        with full_precision(z):
            zq = self.lookup(codes).float()
            zf = F.normalize(z.float(), dim=-1) if self.use_l2_norm else z.float()
            commitment = self.commitment_cost * F.mse_loss(zf, zq.detach())
            codebook = F.mse_loss(zq, zf.detach())
            quantized = zf + (zq - zf).detach()
        return QuantizerOutput(quantized.to(z.dtype), codes, commitment + codebook, commitment, codebook)


@dataclass
class DiagonalGaussian:
    """The VAE posterior of the release's `*_vae_*` tokenizers: channels split into (mean, logvar)."""

    mean: torch.Tensor  # (..., C)
    logvar: torch.Tensor  # (..., C), clamped to [-30, 20] like the release

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> DiagonalGaussian:
        mean, logvar = moments.float().chunk(2, dim=-1)
        return cls(mean, logvar.clamp(-30.0, 20.0))

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device)
        return self.mean + torch.exp(0.5 * self.logvar) * noise

    def kl(self) -> torch.Tensor:
        """KL to the standard normal, summed over tokens and channels: (B,)."""
        var = torch.exp(self.logvar)
        return 0.5 * (self.mean.pow(2) + var - 1.0 - self.logvar).flatten(1).sum(1)
