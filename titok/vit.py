"""TiTok's 1D ViT encoder and decoder (arXiv 2406.07550, Sec. 3.2).

The encoder appends N learnable latent tokens to the image patches and keeps only their outputs: the
image becomes a 1D sequence of N tokens. The decoder does the reverse: N (quantized) tokens plus a grid
of mask tokens in, the grid's outputs become pixels (single stage) or proxy-code logits (two stage).
Parameter names are the release's; `legacy_layout` reproduces its encoder reshape and FFN head exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import nn

from titok.blocks import ResidualAttentionBlock
from titok.configs import ViTSize


class _ViT(nn.Module):
    """What encoder and decoder share: class/position embeddings, pre/post LayerNorm, the blocks."""

    def __init__(self, size: ViTSize, grid_size: int, num_tokens: int):
        super().__init__()
        w = size.width
        scale = w**-0.5
        self.width, self.grid_size, self.num_tokens = w, grid_size, num_tokens
        self.class_embedding = nn.Parameter(scale * torch.randn(1, w))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid_size**2 + 1, w))
        self.latent_token_positional_embedding = nn.Parameter(scale * torch.randn(num_tokens, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = nn.ModuleList(
            ResidualAttentionBlock(w, size.heads, size.mlp_ratio) for _ in range(size.layers)
        )
        self.ln_post = nn.LayerNorm(w)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_pre(x)
        for block in self.transformer:
            x = block(x)
        return x


class TiTokEncoder(_ViT):
    def __init__(self, size: ViTSize, image_size: int, patch_size: int, num_tokens: int, out_channels: int,
                 legacy_layout: bool):
        super().__init__(size, image_size // patch_size, num_tokens)
        self.legacy_layout = legacy_layout
        self.patch_embed = nn.Conv2d(3, size.width, kernel_size=patch_size, stride=patch_size)
        # A 1x1 conv in the release (its checkpoints store a 4-D weight); applied as a linear map.
        self.conv_out = nn.Conv2d(size.width, out_channels, kernel_size=1)

    def forward(self, images: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0,1], latent_tokens (N, D) -> token features (B, N, C)."""
        b = images.shape[0]
        x = rearrange(self.patch_embed(images), "b d h w -> b (h w) d")  # (B, G*G, D)
        cls = self.class_embedding.to(x.dtype).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (B, 1+G*G, D)
        latents = (latent_tokens + self.latent_token_positional_embedding).to(x.dtype).expand(b, -1, -1)
        x = self._blocks(torch.cat([x, latents], dim=1))
        latents = self.ln_post(x[:, 1 + self.grid_size**2 :])  # (B, N, D)
        if self.legacy_layout:
            # The release reshapes (B, N, D) to (B, D, N) without a transpose: every token's output mixes
            # the memory of several tokens. Released two-stage weights were trained with it; keep it.
            latents = latents.reshape(b, self.width, self.num_tokens).transpose(1, 2)
        return F.linear(latents, self.conv_out.weight.flatten(1), self.conv_out.bias)  # (B, N, C)


class TiTokDecoder(_ViT):
    def __init__(self, size: ViTSize, image_size: int, patch_size: int, num_tokens: int, token_size: int,
                 legacy_layout: bool, proxy_codes: int = 1024):
        super().__init__(size, image_size // patch_size, num_tokens)
        w = size.width
        self.decoder_embed = nn.Linear(token_size, w)
        self.mask_token = nn.Parameter(w**-0.5 * torch.randn(1, 1, w))
        if legacy_layout:  # proxy-code logits for the MaskGIT-VQGAN decoder
            self.ffn = nn.Sequential(nn.Conv2d(w, 2 * w, 1), nn.Tanh(), nn.Conv2d(2 * w, proxy_codes, 1))
            self.conv_out = nn.Identity()
        else:  # pixels directly: each grid cell predicts its p x p x 3 patch
            self.ffn = nn.Sequential(
                nn.Conv2d(w, patch_size * patch_size * 3, 1),
                Rearrange("b (p1 p2 c) h w -> b c (h p1) (w p2)", p1=patch_size, p2=patch_size),
            )
            self.conv_out = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, C) -> proxy-code logits (B, 1024, G, G) or pixels (B, 3, H, W)."""
        b, n, _ = tokens.shape
        if n != self.num_tokens:
            raise ValueError(f"expected {self.num_tokens} tokens, got {n}")
        x = self.decoder_embed(tokens) + self.latent_token_positional_embedding.to(tokens.dtype)
        grid = self.mask_token.to(x.dtype).expand(b, self.grid_size**2, -1)
        cls = self.class_embedding.to(x.dtype).expand(b, -1, -1)
        queries = torch.cat([cls, grid], dim=1) + self.positional_embedding.to(x.dtype)  # (B, 1+G*G, D)
        x = self._blocks(torch.cat([queries, x], dim=1))
        x = self.ln_post(x[:, 1 : 1 + self.grid_size**2])  # (B, G*G, D)
        x = rearrange(x, "b (h w) d -> b d h w", h=self.grid_size)
        return self.conv_out(self.ffn(x)).contiguous()  # NCHW out, whatever layout the convolutions used
