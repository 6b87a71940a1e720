"""Key names of hmorimitsu/maskgit-torch's tokenizer checkpoints (`tokenizer_imagenet{256,512}.ckpt`), mapped onto
the MaskGIT-VQGAN module this project already has (titok/maskgit_vqgan.py, the TiTok release's key names).

Why a mapping and not a second module: both files are PyTorch conversions of the same JAX network. maskgit-torch
numbers its layers by position (`encoder.res_blocks.{level}.{layer}`, the middle blocks as one more level, the
decoder's levels from the top down, the upsampling convolution as the layer after the `Upsample` placeholder) and
names a residual block's parts `norm0/conv0/norm1/conv1/conv_res`; the TiTok release has `down`/`mid`/`up` and
`norm1/conv1/norm2/conv2/nin_shortcut`. The table is derived from the config, so it covers any size.

Errors name the keys as the maskgit-torch file spells them, since that is what a user can look for in the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from titok.configs import VQGANConfig
from titok.weights import WeightsError, key_problems

# A residual block's parameters: TiTok release name -> maskgit-torch name.
_BLOCK_PARTS = {"norm1": "norm0", "conv1": "conv0", "norm2": "norm1", "conv2": "conv1", "nin_shortcut": "conv_res"}


def _original_block(prefix: str, j: str, part: str, leaf: str) -> str:
    return f"{prefix}.{j}.{_BLOCK_PARTS[part]}.{leaf}"


def maskgit_torch_name(key: str, cfg: VQGANConfig) -> str:
    """The maskgit-torch name of one of our MaskGIT-VQGAN parameter names (`key`), for a network of `cfg`'s size."""
    top = len(cfg.channel_mult)  # maskgit-torch: encoder levels 0..top-1, then the middle blocks as level `top`
    if key == "quantize.embedding.weight":
        return "quantizer.codebook.weight"
    m = re.match(r"^encoder\.down\.(\d+)\.block\.(\d+)\.(\w+)\.(weight|bias)$", key)
    if m:
        return _original_block(f"encoder.res_blocks.{m[1]}", m[2], m[3], m[4])
    m = re.match(r"^encoder\.mid\.(\d+)\.(\w+)\.(weight|bias)$", key)
    if m:
        return _original_block(f"encoder.res_blocks.{top}", m[1], m[2], m[3])
    m = re.match(r"^decoder\.mid\.(\d+)\.(\w+)\.(weight|bias)$", key)
    if m:
        return _original_block("decoder.res_blocks.0", m[1], m[2], m[3])
    m = re.match(r"^decoder\.up\.(\d+)\.block\.(\d+)\.(\w+)\.(weight|bias)$", key)
    if m:  # decoder level i runs as maskgit-torch's res_blocks[top - i] (the middle blocks are its [0])
        return _original_block(f"decoder.res_blocks.{top - int(m[1])}", m[2], m[3], m[4])
    m = re.match(r"^decoder\.up\.(\d+)\.upsample_conv\.(weight|bias)$", key)
    if m:  # after the level's blocks comes a parameter-free Upsample, then this convolution
        return f"decoder.res_blocks.{top - int(m[1])}.{cfg.num_res_blocks + 1}.{m[2]}"
    if re.match(r"^(encoder|decoder)\.(conv_in|conv_out|norm_out)\.(weight|bias)$", key):
        return key  # the same name in both conversions
    raise KeyError(f"no maskgit-torch name for MaskGIT-VQGAN parameter {key!r}")  # a bug of ours, not the user's


def is_maskgit_torch_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is in maskgit-torch's names (else: the TiTok release's names, which are ours)."""
    return "quantizer.codebook.weight" in state_dict or any(".res_blocks." in k for k in state_dict)


def from_maskgit_torch(state_dict: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                       cfg: VQGANConfig) -> dict[str, torch.Tensor]:
    """A maskgit-torch tokenizer state dict renamed to our keys (`own`: the model's state dict, for the names and
    shapes). Missing, unexpected and mis-shaped entries are one error naming them as maskgit-torch spells them."""
    theirs = {k: maskgit_torch_name(k, cfg) for k in own}  # ours -> maskgit-torch's name
    problems = key_problems(state_dict, own, theirs)
    if problems:
        raise WeightsError("not a maskgit-torch tokenizer checkpoint of this size (names as in the file): "
                           + "; ".join(problems))
    return {k: state_dict[o] for k, o in theirs.items()}
