"""Frozen configs for TiTok's modules (arXiv 2406.07550) and the MaskGIT-VQGAN it decodes through.

Configs are plain data: JSON round-trips through `to_dict` / `from_dict`, so a checkpoint carries its own.
Sizes follow the release: ViT small 512/8/8, base 768/12/12, large 1024/24/16 (width/layers/heads).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from titok.errors import ConfigError


def parse_value(raw: str) -> Any:
    """A command-line override's value: read as a TOML value (1e-4, true, [0.9, 0.99], "x"), else a plain string.

    The one reading of `--section.key=value` text, shared by `titok-train` and `titok-bench run --set`.
    """
    import tomli

    try:
        return tomli.loads(f"v = {raw}")["v"]
    except tomli.TOMLDecodeError:
        return raw


class ConfigMixin:
    """JSON-friendly (de)serialisation for nested frozen dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown keys for {cls.__name__}: {sorted(unknown)}")
        kwargs = {}
        for name, value in data.items():
            hint = hints[name]
            options = typing.get_args(hint) or (hint,)
            sub = next((a for a in options if isinstance(a, type) and issubclass(a, ConfigMixin)), None)
            if sub is not None and isinstance(value, dict):
                value = sub.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)


@dataclass(frozen=True)
class ViTSize(ConfigMixin):
    width: int
    layers: int
    heads: int
    mlp_ratio: float = 4.0


VIT_SIZES = {
    "small": ViTSize(512, 8, 8),
    "base": ViTSize(768, 12, 12),
    "large": ViTSize(1024, 24, 16),
    "tiny": ViTSize(64, 2, 2),  # CPU test preset only
}


@dataclass(frozen=True)
class VQGANConfig(ConfigMixin):
    """MaskGIT-VQGAN: f16 with channel multipliers (1,1,2,2,4); 1024 codes of 256 dims."""

    hidden_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    codebook_size: int = 1024
    image_channels: int = 3
    # GroupNorm epsilon: the TiTok release's conversion uses 1e-6; maskgit-torch's conversion of the same JAX
    # network keeps PyTorch's default 1e-5, and its weights were checked against that (parity vectors).
    norm_eps: float = 1e-6

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


@dataclass(frozen=True)
class TokenizerConfig(ConfigMixin):
    """A TiTok tokenizer: ViT encoder -> N latent tokens -> quantizer -> ViT decoder (-> pixel decoder).

    Two-stage presets (titok_l32/b64/s128) use the release's legacy layout: the decoder emits 1024-way
    proxy-code logits that a MaskGIT-VQGAN decoder turns into pixels. Single-stage presets decode pixels.
    """

    image_size: int = 256
    patch_size: int = 16
    encoder: ViTSize = VIT_SIZES["large"]
    decoder: ViTSize = VIT_SIZES["large"]
    num_tokens: int = 32
    quantizer: str = "vq"  # "vq" | "vae"
    codebook_size: int = 4096  # VQ only
    token_size: int = 12  # channels per token (VAE: of the mean; the encoder emits twice as many)
    use_l2_norm: bool = True
    legacy_layout: bool = True  # the release's legacy encoder reshape and proxy-code FFN head
    pixel_decoder: VQGANConfig | None = VQGANConfig()  # two-stage only
    # "release": the release's init pass over encoder and decoder (titok.tokenizer.release_init, pinned by
    # init_stats.json); "torch": PyTorch's module defaults, ours (tiny unnormalised VQs train more reliably from it).
    init_scheme: str = "release"

    def __post_init__(self) -> None:
        if self.init_scheme not in ("release", "torch"):
            raise ConfigError(f"init_scheme must be 'release' or 'torch', got {self.init_scheme!r}")
        if self.quantizer not in ("vq", "vae"):
            raise ConfigError(f"quantizer must be 'vq' or 'vae', got {self.quantizer!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.pixel_decoder is not None and self.pixel_decoder.downsample != self.patch_size:
            raise ConfigError("the pixel decoder must upsample by exactly patch_size")
        if self.pixel_decoder is not None and not self.legacy_layout:
            raise ConfigError("two-stage decoding (pixel_decoder) needs the legacy proxy-code head")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def two_stage(self) -> bool:
        return self.pixel_decoder is not None
