"""Configs of the MaskGIT-style generators (TiTok's and the MaskGIT baseline) and of their sampler."""

from __future__ import annotations

from dataclasses import dataclass

from titok.configs import ConfigMixin
from titok.errors import ConfigError
from titok.generators.noise import NOISE_SCHEME, NOISE_SCHEMES

GUIDANCE_DECAYS = ("constant", "linear", "power-cosine")
MASK_SCHEDULES = ("arccos", "cosine")
TOKEN_SAMPLINGS = ("annealed-gumbel", "categorical")
CONFIDENCES = ("logit", "log-prob")


@dataclass(frozen=True)
class SamplingConfig(ConfigMixin):
    """MaskGIT iterative decoding; the defaults are how the TiTok release samples for its gFID numbers.

    `randomize_temperature` scales the Gumbel noise on the confidence used to pick which tokens stay, annealed
    linearly to 0 (MaskGIT's "choice temperature"). Guidance: `constant` uses `guidance_scale` throughout;
    `linear` ramps it from 0 (no guidance on the first step) to `guidance_scale`; `power-cosine` is MDT's schedule
    with exponent `guidance_scale_pow`. A scale of 0 turns guidance off (one forward pass per step).

    Where the TiTok release and MaskGIT's own decoding (Chang et al. 2022; google-research/maskgit's
    `parallel_decode`) differ, a field names the choice:
      mask_schedule   tokens still masked after step t of T: N*arccos(t/T)/(pi/2) (TiTok) or N*cos(pi/2*t/T) (MaskGIT);
      token_sampling  "annealed-gumbel": the token is argmax(logits + annealed temperature * Gumbel) (TiTok);
                      "categorical": drawn from softmax(logits) at temperature 1 throughout (MaskGIT);
      confidence      what the choice noise is added to: the sampled token's logit (TiTok) or its log-probability
                      (MaskGIT), which ranks positions differently because each position has its own normaliser.

    `noise_scheme` names how the randomness is drawn (`titok.generators.noise`): "counter-icdf-v1" (default; one
    uniform per token, inverse CDF) or "counter-hash-v1" (a uniform per token and code, Gumbel-max; what earlier
    versions drew). Both draw from the same distributions; the numbers, hence the samples, differ.
    """

    num_steps: int = 8
    randomize_temperature: float = 9.5
    guidance_scale: float = 4.5
    guidance_decay: str = "linear"
    guidance_scale_pow: float = 3.0
    softmax_temperature_annealing: bool = True  # the release's sample_imagenet_titok.py turns it on
    mask_schedule: str = "arccos"
    token_sampling: str = "annealed-gumbel"
    confidence: str = "logit"
    noise_scheme: str = NOISE_SCHEME

    def __post_init__(self) -> None:
        for name, allowed in (("guidance_decay", GUIDANCE_DECAYS), ("mask_schedule", MASK_SCHEDULES),
                              ("token_sampling", TOKEN_SAMPLINGS), ("confidence", CONFIDENCES),
                              ("noise_scheme", NOISE_SCHEMES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
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
    # Training only. BERT: hidden dropout and attention-probability dropout, 0.1 each as the release's
    # BertConfig (configs/training/generator/maskgit.yaml dropout / attn_drop). U-ViT: no dropout at all, as the
    # release's UViTBert effectively trains (it never passes the config's rates on: all its p are 0).
    dropout: float = 0.1
    attn_dropout: float = 0.1
    sampling: SamplingConfig = SamplingConfig()

    def __post_init__(self) -> None:
        if self.arch not in ("bert", "uvit"):
            raise ConfigError(f"arch must be 'bert' or 'uvit', got {self.arch!r}")
        if self.arch == "uvit" and self.num_layers % 2:
            raise ConfigError("the U-ViT generator needs an even num_layers (in blocks, mid block, out blocks)")

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + self.num_classes + 2
