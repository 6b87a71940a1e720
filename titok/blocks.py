"""Transformer blocks shared by TiTok's tokenizer ViTs and its generators.

Parameter names follow the original release so its checkpoints load unchanged:
  * `ResidualAttentionBlock`: the open_clip-style pre-LN block of the tokenizer ViTs
    (`ln_1`, `attn.in_proj_weight`, `attn.out_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`);
  * `UViTBlock`: the U-ViT block of the titok_s128 generator (`norm1`, `attn.qkv`, `attn.proj`, `norm2`,
    `mlp.fc1`, `mlp.fc2`, optional `skip_linear` for the long skip connections).
Attention runs through `scaled_dot_product_attention`, which picks a fused kernel where one exists (or, as the
reference path of titok/inference.py, through the written-out softmax).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from titok.inference import options_of


def multi_head_attention(qkv: torch.Tensor, heads: int, impl: str = "sdpa", dropout_p: float = 0.0) -> torch.Tensor:
    """qkv (B, L, 3*D) packed as [q | k | v] -> attention output (B, L, D).

    `impl` "sdpa" uses the fused kernels; "math" writes softmax(QK^T / sqrt(d)) V out (the reference path).
    `dropout_p`: dropout on the attention probabilities (training only; the caller passes 0 in eval).
    """
    q, k, v = rearrange(qkv, "b l (three h d) -> three b h l d", three=3, h=heads)
    if impl == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, H, L, D/H)
    else:
        weights = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)  # (B, H, L, L)
        out = F.dropout(weights, dropout_p) @ v if dropout_p else weights @ v
    return rearrange(out, "b h l d -> b l (h d)")


class PackedSelfAttention(nn.Module):
    """Self-attention with a packed input projection, laid out like `nn.MultiheadAttention`'s parameters."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        return self.out_proj(multi_head_attention(qkv, self.heads, options_of(self).attention))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)); x + mlp(ln_2(x)), exact GELU."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = PackedSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class UViTAttention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool = False):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        return self.proj(multi_head_attention(self.qkv(x), self.heads, options_of(self).attention))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class UViTBlock(nn.Module):
    """Pre-LN block of U-ViT; with `skip=True` it first fuses a long skip: x = skip_linear([x, skip])."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, skip: bool = False):
        super().__init__()
        self.skip_linear = nn.Linear(2 * width, width) if skip else None
        self.norm1 = nn.LayerNorm(width)
        self.attn = UViTAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:  # (B, L, D)
        if self.skip_linear is not None:
            if skip is None:
                raise ValueError("this block fuses a long skip connection; pass `skip`")
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
