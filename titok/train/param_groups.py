"""Optimiser parameter groups as the TiTok release makes them: no weight decay on biases, norms and embeddings.

bytedance/1d-tokenizer utils/train_utils.py (create_optimizer) excludes a parameter from weight decay when it has
fewer than 2 dimensions or its name contains one of NO_DECAY_NAME_PARTS, for the tokenizer, the generator and the
discriminator alike. Our modules keep the release's parameter names (they load its checkpoints as they are), so the
same rule on the same names gives the same groups: latent tokens, class/position embeddings, the embedding tables,
LayerNorm/GroupNorm gains and every bias train without decay; linear and conv weights decay.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

NO_DECAY_NAME_PARTS = ("ln", "bias", "latent_tokens", "mask_token", "embedding", "norm", "gamma", "embed")


def decays(name: str, param: nn.Parameter) -> bool:
    """Whether the release applies weight decay to this parameter."""
    return param.ndim >= 2 and not any(part in name for part in NO_DECAY_NAME_PARTS)


def weight_decay_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Two AdamW groups of the trainable parameters: [no decay, `weight_decay`] (the release's order)."""
    trainable = [(n, p) for n, p in named if p.requires_grad]
    return [{"params": [p for n, p in trainable if not decays(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in trainable if decays(n, p)], "weight_decay": weight_decay}]
