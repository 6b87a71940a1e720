"""MaskGIT-VQGAN (Chang et al. 2022, as converted to PyTorch for the TiTok release, and by maskgit-torch).

TiTok's two-stage tokenizers decode through this network's decoder; with the encoder and the codebook
it is also the MaskGIT baseline tokenizer (baselines/maskgit_vqgan.py). f16, 1024 codes x 256 dims, no attention.
Two details of the converted network matter for weight compatibility and are kept on purpose:
  * residual-block convolutions have no bias;
  * when a residual block changes width, its 1x1 `nin_shortcut` is applied to the block's *output*
    (not to its input, as in taming's VQGAN); its weights are therefore (out, out, 1, 1).
Images are on the [0, 1] scale in and out. Both public PyTorch conversions (the TiTok release's and
hmorimitsu/maskgit-torch's) are this network; they differ in key names (baselines/maskgit_torch_keys.py) and in
the GroupNorm epsilon (`VQGANConfig.norm_eps`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from titok.configs import VQGANConfig
from titok.inference import to_memory_format, upsample_conv


def _norm(channels: int, eps: float) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=eps, affine=True)


def _conv3x3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    # "same" padding at stride 1, which is what the original's Conv2dSame computes for odd kernels.
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, eps: float):
        super().__init__()
        self.norm1 = _norm(cin, eps)
        self.conv1 = _conv3x3(cin, cout, bias=False)
        self.norm2 = _norm(cout, eps)
        self.conv2 = _conv3x3(cout, cout, bias=False)
        self.nin_shortcut = nn.Conv2d(cout, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        residual = x if self.nin_shortcut is None else self.nin_shortcut(h)
        return h + residual


class _Level(nn.Module):
    """One resolution level: residual blocks, then an optional resampling."""

    def __init__(self, cin: int, cout: int, num_blocks: int, eps: float, upsample: bool = False):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(cin if i == 0 else cout, cout, eps) for i in range(num_blocks))
        self.upsample_conv = _conv3x3(cout, cout) if upsample else None


class Encoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch, mult = cfg.hidden_channels, cfg.channel_mult
        self.conv_in = _conv3x3(cfg.image_channels, ch, bias=False)
        in_mult = (1,) + tuple(mult)
        self.down = nn.ModuleList(_Level(ch * in_mult[i], ch * mult[i], cfg.num_res_blocks, cfg.norm_eps)
                                  for i in range(len(mult)))
        mid = ch * mult[-1]
        self.mid = nn.ModuleList(ResnetBlock(mid, mid, cfg.norm_eps) for _ in range(cfg.num_res_blocks))
        self.norm_out = _norm(mid, cfg.norm_eps)
        self.conv_out = nn.Conv2d(mid, cfg.z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, Z, H/16, W/16)
        h = self.conv_in(to_memory_format(x, self))
        for i, level in enumerate(self.down):
            for block in level.block:
                h = block(h)
            if i != len(self.down) - 1:
                h = F.avg_pool2d(h, kernel_size=2, stride=2)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h))).contiguous()


class Decoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch, mult = cfg.hidden_channels, cfg.channel_mult
        top = ch * mult[-1]
        self.conv_in = _conv3x3(cfg.z_channels, top)
        # Kept in float32 under bf16 (titok/inference.py KEEP_FP32): its input, the expected code vector, varies
        # between images by ~0.2% of its size (random weights), bf16's relative step; in bf16 this convolution
        # moved the tiny preset's decodes by 20 uint8 levels on average, 0.7 in fp32 (bench/devtools/bf16_layers.py).
        self.conv_in.keep_fp32 = True
        self.mid = nn.ModuleList(ResnetBlock(top, top, cfg.norm_eps) for _ in range(cfg.num_res_blocks))
        # up[i] works at level i; it receives level i+1's width (the top level receives its own).
        levels = []
        for i in range(len(mult)):
            cin = ch * (mult[i + 1] if i + 1 < len(mult) else mult[-1])
            levels.append(_Level(cin, ch * mult[i], cfg.num_res_blocks, cfg.norm_eps, upsample=i != 0))
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(ch * mult[0], cfg.norm_eps)
        self.conv_out = _conv3x3(ch * mult[0], cfg.image_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, Z, h, w) -> (B, 3, 16h, 16w)
        h = self.conv_in(to_memory_format(z, self))
        for block in self.mid:
            h = block(h)
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if level.upsample_conv is not None:
                h = upsample_conv(h, level.upsample_conv)
        return self.conv_out(F.silu(self.norm_out(h))).contiguous()
