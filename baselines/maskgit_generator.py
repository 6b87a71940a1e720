"""The MaskGIT class-conditional generator (Chang et al. 2022) over MaskGIT-VQGAN tokens, the generation
baseline of the TiTok paper: 16x16 = 256 tokens at 256x256, 32x32 = 1024 at 512x512.

Architecture per the MaskGIT paper: a bidirectional transformer, 24 layers, 16 heads, 768 wide, 3072 MLP. It is
built as the BERT-style generator TiTok uses (the same framework, other token count and codebook); sampling
uses MaskGIT's choice temperature 4.5 and no classifier-free guidance, 8 steps at 256 and 12 at 512.
No PyTorch checkpoint of MaskGIT is public (the release is JAX): these presets run with random weights for
speed and memory, and load a state dict converted to the BERT-style key names when a user has one.
"""

from __future__ import annotations

from titok.generators.config import GeneratorConfig, SamplingConfig
from titok.generators.presets import build_generator
from titok.registry import ModelSpec, register

NOTE = "no public PyTorch checkpoint (the MaskGIT release is JAX); random weights unless a converted one is given"


def _maskgit(tokens: int, steps: int) -> GeneratorConfig:
    return GeneratorConfig(arch="bert", hidden_size=768, num_layers=24, num_heads=16, intermediate_size=3072,
                           num_tokens=tokens, codebook_size=1024,
                           sampling=SamplingConfig(num_steps=steps, randomize_temperature=4.5, guidance_scale=0.0,
                                                   guidance_decay="constant", softmax_temperature_annealing=False))


register(ModelSpec("maskgit_256", "generator", "baselines", _maskgit(256, 8), build_generator, "MaskGIT",
                   tokenizer="maskgit_vqgan_f16_1024", notes=NOTE))
register(ModelSpec("maskgit_512", "generator", "baselines", _maskgit(1024, 12), build_generator, "MaskGIT (512)",
                   tokenizer="maskgit_vqgan_f16_1024_512", notes=NOTE))
