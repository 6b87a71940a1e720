"""TiTok: the 1D image tokenizer of "An Image is Worth 32 Tokens for Reconstruction and Generation"
(Yu et al., arXiv 2406.07550).

image -> ViT encoder with N latent tokens -> VQ (or VAE) -> ViT decoder -> pixels, or, for the two-stage
presets, -> 1024-way proxy-code logits -> softmax-weighted MaskGIT-VQGAN codebook -> MaskGIT-VQGAN decoder.
Parameter names are the release's (`latent_tokens`, `encoder.*`, `decoder.*`, `quantize.*`,
`pixel_quantize.*`, `pixel_decoder.*`), so its checkpoints load as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from titok.configs import TokenizerConfig
from titok.contract import Tokenizer
from titok.maskgit_vqgan import Decoder as PixelDecoder
from titok.quantizer import DiagonalGaussian, VectorQuantizer
from titok.vit import TiTokDecoder, TiTokEncoder


class TiTokTokenizer(Tokenizer):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        c = self.config = config
        self.image_size, self.num_tokens = c.image_size, c.num_tokens
        vae = c.quantizer == "vae"
        self.codebook_size = None if vae else c.codebook_size
        self.token_channels = c.token_size if vae else None
        self.latent_tokens = nn.Parameter(c.encoder.width**-0.5 * torch.randn(c.num_tokens, c.encoder.width))
        self.encoder = TiTokEncoder(c.encoder, c.image_size, c.patch_size, c.num_tokens,
                                    c.token_size * (2 if vae else 1), c.legacy_layout)
        proxy = c.pixel_decoder.codebook_size if c.pixel_decoder else 1024
        self.decoder = TiTokDecoder(c.decoder, c.image_size, c.patch_size, c.num_tokens, c.token_size,
                                    c.legacy_layout, proxy)
        if c.init_scheme == "release":
            self.encoder.apply(release_init)
            self.decoder.apply(release_init)
        self.quantize = None if vae else VectorQuantizer(c.codebook_size, c.token_size, c.use_l2_norm)
        if c.pixel_decoder is not None:
            self.pixel_quantize = VectorQuantizer(c.pixel_decoder.codebook_size, c.pixel_decoder.z_channels)
            self.pixel_decoder = PixelDecoder(c.pixel_decoder)

    # ---------------------------------------------------------------- encode
    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        """images (B,3,H,W) in [0,1] -> pre-quantization token features (B, N, C) (VAE: 2C moments)."""
        return self.encoder(self.check_images(x), self.latent_tokens)

    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        if self.quantize is not None:
            raise TypeError(f"{self.preset} is a VQ tokenizer; it has no posterior")
        return DiagonalGaussian.from_moments(self.encode_features(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """VQ: codes (B, N) long. VAE: posterior means (B, N, C)."""
        z = self.encode_features(x)
        if self.quantize is None:
            return DiagonalGaussian.from_moments(z).mean
        return self.quantize.nearest(z)

    # ---------------------------------------------------------------- decode
    def tokens_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """VQ codes (B, N) -> codebook vectors (B, N, C); VAE latents pass through."""
        if self.quantize is None:
            if not codes.is_floating_point() or codes.ndim != 3:
                raise TypeError(f"VAE tokenizer {self.preset} decodes float latents (B, N, C), got {codes.dtype} "
                                f"{tuple(codes.shape)}")
            return codes
        if codes.ndim == 3 and codes.shape[1] == 1:  # the release's (B, 1, N) token layout
            codes = codes[:, 0]
        if codes.ndim != 2:
            raise ValueError(f"expected codes of shape (B, N), got {tuple(codes.shape)}")
        return self.quantize.lookup(codes)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, C) latents -> images (B, 3, H, W) on the [0, 1] scale, unclamped."""
        out = self.decoder(z)
        if self.config.pixel_decoder is None:
            return out
        # Two-stage: proxy-code logits (B, K, G, G) -> expected MaskGIT-VQGAN code vector -> pixels.
        probs = out.softmax(dim=1)
        z_pix = torch.einsum("bkhw,kd->bdhw", probs, self.pixel_quantize.embedding.weight.to(probs.dtype))
        return self.pixel_decoder(z_pix)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode_latents(self.tokens_to_latents(codes))

    def proxy_code_logits(self, codes: torch.Tensor) -> torch.Tensor:
        """Two-stage only: the decoder's 1024-way logits over MaskGIT-VQGAN codes (B, 1024, G, G)."""
        if self.config.pixel_decoder is None:
            raise TypeError(f"{self.preset} decodes pixels directly; it has no proxy codes")
        return self.decoder(self.tokens_to_latents(codes))


def release_init(m: nn.Module) -> None:
    """The release's init pass over TiTok's encoder and decoder (modeling/titok.py TiTok._init_weights), pinned by
    init_stats.json: Linear/Conv weights trunc_normal(std 0.02) (cut at +-2 absolute, so a plain normal in effect),
    biases 0, LayerNorm 1/0. Untouched, as there: the packed attention in_proj (xavier-uniform), the explicit
    embeddings, latent and mask tokens (std width^-0.5), and the codebooks (uniform +-1/codebook_size, built after
    the pass; the pixel decoder and its codebook are loaded from the MaskGIT-VQGAN)."""
    if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, mean=0.0, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.trunc_normal_(m.weight, mean=0.0, std=0.02)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
