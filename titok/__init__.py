"""TiTok (arXiv 2406.07550): 1D image tokenizers and the MaskGIT-style generators that model their tokens.

    tok = titok.load_tokenizer("titok_l32", weights="path/to/tokenizer_titok_l32_imagenet")  # or "released"
    codes = tok.encode(images)          # (B, 32) long, images float (B,3,256,256) in [0,1]
    recon = tok.decode(codes)           # (B,3,256,256) on the [0,1] scale, unclamped
"""

from __future__ import annotations

from typing import Any

from titok.registry import create, get_spec, list_presets, save_checkpoint
from titok.weights import WeightsError, WeightsSource

__all__ = ["load_tokenizer", "load_generator", "list_presets", "get_spec", "save_checkpoint", "WeightsError"]


def load_tokenizer(preset: str | None, weights: WeightsSource = None, **overrides: Any):
    """A tokenizer preset, with weights (None: random init; path, directory or state dict; "released": the
    published checkpoint, fetched into the cache on first use, see titok/released.py).

    Any registered preset: TiTok's own and those other packages register (the baselines, e.g.
    `maskgit_vqgan_f16_1024`), since there is one registry and one factory for all of them.

    Returned in eval mode: a loaded model is for inference, and in train mode dropout would make a sample depend
    on what else is in its batch. Training builds its models through `titok.registry.create` and calls `.train()`.
    """
    return create("tokenizer", preset, weights, **overrides).eval()


def load_generator(preset: str | None, weights: WeightsSource = None, **overrides: Any):
    """A generator preset (any registered one), with weights (None: random init; path, directory or state dict;
    "released": the published checkpoint, fetched into the cache on first use). In eval mode, as load_tokenizer."""
    return create("generator", preset, weights, **overrides).eval()


# Registration happens on import; keep these last (they import the modules above).
from titok import presets as _tokenizer_presets  # noqa: E402,F401
from titok.generators import presets as _generator_presets  # noqa: E402,F401
