"""MaskGIT generator presets (Chang et al. 2022), the generation baseline of the TiTok paper: 16x16 = 256 tokens at
256x256 and 32x32 = 1024 at 512x512, over the MaskGIT-VQGAN's 1024 codes, with hmorimitsu/maskgit-torch's PyTorch
conversion of the JAX release as the weights (`maskgit_imagenet256.ckpt`, `maskgit_imagenet512.ckpt`).

Sampling is MaskGIT's own (the paper, and google-research/maskgit's `parallel_decode` that maskgit-torch ports):
cosine mask schedule, tokens drawn at temperature 1, choice temperature 4.5 on the log-probability confidence
annealed linearly to 0, no classifier-free guidance. Steps: 8 at 256 and 12 at 512, as the paper reports its FIDs
(6.18 / 7.32). maskgit-torch's scripts default to 16 at both; its README (FID 6.10 / 7.04) does not state the steps.
Sample as its scripts do with `MASKGIT_TORCH_SAMPLING`, or `[run.sampling] num_steps = 16` in a suite.
"""

from __future__ import annotations

from baselines.maskgit_transformer import MaskGITTransformer, MaskGITTransformerConfig
from titok.generators.config import SamplingConfig
from titok.registry import ModelSpec, register

MASKGIT_TORCH_RELEASE = "github hmorimitsu/maskgit-torch, release tag 'weights': {}"
# What maskgit-torch's generate_imagenet.py runs: decode(num_iter=16), choice temperature 4.5 (its config).
MASKGIT_TORCH_SAMPLING = {"num_steps": 16}


def maskgit_sampling(num_steps: int) -> SamplingConfig:
    """MaskGIT's decoding with `num_steps` iterations."""
    return SamplingConfig(num_steps=num_steps, randomize_temperature=4.5, guidance_scale=0.0,
                          guidance_decay="constant", softmax_temperature_annealing=False, mask_schedule="cosine",
                          token_sampling="categorical", confidence="log-prob")


_NOTE = "weights: {}; give the path (--weights). MaskGIT sampling, the paper's {} steps (maskgit-torch's scripts: 16)"
for _name, _display, _tokens, _steps, _tok in (("maskgit_256", "MaskGIT", 256, 8, "maskgit_torch_vqgan_256"),
                                                 ("maskgit_512", "MaskGIT (512)", 1024, 12, "maskgit_torch_vqgan_512")):
    register(ModelSpec(_name, "generator", "baselines",
                       MaskGITTransformerConfig(num_tokens=_tokens, sampling=maskgit_sampling(_steps)),
                       MaskGITTransformer, _display, tokenizer=_tok,
                       notes=_NOTE.format(MASKGIT_TORCH_RELEASE.format(f"maskgit_imagenet{_name[-3:]}.ckpt"), _steps),
                       released_weights=MASKGIT_TORCH_RELEASE.format(f"maskgit_imagenet{_name[-3:]}.ckpt"),
                       extra={"maskgit_torch_sampling": MASKGIT_TORCH_SAMPLING}))

# The same code at CPU-test size, over maskgit_torch_vqgan_tiny's 8x8 = 64 codes of 64 entries.
register(ModelSpec("maskgit_tiny", "generator", "baselines",
                   MaskGITTransformerConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                            num_tokens=64, codebook_size=64, num_classes=1000,
                                            sampling=maskgit_sampling(4)),
                   MaskGITTransformer, "maskgit_tiny", tokenizer="maskgit_torch_vqgan_tiny", test_only=True))
