"""Reading checkpoints from disk, offline and without executing code, and loading them strictly.

Accepted sources (the release formats people download):
  * a state dict already in memory;
  * `.safetensors`;
  * `.bin` / `.pt` / `.pth` (torch pickles, read with `weights_only=True` so a file can't run code);
  * a Lightning `.ckpt` (taming-transformers): the weights sit under `state_dict`;
  * a directory laid out like a downloaded model repository (`model.safetensors` or `pytorch_model.bin`,
    optionally beside `config.json`).
Loading is strict: a wrong or truncated file is one error naming the file, the missing and unexpected
keys and the shape mismatches; weights holding NaN or inf are refused. Models may define
`convert_state_dict(sd) -> sd` to accept what the original release holds beyond our parameters (buffers
such as BERT's `position_ids`, training-loss keys).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from titok.errors import InputError

WeightsSource = None | str | Path | Mapping[str, torch.Tensor]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# What a downloaded model repository holds, in the order we prefer it.
REPO_FILES = ("model.safetensors", "pytorch_model.bin", "model.bin", "model.ckpt", "last.ckpt")


class WeightsError(InputError, ValueError):
    """A checkpoint that can't be read or doesn't fit the model."""


def resolve_weights_file(path: str | Path) -> Path:
    """The weights file that `path` stands for (itself, or the one inside a model-repository directory)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsError(f"weights not found: {path} (nothing is downloaded; pass the path of a local file)")
    if path.is_file():
        return path
    for name in REPO_FILES:
        if (path / name).is_file():
            return path / name
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise WeightsError(f"no weights file ({', '.join(WEIGHT_SUFFIXES)}) in directory {path}")
    raise WeightsError(f"several weights files in {path}, pass one: {', '.join(p.name for p in candidates)}")


def _read_pickle(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).splitlines() or [""])[0]
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise WeightsError(
                f"{path}: refusing to unpickle objects other than tensors (weights_only=True). "
                f"Re-save the state dict alone, or convert the file to .safetensors. ({first})"
            ) from None
        raise WeightsError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): {first}") from None
    except Exception as exc:  # noqa: BLE001 - torch's unpickler reports a damaged file with many types (KeyError...)
        first = (str(exc).splitlines() or [""])[0]
        raise WeightsError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): "
                           f"{type(exc).__name__} {first}".rstrip()) from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    # Lightning checkpoints (taming-transformers) and training checkpoints nest the weights.
    for key in ("state_dict", "model"):
        if key in obj and isinstance(obj[key], Mapping):
            return dict(obj[key])
    return dict(obj)


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None
    return tensors, meta


def read_weights(source: WeightsSource) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) from any accepted source. Metadata is non-empty only for our own checkpoints."""
    if source is None:
        raise WeightsError("no weights given")
    if isinstance(source, Mapping):
        return dict(source), {}
    path = resolve_weights_file(source)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in WEIGHT_SUFFIXES:
        return _read_pickle(path), {}
    raise WeightsError(f"{path}: unknown weights format {path.suffix!r}; expected one of {', '.join(WEIGHT_SUFFIXES)}")


def _summarise(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def key_problems(checkpoint: Mapping[str, torch.Tensor], model: Mapping[str, torch.Tensor],
                 name: Mapping[str, str] | None = None) -> list[str]:
    """What keeps a checkpoint from loading strictly: missing keys, unexpected keys and shape mismatches, each
    counted and listed (shortened). `name` maps a model key to the name the checkpoint uses for it (identity when
    None), so the message spells keys as the user's file does."""
    name = name or {k: k for k in model}
    wanted = {name[k]: k for k in model}  # checkpoint name -> model key
    missing = sorted(set(wanted) - set(checkpoint))
    unexpected = sorted(set(checkpoint) - set(wanted))
    mismatched = [f"{c}: checkpoint {tuple(checkpoint[c].shape)} vs model {tuple(model[k].shape)}"
                  for c, k in wanted.items() if c in checkpoint and tuple(checkpoint[c].shape) != tuple(model[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_summarise(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_summarise(mismatched, 4)}")
    return problems


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Strictly load `state_dict` into `model`, after the model's own `convert_state_dict`."""
    convert = getattr(model, "convert_state_dict", None)
    try:
        sd = dict(convert(dict(state_dict)) if convert is not None else state_dict)
    except WeightsError as exc:  # a conversion judges the release's names; say which file it judged
        raise WeightsError(f"{source}: {exc}") from None
    own = model.state_dict()
    problems = key_problems(sd, own)
    if problems:
        preset = getattr(model, "preset", type(model).__name__)
        raise WeightsError(f"{source} does not fit {preset}: " + "; ".join(problems))
    # NaN/inf weights give NaN activations that argmax and uint8 conversion turn into plausible tokens and images.
    bad = [k for k, v in sd.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(f"{source}: {len(bad)} tensors hold non-finite values (NaN/inf): {_summarise(bad)}")
    model.load_state_dict(sd, strict=True)
