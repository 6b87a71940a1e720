"""The MaskGIT-VQGAN baseline tokenizer (Chang et al., "MaskGIT: Masked Generative Image Transformer", 2022):
16x16 = 256 codes from a 1024-entry codebook at 256x256, 32x32 at 512x512 (the network is convolutional).

Two PyTorch conversions of the JAX release exist and both load here, into one network (titok/maskgit_vqgan.py,
which TiTok's two-stage decoding also uses):
  * the TiTok release's `maskgit-vqgan-imagenet-f16-256.bin` (its key names are ours; GroupNorm eps 1e-6);
  * hmorimitsu/maskgit-torch's `tokenizer_imagenet256.ckpt` / `tokenizer_imagenet512.ckpt` (separately converted
    weights per resolution, other key names, GroupNorm eps 1e-5), `weights_layout="maskgit-torch"`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from baselines.maskgit_torch_keys import from_maskgit_torch, is_maskgit_torch_layout
from titok.configs import ConfigMixin, VQGANConfig
from titok.contract import Tokenizer
from titok.errors import ConfigError
from titok.maskgit_vqgan import Decoder, Encoder
from titok.quantizer import VectorQuantizer
from titok.weights import WeightsError

WEIGHTS_LAYOUTS = ("titok-release", "maskgit-torch")


@dataclass(frozen=True)
class MaskGITVQGANConfig(ConfigMixin):
    image_size: int = 256
    vqgan: VQGANConfig = VQGANConfig()
    weights_layout: str = "titok-release"  # the key names of the release file this preset loads

    def __post_init__(self) -> None:
        if self.weights_layout not in WEIGHTS_LAYOUTS:
            raise ConfigError(f"weights_layout must be one of {WEIGHTS_LAYOUTS}, got {self.weights_layout!r}")


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

    def convert_state_dict(self, sd: dict) -> dict:
        """maskgit-torch's names -> ours for the maskgit-torch presets; our own names (a `save_checkpoint` file)
        pass through. A maskgit-torch file given to a TiTok-release preset is refused: the GroupNorm eps differs."""
        if not is_maskgit_torch_layout(sd):
            return sd
        if self.config.weights_layout != "maskgit-torch":
            raise WeightsError(f"this is a maskgit-torch tokenizer checkpoint; {self.preset or 'this preset'} takes "
                               "the TiTok release's MaskGIT-VQGAN. Use maskgit_torch_vqgan_256 / _512")
        return from_maskgit_torch(sd, self.state_dict(), self.config.vqgan)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0,1] -> (B, h*w) long
        z = self.encoder(self.check_images(x))  # (B, Z, h, w)
        return self.quantize.nearest(z.permute(0, 2, 3, 1)).flatten(1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:  # (B, h*w) long -> (B, 3, H, W) on [0,1], unclamped
        side = int(round(codes.shape[1] ** 0.5))
        if side * side != codes.shape[1]:
            raise ValueError(f"expected a square grid of codes, got {codes.shape[1]}")
        return self.decoder(rearrange(self.quantize.lookup(codes), "b (h w) d -> b d h w", h=side))
