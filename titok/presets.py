"""TiTok tokenizer presets: the released checkpoints, the paper's 512x512 models, and tiny CPU test presets.

Sizes and names are the release's (bytedance/1d-tokenizer, configs/infer/TiTok); see ../shared/FACTS.md.
"""

from __future__ import annotations

from titok.configs import VIT_SIZES, TokenizerConfig, VQGANConfig
from titok.registry import ModelSpec, register
from titok.tokenizer import TiTokTokenizer

HUB = "yucornetto/tokenizer_titok_{}_imagenet"
S, B, L = VIT_SIZES["small"], VIT_SIZES["base"], VIT_SIZES["large"]


def _two_stage(enc, tokens: int, image_size: int = 256) -> TokenizerConfig:
    """titok_l32/b64/s128 style: VQ 4096 x 12 l2-normalised, proxy codes -> MaskGIT-VQGAN decoder."""
    return TokenizerConfig(image_size=image_size, encoder=enc, decoder=enc, num_tokens=tokens)


def _single_stage_vq(enc, tokens: int) -> TokenizerConfig:
    return TokenizerConfig(encoder=enc, decoder=L, num_tokens=tokens, codebook_size=8192, token_size=64,
                           use_l2_norm=False, legacy_layout=False, pixel_decoder=None)


def _vae(enc, tokens: int) -> TokenizerConfig:
    return TokenizerConfig(encoder=enc, decoder=L, num_tokens=tokens, quantizer="vae", token_size=16,
                           use_l2_norm=False, legacy_layout=False, pixel_decoder=None)


_RELEASED = {
    # name: (config, display name)
    "titok_l32": (_two_stage(L, 32), "TiTok-L-32"),
    "titok_b64": (_two_stage(B, 64), "TiTok-B-64"),
    "titok_s128": (_two_stage(S, 128), "TiTok-S-128"),
    "titok_bl64_vq8k": (_single_stage_vq(B, 64), "TiTok-BL-64 VQ"),
    "titok_bl128_vq8k": (_single_stage_vq(B, 128), "TiTok-BL-128 VQ"),
    "titok_sl256_vq8k": (_single_stage_vq(S, 256), "TiTok-SL-256 VQ"),
    "titok_ll32_vae_c16": (_vae(L, 32), "TiTok-LL-32 VAE"),
    "titok_bl64_vae_c16": (_vae(B, 64), "TiTok-BL-64 VAE"),
    "titok_bl128_vae_c16": (_vae(B, 128), "TiTok-BL-128 VAE"),
}

# The paper's 512x512 tokenizers (Table 3); no checkpoint was released for them.
_PAPER_512 = {
    "titok_l64_512": (_two_stage(L, 64, image_size=512), "TiTok-L-64 (512)"),
    "titok_b128_512": (_two_stage(B, 128, image_size=512), "TiTok-B-128 (512)"),
}

# Tiny presets: the same code paths at 32x32 with a few thousand parameters, for CPU tests.
_TINY_VQGAN = VQGANConfig(hidden_channels=32, channel_mult=(1, 1, 1, 1, 1), num_res_blocks=1, z_channels=32,
                          codebook_size=64)
_T = VIT_SIZES["tiny"]
_TINY = {
    "titok_tiny_2stage": TokenizerConfig(image_size=32, encoder=_T, decoder=_T, num_tokens=8, codebook_size=64,
                                         token_size=8, pixel_decoder=_TINY_VQGAN),
    "titok_tiny_vq": TokenizerConfig(image_size=32, encoder=_T, decoder=_T, num_tokens=8, codebook_size=64,
                                     token_size=8, use_l2_norm=False, legacy_layout=False, pixel_decoder=None),
    "titok_tiny_vae": TokenizerConfig(image_size=32, encoder=_T, decoder=_T, num_tokens=8, quantizer="vae",
                                      token_size=4, use_l2_norm=False, legacy_layout=False, pixel_decoder=None),
}

for _name, (_cfg, _display) in _RELEASED.items():
    register(ModelSpec(_name, "tokenizer", "titok", _cfg, TiTokTokenizer, _display,
                       released_weights=HUB.format(_name.removeprefix("titok_"))))
for _name, (_cfg, _display) in _PAPER_512.items():
    register(ModelSpec(_name, "tokenizer", "titok", _cfg, TiTokTokenizer, _display,
                       notes="paper configuration at 512x512; no public checkpoint"))
for _name, _cfg in _TINY.items():
    register(ModelSpec(_name, "tokenizer", "titok", _cfg, TiTokTokenizer, _name, test_only=True))
