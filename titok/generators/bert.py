"""The BERT-style generator of TiTok-L-32 / B-64: a bidirectional post-LN
transformer laid out like Hugging Face's `BertModel` under the prefix `model.`, so the release's checkpoints
load as they are, plus a linear head over the codebook (`model.lm_head`). Written without `transformers`.
"""

from __future__ import annotations

import torch
from torch import nn

from titok.blocks import multi_head_attention
from titok.generators.base import Generator
from titok.generators.config import GeneratorConfig
from titok.inference import options_of

LN_EPS = 1e-12  # BertConfig's layer_norm_eps in the release


class BertEmbeddings(nn.Module):
    def __init__(self, vocab: int, width: int, max_positions: int, dropout: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, width)
        self.position_embeddings = nn.Embedding(max_positions, width)
        self.token_type_embeddings = nn.Embedding(2, width)  # only type 0 is ever used
        self.LayerNorm = nn.LayerNorm(width, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, D)
        x = self.word_embeddings(ids) + self.position_embeddings.weight[: ids.shape[1]]
        x = x + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, width: int, attn_dropout: float):
        super().__init__()
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        # HF BertSelfAttention's dropout on the attention probabilities (attention_probs_dropout_prob 0.1 in the
        # release's generator): one of its 73 dropout sites, applied inside the attention kernel when training.
        self.dropout = nn.Dropout(attn_dropout)


class BertAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float, attn_dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.self = BertSelfAttention(width, attn_dropout)
        self.output = nn.Module()
        self.output.dense = nn.Linear(width, width)
        self.output.LayerNorm = nn.LayerNorm(width, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D), post-LN
        s = self.self
        qkv = torch.cat([s.query(x), s.key(x), s.value(x)], dim=-1)
        p = s.dropout.p if self.training else 0.0
        h = self.dropout(self.output.dense(multi_head_attention(qkv, self.heads, options_of(self).attention, p)))
        return self.output.LayerNorm(x + h)


class BertLayer(nn.Module):
    def __init__(self, width: int, heads: int, intermediate: int, dropout: float, attn_dropout: float = 0.0):
        super().__init__()
        self.attention = BertAttention(width, heads, dropout, attn_dropout)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(width, intermediate)
        self.output = nn.Module()
        self.output.dense = nn.Linear(intermediate, width)
        self.output.LayerNorm = nn.LayerNorm(width, eps=LN_EPS)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        x = self.attention(x)
        h = self.dropout(self.output.dense(self.act(self.intermediate.dense(x))))
        return self.output.LayerNorm(x + h)


class _BertModel(nn.Module):
    def __init__(self, c: GeneratorConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(c.vocab_size, c.hidden_size, c.num_tokens + 1, c.dropout)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(
            BertLayer(c.hidden_size, c.num_heads, c.intermediate_size, c.dropout, c.attn_dropout)
            for _ in range(c.num_layers)
        )
        self.lm_head = nn.Linear(c.hidden_size, c.codebook_size)


class BertGenerator(Generator):
    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        self.model = _BertModel(config)
        self.apply(_init_weights)

    def convert_state_dict(self, sd: dict) -> dict:
        # HF's BertModel stores integer index buffers the release's files may carry; they hold no weights.
        return {k: v for k, v in sd.items() if not k.endswith(("embeddings.position_ids", "embeddings.token_type_ids"))}

    def forward_ids(self, input_ids: torch.Tensor) -> torch.Tensor:  # (B, 1+N) -> (B, N, K)
        x = self.model.embeddings(input_ids)
        for layer in self.model.encoder.layer:
            x = layer(x)
        return self.model.lm_head(x[:, 1:])


def _init_weights(m: nn.Module) -> None:
    # BERT's initialiser (normal, std 0.02), used for training from scratch.
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)
