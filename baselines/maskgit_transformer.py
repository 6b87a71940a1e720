"""MaskGIT's bidirectional transformer (Chang et al., "MaskGIT: Masked Generative Image Transformer", 2022) as
hmorimitsu/maskgit-torch converts the JAX release (`maskgit_imagenet{256,512}.ckpt`), under that file's key names.

What it computes (each point checked by the maskgit-torch parity vectors):
  * input: LayerNorm(token embedding + learned position embedding), no token-type embedding;
  * 24 post-LN blocks: x = LN(x + attention(x)); x = LN(x + MLP(x)), LayerNorm eps 1e-12, exact GELU, 16 heads
    of 48 (`nn.MultiheadAttention`'s packed q|k|v parameters);
  * output head: dense -> GELU -> LN, then the product with the token embedding itself (tied) plus a bias;
    only the first `codebook_size` columns (the image codes) are ever read, so only those are computed.
Sequence layout, unlike TiTok's generators: [label + K] then the N image tokens, mask id K + num_classes
(2024 for K = 1024), vocabulary K + num_classes + 1 (2025): no null class, hence no classifier-free guidance.
The project's contract marks a masked position with K; `forward_ids` maps it to MaskGIT's mask id.
Inference only: the attention-probability dropout of training is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from titok.blocks import PackedSelfAttention
from titok.configs import ConfigMixin
from titok.generators.base import Generator
from titok.generators.config import SamplingConfig

LN_EPS = 1e-12  # every LayerNorm of the conversion


@dataclass(frozen=True)
class MaskGITTransformerConfig(ConfigMixin):
    hidden_size: int = 768
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 3072
    num_tokens: int = 256
    codebook_size: int = 1024
    num_classes: int = 1000
    dropout: float = 0.1  # training only
    sampling: SamplingConfig = SamplingConfig()

    @property
    def vocab_size(self) -> int:  # codes, classes, mask
        return self.codebook_size + self.num_classes + 1

    @property
    def mask_id(self) -> int:  # the mask token in MaskGIT's vocabulary (2024 for 1024 codes, 1000 classes)
        return self.codebook_size + self.num_classes


class MaskGITBlock(nn.Module):
    """A post-LN transformer block, named as maskgit-torch's `Encoder` block."""

    def __init__(self, width: int, heads: int, intermediate: int, dropout: float):
        super().__init__()
        self.MultiHeadAttention = PackedSelfAttention(width, heads)
        self.AttentionLN = nn.LayerNorm(width, eps=LN_EPS)
        self.MlpLN = nn.LayerNorm(width, eps=LN_EPS)
        self.MLP = nn.Sequential(nn.Linear(width, intermediate), nn.GELU(), nn.Linear(intermediate, width),
                                 nn.Dropout(dropout))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        x = self.AttentionLN(x + self.dropout(self.MultiHeadAttention(x)))
        return self.MlpLN(x + self.MLP(x))


class MaskGITTransformer(Generator):
    has_null_class = False  # the sampler refuses guidance for it

    def __init__(self, config: MaskGITTransformerConfig):
        super().__init__(config)
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.hidden_size)
        self.pos_emb = nn.Parameter(torch.zeros(c.num_tokens + 1, c.hidden_size))
        self.emb_ln = nn.LayerNorm(c.hidden_size, eps=LN_EPS)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.Sequential(*(MaskGITBlock(c.hidden_size, c.num_heads, c.intermediate_size, c.dropout)
                                      for _ in range(c.num_layers)))
        self.Token_Prediction = nn.Sequential(nn.Linear(c.hidden_size, c.hidden_size), nn.GELU(),
                                              nn.LayerNorm(c.hidden_size, eps=LN_EPS))
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))
        # Random init as the conversion's (truncated normal, std 0.02): only speed runs use random weights.
        for p in (self.tok_emb.weight, self.pos_emb, *(m.weight for m in self.modules() if isinstance(m, nn.Linear))):
            nn.init.trunc_normal_(p, std=0.02)

    def class_token_ids(self, class_labels: torch.Tensor, unconditional: bool | torch.Tensor = False) -> torch.Tensor:
        """labels (B,) -> MaskGIT's class tokens label + K (B,). There is no null class to drop a label to."""
        if bool(torch.as_tensor(unconditional).any()):
            raise ValueError(f"{self.preset or 'MaskGIT'} has no null class: no unconditional logits")
        if class_labels.numel() and (int(class_labels.min()) < 0 or int(class_labels.max()) >= self.num_classes):
            raise ValueError(f"class labels must lie in [0, {self.num_classes})")
        return class_labels.long() + self.codebook_size

    def forward_ids(self, input_ids: torch.Tensor) -> torch.Tensor:  # (B, 1+N) -> (B, N, K)
        image = input_ids[:, 1:]
        image = torch.where(image == self.mask_token_id, self.config.mask_id, image)  # contract's K -> MaskGIT's
        ids = torch.cat([input_ids[:, :1], image], dim=1)
        x = self.drop(self.emb_ln(self.tok_emb(ids) + self.pos_emb[: ids.shape[1]]))  # (B, 1+N, D)
        x = self.Token_Prediction(self.blocks(x)[:, 1:])  # (B, N, D)
        k = self.codebook_size
        return F.linear(x, self.tok_emb.weight[:k], self.bias[:k])  # (B, N, K): tied embedding of the codes
