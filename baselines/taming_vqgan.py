"""taming-transformers' VQGAN (Esser et al., "Taming Transformers for High-Resolution Image Synthesis", 2021):
the ImageNet f16 models with 1024 and 16384 codes, the rFID baselines of the TiTok paper.

Written from the architecture; parameter names are the Lightning checkpoints' (`encoder.*`, `decoder.*`,
`quantize.embedding.weight`, `quant_conv`, `post_quant_conv`; `loss.*` training terms are dropped on load).
Differences from the MaskGIT-VQGAN worth knowing: biased convolutions, the 1x1 shortcut applied to the block's
input, self-attention at the 16x16 level, strided-conv downsampling with asymmetric padding, and images on
[-1, 1] internally (the adapter maps the project's [0, 1] in and out).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from titok.blocks import multi_head_attention
from titok.configs import ConfigMixin
from titok.contract import Tokenizer
from titok.inference import options_of, to_memory_format, upsample_conv
from titok.quantizer import VectorQuantizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TamingConfig(ConfigMixin):
    image_size: int = 256  # the input size this preset benchmarks at
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    resolution: int = 256  # the training resolution the attention levels refer to
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 1024

    def attn_at(self, level: int) -> bool:
        return self.resolution // 2**level in self.attn_resolutions


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.nin_shortcut is None else self.nin_shortcut(x))


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        h = self.norm(x)
        qkv = rearrange(torch.cat([self.q(h), self.k(h), self.v(h)], dim=1), "b c h w -> b (h w) c")
        out = multi_head_attention(qkv, 1, options_of(self).attention)  # one head: scale c**-0.5, as taming's
        return x + self.proj_out(rearrange(out, "b (h w) c -> b c h w", h=x.shape[2]))


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as trained


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_conv(x, self.conv)


def _level(blocks: list[nn.Module], attns: list[nn.Module]) -> nn.Module:
    m = nn.Module()
    m.block, m.attn = nn.ModuleList(blocks), nn.ModuleList(attns)
    return m


def _mid(c: int) -> nn.Module:
    m = nn.Module()
    m.block_1, m.attn_1, m.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)
    return m


def _run_mid(m: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return m.block_2(m.attn_1(m.block_1(h)))


class Encoder(nn.Module):
    def __init__(self, c: TamingConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(3, c.ch, 3, padding=1)
        widths = [c.ch * m for m in (1,) + tuple(c.ch_mult)]
        self.down = nn.ModuleList()
        for i in range(len(c.ch_mult)):
            cin, cout = widths[i], widths[i + 1]
            blocks = [ResnetBlock(cin if j == 0 else cout, cout) for j in range(c.num_res_blocks)]
            level = _level(blocks, [AttnBlock(cout) for _ in blocks] if c.attn_at(i) else [])
            if i != len(c.ch_mult) - 1:
                level.downsample = Downsample(cout)
            self.down.append(level)
        top = widths[-1]
        self.mid = _mid(top)
        self.norm_out = _norm(top)
        self.conv_out = nn.Conv2d(top, c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [-1,1] -> (B, Z, H/16, W/16)
        h = self.conv_in(to_memory_format(x, self))
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = _run_mid(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h))).contiguous()


class Decoder(nn.Module):
    def __init__(self, c: TamingConfig):
        super().__init__()
        top = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, top, 3, padding=1)
        self.mid = _mid(top)
        levels, cin = [], top
        for i in reversed(range(len(c.ch_mult))):
            cout = c.ch * c.ch_mult[i]
            blocks = [ResnetBlock(cin if j == 0 else cout, cout) for j in range(c.num_res_blocks + 1)]
            level = _level(blocks, [AttnBlock(cout) for _ in blocks] if c.attn_at(i) else [])
            if i != 0:
                level.upsample = Upsample(cout)
            levels.insert(0, level)
            cin = cout
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(c.ch * c.ch_mult[0])
        self.conv_out = nn.Conv2d(c.ch * c.ch_mult[0], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, Z, h, w) -> (B, 3, 16h, 16w) in [-1,1]
        h = _run_mid(self.mid, self.conv_in(to_memory_format(z, self)))
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h))).contiguous()


class TamingVQGANTokenizer(Tokenizer):
    def __init__(self, config: TamingConfig):
        super().__init__()
        self.config = config
        self.image_size = config.image_size
        side = config.image_size // 2 ** (len(config.ch_mult) - 1)
        self.num_tokens, self.codebook_size = side * side, config.n_embed
        self.encoder, self.decoder = Encoder(config), Decoder(config)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    def convert_state_dict(self, sd: dict) -> dict:
        kept = {k: v for k, v in sd.items() if not k.startswith("loss.")}
        if len(kept) != len(sd):
            log.info("dropped %d training-loss entries (loss.*) from the checkpoint", len(sd) - len(kept))
        return kept

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0,1] -> (B, h*w) long
        z = self.quant_conv(self.encoder(self.check_images(x) * 2.0 - 1.0))
        return self.quantize.nearest(z.permute(0, 2, 3, 1)).flatten(1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:  # (B, h*w) long -> (B, 3, H, W) on [0,1], unclamped
        side = int(round(codes.shape[1] ** 0.5))
        z = rearrange(self.quantize.lookup(codes), "b (h w) d -> b d h w", h=side)
        return (self.decoder(self.post_quant_conv(z)) + 1.0) / 2.0
