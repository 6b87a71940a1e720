"""Baselines TiTok is measured against, behind the same tokenizer/generator contract.

Tokenizers: the MaskGIT-VQGAN and taming-transformers' ImageNet VQGANs. Generators: MaskGIT.
"""

from __future__ import annotations

from typing import Any

from titok.registry import create
from titok.weights import WeightsSource


def load_tokenizer(preset: str | None, weights: WeightsSource = None, **overrides: Any):
    """A baseline tokenizer preset, in eval mode (as titok.load_tokenizer)."""
    return create("tokenizer", preset, weights, family="baselines", **overrides).eval()


def load_generator(preset: str | None, weights: WeightsSource = None, **overrides: Any):
    """A baseline generator preset, in eval mode (as titok.load_generator)."""
    return create("generator", preset, weights, family="baselines", **overrides).eval()


# Registration happens on import; keep these last.
from baselines import maskgit_generator as _maskgit_generator  # noqa: E402,F401
from baselines import presets as _presets  # noqa: E402,F401
