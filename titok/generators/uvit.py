"""The U-ViT-style generator of TiTok-S-128: pre-LN blocks with long skip connections between the first and
the last half (U-ViT, Bao et al. 2023), over [class token] + N image tokens. Release key names."""

from __future__ import annotations

import torch
from torch import nn

from titok.blocks import UViTBlock
from titok.generators.base import Generator
from titok.generators.config import GeneratorConfig


class UViTGenerator(Generator):
    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        c = config
        w, ratio, half = c.hidden_size, c.intermediate_size / c.hidden_size, c.num_layers // 2
        self.embeddings = nn.Embedding(c.vocab_size, w)
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_tokens + 1, w))
        self.in_blocks = nn.ModuleList(UViTBlock(w, c.num_heads, ratio) for _ in range(half))
        self.mid_block = UViTBlock(w, c.num_heads, ratio)
        self.out_blocks = nn.ModuleList(UViTBlock(w, c.num_heads, ratio, skip=True) for _ in range(half))
        self.norm = nn.LayerNorm(w)
        self.lm_head = nn.Linear(w, c.codebook_size)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_ids(self, input_ids: torch.Tensor) -> torch.Tensor:  # (B, 1+N) -> (B, N, K)
        x = self.embeddings(input_ids) + self.pos_embed[:, : input_ids.shape[1]]
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())
        return self.lm_head(self.norm(x)[:, 1:])
