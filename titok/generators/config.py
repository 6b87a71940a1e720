"""Configs of the MaskGIT-style generators (TiTok's and the MaskGIT baseline) and of their sampler."""

from __future__ import annotations

from dataclasses import dataclass

from titok.configs import ConfigMixin
from titok.errors import ConfigError

GUIDANCE_DECAYS = ("constant", "linear", "power-cosine")


@dataclass(frozen=True)
class SamplingConfig(ConfigMixin):
    """MaskGIT iterative decoding, as the TiTok release samples for its gFID numbers.

    `randomize_temperature` scales the Gumbel noise on both the sampled tokens and the confidence used to pick
    which tokens stay, annealed linearly to 0. Guidance: `constant` uses `guidance_scale` throughout; `linear`
    ramps it from 0 (no guidance on the first step) to `guidance_scale`; `power-cosine` is MDT's schedule with
    exponent `guidance_scale_pow`. A scale of 0 turns guidance off (one forward pass per step).
    """

    num_steps: int = 8
    randomize_temperature: float = 9.5
    guidance_scale: float = 4.5
    guidance_decay: str = "linear"
    guidance_scale_pow: float = 3.0
    softmax_temperature_annealing: bool = True  # the release's sample_imagenet_titok.py turns it on

    def __post_init__(self) -> None:
        if self.guidance_decay not in GUIDANCE_DECAYS:
            raise ConfigError(f"guidance_decay must be one of {GUIDANCE_DECAYS}, got {self.guidance_decay!r}")
        if self.num_steps < 1:
            raise ConfigError(f"num_steps must be >= 1, got {self.num_steps}")


@dataclass(frozen=True)
class GeneratorConfig(ConfigMixin):
    """A bidirectional transformer over [class token] + N image tokens.

    Vocabulary: [0, K) image codes, K = mask, K+1 .. K+num_classes the classes, K+num_classes+1 the null class.
    """

    arch: str = "bert"  # "bert" (post-LN, HF BertModel layout) | "uvit" (pre-LN with long skips)
    hidden_size: int = 768
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 3072
    num_tokens: int = 32
    codebook_size: int = 4096
    num_classes: int = 1000
    dropout: float = 0.1  # training only
    sampling: SamplingConfig = SamplingConfig()

    def __post_init__(self) -> None:
        if self.arch not in ("bert", "uvit"):
            raise ConfigError(f"arch must be 'bert' or 'uvit', got {self.arch!r}")
        if self.arch == "uvit" and self.num_layers % 2:
            raise ConfigError("the U-ViT generator needs an even num_layers (in blocks, mid block, out blocks)")

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + self.num_classes + 2
