"""Training checkpoints: one self-describing file per run, written atomically, read without unpickling code.

A checkpoint carries the resolved config (so the path alone rebuilds the run), the task and preset, the model,
EMA, discriminator, optimizer, scheduler and grad-scaler states, the step, every rank's RNG states (python,
numpy, torch, CUDA) and the data order's position. Everything is tensors and plain Python values, so it loads
with `torch.load(weights_only=True)`. The trained model alone is exported beside it with
`titok.save_checkpoint` (model.safetensors / ema.safetensors), which `titok.load_tokenizer(None, path)` reads.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from titok.errors import MissingFileError
from titok.weights import WeightsError

FORMAT = "titok-train-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"


class EMA:
    """Exponential moving average of a model's floating-point state (parameters and buffers)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.state[k].lerp_(v.detach(), 1.0 - self.decay)
            else:
                self.state[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        for k, v in sd.items():
            self.state[k].copy_(v)


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (safe for weights_only loading)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write atomically: a crash leaves the previous checkpoint or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)
    return path


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"training checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a titok training checkpoint ({FORMAT})")
    return ckpt


def describe(path: str | Path) -> dict[str, Any]:
    """What a checkpoint is, without its tensors: format, task, preset, kind, step, config, world size."""
    ckpt = load(path)
    keys = ("format", "task", "preset", "kind", "step", "config", "world_size", "data")
    return {k: ckpt.get(k) for k in keys}
