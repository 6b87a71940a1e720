"""The MaskGIT-VQGAN baseline tokenizer (Chang et al., "MaskGIT: Masked Generative Image Transformer", 2022),
as converted to PyTorch for the TiTok release (`maskgit-vqgan-imagenet-f16-256.bin`): 16x16 = 256 codes from a
1024-entry codebook at 256x256, 32x32 at 512x512 (the network is convolutional; the weights are the same).
The encoder and decoder are titok/maskgit_vqgan.py's, which TiTok's two-stage decoding also uses."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from titok.configs import ConfigMixin, VQGANConfig
from titok.contract import Tokenizer
from titok.maskgit_vqgan import Decoder, Encoder
from titok.quantizer import VectorQuantizer


@dataclass(frozen=True)
class MaskGITVQGANConfig(ConfigMixin):
    image_size: int = 256
    vqgan: VQGANConfig = VQGANConfig()


class MaskGITVQGANTokenizer(Tokenizer):
    def __init__(self, config: MaskGITVQGANConfig):
        super().__init__()
        self.config = config
        v = config.vqgan
        self.image_size = config.image_size
        self.num_tokens = (config.image_size // v.downsample) ** 2
        self.codebook_size = v.codebook_size
        self.encoder, self.decoder = Encoder(v), Decoder(v)
        self.quantize = VectorQuantizer(v.codebook_size, v.z_channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0,1] -> (B, h*w) long
        z = self.encoder(self.check_images(x))  # (B, Z, h, w)
        return self.quantize.nearest(z.permute(0, 2, 3, 1)).flatten(1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:  # (B, h*w) long -> (B, 3, H, W) on [0,1], unclamped
        side = int(round(codes.shape[1] ** 0.5))
        if side * side != codes.shape[1]:
            raise ValueError(f"expected a square grid of codes, got {codes.shape[1]}")
        return self.decoder(rearrange(self.quantize.lookup(codes), "b (h w) d -> b d h w", h=side))
