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
from titok.fetch import sha256_of
from titok.weights import WeightsError

FORMAT = "titok-train-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"  # the newest; older kept ones live in KEPT_DIR as step_XXXXXXXX.pt
KEPT_DIR = "checkpoints"


class EMA:
    """The release's EMA of a model's weights (bytedance/1d-tokenizer modeling/modules/ema_model.py, EMAModel).

    Why its schedule and not a constant decay: with 0.999 from step one the EMA would carry the random init for
    thousands of steps. The release warms the decay up instead: at optimizer step n (counted from 1, the step
    just taken) with s = n - update_after - 1, the decay is 0 while s <= 0 (the EMA copies the weights) and
    min((1 + s) / (10 + s), decay) after, so it reaches 0.999 near step 9,000. It updates on the steps n with
    (n - 1) % update_every == 0. Trainable parameters are averaged; frozen parameters and buffers are copied
    from the model, as the release averages only parameters that require grad and exports its model's buffers.
    The decay is a function of the step alone, so a resumed run computes the same EMA as an uninterrupted one.
    """

    def __init__(self, model: torch.nn.Module, decay: float, update_every: int = 1, update_after: int = 0,
                 warmup: bool = True):
        if not 0.0 < decay < 1.0 or update_every < 1 or update_after < 0:
            raise ValueError(f"EMA: decay {decay} not in (0, 1), update_every {update_every} < 1 or "
                             f"update_after {update_after} < 0")
        self.decay, self.update_every, self.update_after, self.warmup = decay, update_every, update_after, warmup
        self.averaged = {name for name, p in model.named_parameters() if p.requires_grad}
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def decay_at(self, step: int) -> float:
        """The decay applied at optimizer step `step` (1 = the first step taken)."""
        s = step - self.update_after - 1
        if s <= 0:
            return 0.0
        return min((1 + s) / (10 + s), self.decay) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Fold in the model's weights after optimizer step `step` (1 = the first)."""
        if (step - 1) % self.update_every != 0:
            return
        weight = 1.0 - self.decay_at(step)  # ema <- ema + (1 - decay) * (w - ema)
        for k, v in model.state_dict().items():
            if k in self.averaged:
                self.state[k].lerp_(v.detach(), weight)
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


TOKENIZER_META = "titok_bench.tokenizer"  # a generator's tokenizer preset, in its exported safetensors
TOKENIZER_SHA_META = "titok_bench.tokenizer_sha256"  # and the sha256 of the tokenizer weights file it learned from


def trained_with(config, tokenizer) -> dict[str, str]:
    """Metadata for a generator's exported weights naming the tokenizer it was trained on (preset, file hash),
    so `titok-bench generate` pairs it with that tokenizer, not the preset's default one."""
    if tokenizer is None:
        return {}
    meta = {TOKENIZER_META: tokenizer.preset}
    if config.model.tokenizer_weights:
        path = Path(config.model.tokenizer_weights).expanduser()
        if path.is_file():
            meta[TOKENIZER_SHA_META] = sha256_of(path)
    return meta


def kept_path(out: Path, step: int) -> Path:
    return out / KEPT_DIR / f"step_{step:08d}.pt"


def kept_steps(out: Path) -> list[int]:
    """Steps of the older checkpoints kept in out/checkpoints/, ascending."""
    names = (p.stem.removeprefix("step_") for p in (out / KEPT_DIR).glob("step_*.pt"))
    return sorted(int(n) for n in names if n.isdigit())


def save_rotating(out: Path, payload: dict[str, Any], keep_last: int, keep_every: int) -> Path:
    """Write the step's checkpoint as out/checkpoint.pt; the one it replaces moves to out/checkpoints/.

    Of the older ones, the newest keep_last - 1 stay, and any whose step is a multiple of keep_every. Every
    step is a rename or an atomic write, so a crash at any point leaves the newest complete checkpoint either
    at out/checkpoint.pt or (between the two renames) as the newest file in out/checkpoints/.
    """
    newest = out / CHECKPOINT_NAME
    staged = save(newest.with_name(newest.name + ".new"), payload)  # complete before anything moves
    if newest.is_file():
        previous = int(torch.load(newest, map_location="cpu", weights_only=True, mmap=True)["step"])
        if previous != payload["step"]:
            kept_path(out, previous).parent.mkdir(exist_ok=True)
            os.replace(newest, kept_path(out, previous))
    os.replace(staged, newest)
    older = kept_steps(out)
    recent = set(older[-(keep_last - 1):]) if keep_last > 1 else set()
    for s in older:
        if s not in recent and not (keep_every and s % keep_every == 0):
            kept_path(out, s).unlink()
    return newest


def newest(out: str | Path) -> Path | None:
    """The checkpoint a resume continues from: out/checkpoint.pt, or after a crash mid-rotation the newest kept."""
    out = Path(out)
    if (out / CHECKPOINT_NAME).is_file():
        return out / CHECKPOINT_NAME
    steps = kept_steps(out)
    return kept_path(out, steps[-1]) if steps else None


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
