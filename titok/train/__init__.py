"""Training for TiTok (arXiv 2406.07550): one loop (`loop.train`) with pluggable tasks (`tasks.py`): the
two-stage recipe (proxy codes, then decoder fine-tuning), single-stage VQ/VAE tokenizers, and the MaskGIT-style
generator on a tokenizer's codes. `titok-train` (cli.py) is the console script; runs scale with torchrun.
"""

from __future__ import annotations

from titok.train.config import ConfigError, TrainConfig, apply_overrides


def train(config: TrainConfig, resume: bool = False):
    """Run the training `config` describes (see titok.train.loop.train)."""
    from titok.train.loop import train as _train

    return _train(config, resume=resume)


__all__ = ["TrainConfig", "ConfigError", "apply_overrides", "train"]
