"""The generator contract: class labels -> logits over image tokens, and sampling them.

Every generator (TiTok's BERT- and U-ViT-style ones, the MaskGIT baseline) subclasses `Generator` and
implements `forward_ids` on the full token sequence [class token] + N image tokens. The token-id layout,
class shifting and null class for classifier-free guidance live here once.
"""

from __future__ import annotations

import torch
from torch import nn

from titok.generators.config import GeneratorConfig, SamplingConfig


class Generator(nn.Module):
    preset: str = ""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.num_tokens = config.num_tokens
        self.codebook_size = config.codebook_size
        self.num_classes = config.num_classes
        self.mask_token_id = config.codebook_size
        self.null_class_id = config.codebook_size + config.num_classes + 1

    @property
    def sampling(self) -> SamplingConfig:
        return self.config.sampling

    @property
    def tokenizer_preset(self) -> str | None:
        from titok.registry import get_spec

        return get_spec("generator", self.preset).tokenizer if self.preset else None

    def forward_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, 1+N) -> logits (B, N, K) for the image positions."""
        raise NotImplementedError

    def class_token_ids(self, class_labels: torch.Tensor, unconditional: bool | torch.Tensor = False) -> torch.Tensor:
        """labels (B,) in [0, num_classes) -> vocabulary ids (B,); unconditional rows get the null class."""
        checked = class_labels.numel() and not class_labels.is_meta  # meta tensors (FLOP counting) hold no values
        if checked and (int(class_labels.min()) < 0 or int(class_labels.max()) >= self.num_classes):
            raise ValueError(f"class labels must lie in [0, {self.num_classes})")
        ids = class_labels.long() + self.codebook_size + 1
        null = torch.full_like(ids, self.null_class_id)
        return torch.where(torch.as_tensor(unconditional, device=ids.device), null, ids)

    def logits(
        self, input_ids: torch.Tensor, class_labels: torch.Tensor, unconditional: bool | torch.Tensor = False
    ) -> torch.Tensor:
        """input_ids (B, N) with `codebook_size` marking masked positions, labels (B,) -> logits (B, N, K)."""
        if input_ids.ndim != 2 or input_ids.shape[1] != self.num_tokens:
            raise ValueError(f"expected input_ids of shape (B, {self.num_tokens}), got {tuple(input_ids.shape)}")
        cls = self.class_token_ids(class_labels, unconditional)
        return self.forward_ids(torch.cat([cls[:, None], input_ids.long()], dim=1))

    @torch.no_grad()
    def generate(
        self,
        class_labels: torch.Tensor,
        generator: torch.Generator | None = None,
        seeds: list[int] | torch.Tensor | None = None,
        progress: bool = False,
        **sampling_overrides,
    ) -> torch.Tensor:
        """Sample image tokens (B, N) for `class_labels` with the preset's sampling defaults (overridable).

        Randomness is drawn per sample from `seeds` (one per label); give seeds derived from a global sample
        index and the tokens do not depend on how the labels are split into batches. Without seeds, they are
        drawn from `generator` (or torch's global RNG).
        """
        from titok.generators.sampler import sample_tokens
        from titok.registry import config_with_overrides

        sampling = config_with_overrides(self.sampling, sampling_overrides) if sampling_overrides else self.sampling
        return sample_tokens(self, class_labels, sampling, seeds=seeds, generator=generator, progress=progress).tokens
