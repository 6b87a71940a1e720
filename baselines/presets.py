"""Baseline tokenizer presets: MaskGIT-VQGAN (the TiTok release's and maskgit-torch's conversions) and
taming-transformers' ImageNet VQGANs, plus tiny test ones."""

from __future__ import annotations

from baselines.maskgit_vqgan import MaskGITVQGANConfig, MaskGITVQGANTokenizer
from baselines.taming_vqgan import TamingConfig, TamingVQGANTokenizer
from titok.configs import VQGANConfig
from titok.registry import ModelSpec, register

MASKGIT_WEIGHTS = "maskgit-vqgan-imagenet-f16-256.bin from the TiTok release (hub repo fun-research/TiTok)"
TAMING_WEIGHTS = "taming-transformers README: 'ImageNet (f=16), VQGAN {}' (last.ckpt, Lightning)"

register(ModelSpec("maskgit_vqgan_f16_1024", "tokenizer", "baselines", MaskGITVQGANConfig(), MaskGITVQGANTokenizer,
                   "MaskGIT-VQGAN", released_weights=MASKGIT_WEIGHTS))
register(ModelSpec("maskgit_vqgan_f16_1024_512", "tokenizer", "baselines", MaskGITVQGANConfig(image_size=512),
                   MaskGITVQGANTokenizer, "MaskGIT-VQGAN (512)", released_weights=MASKGIT_WEIGHTS,
                   notes="the TiTok release's 256 weights applied at 512x512 (32x32 tokens); "
                         "maskgit_torch_vqgan_512 holds MaskGIT's own 512 weights"))
# maskgit-torch's conversions: the same network, converted separately per resolution, with its own key names and
# GroupNorm eps (baselines/maskgit_vqgan.py). The tokenizers of the maskgit_256 / maskgit_512 generators.
MASKGIT_TORCH_WEIGHTS = "github hmorimitsu/maskgit-torch, release tag 'weights': tokenizer_imagenet{}.ckpt"
_MASKGIT_TORCH_VQGAN = VQGANConfig(norm_eps=1e-5)
for _size in (256, 512):
    register(ModelSpec(f"maskgit_torch_vqgan_{_size}", "tokenizer", "baselines",
                       MaskGITVQGANConfig(image_size=_size, vqgan=_MASKGIT_TORCH_VQGAN, weights_layout="maskgit-torch"),
                       MaskGITVQGANTokenizer, f"MaskGIT-VQGAN (maskgit-torch, {_size})",
                       released_weights=MASKGIT_TORCH_WEIGHTS.format(_size),
                       notes=f"weights: {MASKGIT_TORCH_WEIGHTS.format(_size)}; give the path (--weights, "
                             "--tokenizer-weights, a suite's weights table)"))
register(ModelSpec("taming_vqgan_f16_1024", "tokenizer", "baselines", TamingConfig(n_embed=1024), TamingVQGANTokenizer,
                   "Taming-VQGAN f16-1024", released_weights=TAMING_WEIGHTS.format("f16-1024")))
register(ModelSpec("taming_vqgan_f16_16384", "tokenizer", "baselines", TamingConfig(n_embed=16384),
                   TamingVQGANTokenizer, "Taming-VQGAN f16-16384", released_weights=TAMING_WEIGHTS.format("f16-16384")))

register(ModelSpec("maskgit_vqgan_tiny", "tokenizer", "baselines",
                   MaskGITVQGANConfig(image_size=32, vqgan=VQGANConfig(hidden_channels=32, channel_mult=(1, 1, 2),
                                                                       num_res_blocks=1, z_channels=32,
                                                                       codebook_size=64)),
                   MaskGITVQGANTokenizer, "maskgit_vqgan_tiny", test_only=True))
# The tiny two-stage TiTok's pixel decoder is this network (f16 at 32x32 -> a 2x2 grid of 64 codes): the frozen
# proxy-code teacher of `titok-train --model.task=proxy_codes --model.preset=titok_tiny_2stage`.
register(ModelSpec("maskgit_vqgan_tiny_f16", "tokenizer", "baselines",
                   MaskGITVQGANConfig(image_size=32, vqgan=VQGANConfig(hidden_channels=32, channel_mult=(1, 1, 1, 1, 1),
                                                                       num_res_blocks=1, z_channels=32,
                                                                       codebook_size=64)),
                   MaskGITVQGANTokenizer, "maskgit_vqgan_tiny_f16", test_only=True))
# maskgit-torch's layout at CPU-test size (f4 at 32x32: 8x8 codes), the tokenizer of the maskgit_tiny generator.
register(ModelSpec("maskgit_torch_vqgan_tiny", "tokenizer", "baselines",
                   MaskGITVQGANConfig(image_size=32, weights_layout="maskgit-torch",
                                      vqgan=VQGANConfig(hidden_channels=32, channel_mult=(1, 1, 2), num_res_blocks=1,
                                                        z_channels=32, codebook_size=64, norm_eps=1e-5)),
                   MaskGITVQGANTokenizer, "maskgit_torch_vqgan_tiny", test_only=True))
register(ModelSpec("taming_vqgan_tiny", "tokenizer", "baselines",
                   TamingConfig(image_size=32, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(8,),
                                resolution=32, z_channels=32, embed_dim=16, n_embed=64),
                   TamingVQGANTokenizer, "taming_vqgan_tiny", test_only=True))
