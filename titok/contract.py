"""The tokenizer contract every model in the project keeps (TiTok and the baselines alike).

A tokenizer subclasses `Tokenizer` and implements `encode` / `decode` on float images in [0, 1]:
  encode(x (B,3,H,W)) -> VQ: long codes (B, N) | VAE: posterior means (B, N, C)
  decode(codes)       -> images (B,3,H,W) on the [0,1] scale, NOT clamped (metrics quantize later)
It declares `image_size`, `num_tokens` and `codebook_size` (VQ) or `token_channels` (VAE). What a user
needs around that lives here once: input checks, batching, device placement, autocast and `reconstruct`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """bf16/fp16 autocast where asked for; float32 (no context) otherwise."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] or float [0,1] images -> float32 [0,1]."""
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return images.float()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0,1] float images -> uint8, clamped and rounded (how every metric library quantizes)."""
    return (images.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def chunks(n: int, batch_size: int | None) -> Iterator[slice]:
    step = n if not batch_size else batch_size
    for start in range(0, n, max(step, 1)):
        yield slice(start, min(start + step, n))


class Tokenizer(nn.Module):
    """Base class: subclasses set the attributes below and implement `encode` and `decode`."""

    image_size: int
    num_tokens: int
    codebook_size: int | None = None  # VQ tokenizers
    token_channels: int | None = None  # VAE tokenizers
    preset: str = ""

    @property
    def is_vq(self) -> bool:
        return self.codebook_size is not None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_images(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"{self.preset or type(self).__name__} takes {self.image_size}x{self.image_size} images, got "
                f"{x.shape[-2]}x{x.shape[-1]}; resize and center-crop first (titok.data.images does)"
            )
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(
        self, images: torch.Tensor, batch_size: int | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """images (B,3,H,W) uint8 or [0,1] float, any device -> reconstructions as uint8 (B,3,H,W) on CPU.

        Runs in batches of `batch_size` on the tokenizer's device, under autocast to `dtype` if given.
        """
        out = []
        device = self.device
        for sl in chunks(images.shape[0], batch_size):
            x = self.check_images(to_unit_float(images[sl].to(device)))
            with autocast_context(device, dtype):
                rec = self.decode(self.encode(x))
            out.append(to_uint8(rec).cpu())
        return torch.cat(out) if out else torch.empty(0, 3, self.image_size, self.image_size, dtype=torch.uint8)
