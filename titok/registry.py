"""One registry and one factory for every model the project knows: TiTok presets and the baselines alike.

A preset is a `ModelSpec`: a name from the papers (`titok_l32`, `maskgit_vqgan_f16_1024`, ...), the frozen
config it builds from, the factory, and the facts a results table needs (display name, where the released
weights live). Tokenizers and generators are separate namespaces because the TiTok release reuses one name
for both (the `titok_l32` tokenizer and the `titok_l32` generator that runs on its tokens).

Who registers: TiTok's own presets on import of `titok`; every other package through the entry-point group
`titok_bench.presets` (the baselines declare theirs in pyproject.toml). The registry loads that group the
first time it is asked, so `titok` never imports `baselines` (which depends on it) and a third-party package
can add presets the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from titok.errors import ConfigError, InputError
from titok.released import RELEASED, fetch_released
from titok.weights import WeightsError, WeightsSource, load_into, read_weights

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "titok_bench.presets"
Kind = Literal["tokenizer", "generator"]
KINDS: tuple[Kind, ...] = ("tokenizer", "generator")
META_PREFIX = "titok_bench."


class UnknownPresetError(InputError, KeyError):
    """An unknown preset name; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    """Everything the project knows about one preset."""

    name: str
    kind: Kind
    family: str  # the package that implements it: "titok" or "baselines"
    config: Any  # a frozen dataclass, passed to `build`
    build: Callable[[Any], nn.Module]
    display_name: str = ""  # the paper's name, for tables
    released_weights: str | None = None  # where the public checkpoint is published; None = none public
    tokenizer: str | None = None  # generators: the tokenizer preset whose tokens they model
    test_only: bool = False  # tiny presets for CPU tests
    notes: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


_REGISTRY: dict[tuple[str, str], ModelSpec] = {}
_plugins_loaded = False


def register(spec: ModelSpec) -> ModelSpec:
    key = (spec.kind, spec.name)
    if key in _REGISTRY and _REGISTRY[key] != spec:
        raise ValueError(f"{spec.kind} preset {spec.name!r} is registered twice")
    _REGISTRY[key] = spec
    return spec


def _ensure_all_registered() -> None:
    """Make the registry complete whoever asks first: TiTok's presets, then every package of the entry-point group."""
    global _plugins_loaded
    import titok  # noqa: F401  (its presets register on import)

    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    found = entry_points(group=ENTRY_POINT_GROUP)
    if not found:
        log.warning("no %s entry points: the baselines' presets are missing (install the project: pip install -e .)",
                    ENTRY_POINT_GROUP)
    for ep in found:
        ep.load()  # importing the package registers its presets


def list_presets(kind: Kind | None = None, family: str | None = None, include_test: bool = True) -> list[str]:
    """Registered preset names, sorted; filtered by kind and family."""
    _ensure_all_registered()
    return sorted(
        {
            s.name
            for s in _REGISTRY.values()
            if (kind is None or s.kind == kind)
            and (family is None or s.family == family)
            and (include_test or not s.test_only)
        }
    )


def get_spec(kind: Kind, name: str, family: str | None = None) -> ModelSpec:
    """The spec of a preset; an unknown name is an error listing the known ones."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    _ensure_all_registered()
    spec = _REGISTRY.get((kind, name))
    if spec is None or (family is not None and spec.family != family):
        known = ", ".join(list_presets(kind, family))
        where = f"{family} " if family else ""
        raise UnknownPresetError(f"unknown {where}{kind} preset {name!r}; known: {known}")
    return spec


def config_with_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """`dataclasses.replace` that rejects unknown keys and wrong types with a clear message."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {key!r} for {type(config).__name__}; known: {', '.join(fields)}")
        current = getattr(config, key)
        if current is not None and value is not None and not isinstance(value, type(current)):
            if not (isinstance(current, float) and isinstance(value, int)):
                raise ConfigError(f"{key}: expected {type(current).__name__}, got {type(value).__name__} ({value!r})")
    return dataclasses.replace(config, **overrides)


def create(
    kind: Kind,
    name: str | None,
    weights: WeightsSource = None,
    family: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a preset and, if given, load weights (original release key names or this project's checkpoints).

    `name` may be None when `weights` is a checkpoint written by `save_checkpoint`, which names its preset.
    `weights="released"` fetches the preset's published checkpoint into the cache first (titok/released.py).
    """
    if isinstance(weights, str) and weights == RELEASED:
        if name is None:
            raise ConfigError("weights='released' needs a preset name: it fetches that preset's published checkpoint")
        get_spec(kind, name, family)  # an unknown name is reported as such, not as "nothing published"
        weights = fetch_released(kind, name)
    state_dict, meta = read_weights(weights) if weights is not None else (None, {})
    saved_name = meta.get(META_PREFIX + "preset")
    saved_kind = meta.get(META_PREFIX + "kind")
    if saved_kind is not None and saved_kind != kind:
        raise WeightsError(f"{weights} holds a {saved_kind} checkpoint, not a {kind}")
    if name is None:
        if saved_name is None:
            raise WeightsError("no preset given and the weights do not name one (only our own checkpoints do)")
        name = saved_name
    elif saved_name is not None and saved_name != name:
        raise WeightsError(f"{weights} is a checkpoint for preset {saved_name!r}, not {name!r}")
    spec = get_spec(kind, name, family)
    config = spec.config
    if META_PREFIX + "config" in meta:
        config = type(config).from_dict(json.loads(meta[META_PREFIX + "config"]))
    if overrides:
        config = config_with_overrides(config, overrides)
    model = spec.build(config)
    model.preset = name
    if state_dict is not None:
        load_into(model, state_dict, source=str(weights) if not isinstance(weights, Mapping) else "state dict")
    return model


def save_checkpoint(model: nn.Module, path: str | Path, kind: Kind, extra: Mapping[str, str] | None = None) -> Path:
    """Write `model` as a self-describing safetensors file: preset, kind and config travel with the weights.

    `extra`: more metadata (strings), e.g. which tokenizer a trained generator's codes come from."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {META_PREFIX + "preset": model.preset, META_PREFIX + "kind": kind}
    if hasattr(model, "config") and dataclasses.is_dataclass(model.config):
        meta[META_PREFIX + "config"] = json.dumps(dataclasses.asdict(model.config))
    meta.update(extra or {})
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: a crash leaves the old file or the new one, never half of one
    return path


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
