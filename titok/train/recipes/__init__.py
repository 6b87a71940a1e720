"""The release's training recipes as data: one TOML file per released model and stage (package data).

A recipe holds the hyper-parameters of bytedance/1d-tokenizer's configs/training/** and training code, each value
commented with the file it comes from; `titok-train --recipe NAME` starts from it, overrides go on top. The
`[recipe]` table describes the recipe; every other table is a section of TrainConfig, checked like an override.
A recipe of ours (not the release's, e.g. the CPU demonstration tiny_cpu) says `release = false` there.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import tomli

from titok.errors import ConfigError
from titok.train.config import TrainConfig, apply_values


def _files() -> dict[str, Any]:
    return {p.name.removesuffix(".toml"): p for p in resources.files(__name__).iterdir() if p.name.endswith(".toml")}


def list_recipes() -> list[str]:
    return sorted(_files())


def read_recipe(name: str) -> dict[str, Any]:
    """The recipe file's tables as parsed TOML; an unknown name is an error listing the known ones."""
    files = _files()
    if name not in files:
        raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(sorted(files))}")
    try:
        return tomli.loads(files[name].read_text())
    except tomli.TOMLDecodeError as exc:  # a recipe we ship is broken: our bug, but say which file
        raise RuntimeError(f"recipe file {name}.toml: {exc}") from exc


def describe(name: str) -> str:
    return read_recipe(name).get("recipe", {}).get("description", "")


def is_release(name: str) -> bool:
    """Whether the recipe reproduces the release (and so must cite it) rather than being one of ours."""
    return bool(read_recipe(name).get("recipe", {}).get("release", True))


def load_recipe(name: str, base: TrainConfig | None = None) -> TrainConfig:
    """`base` (default: TrainConfig()) with the recipe's values applied."""
    tables = {k: v for k, v in read_recipe(name).items() if k != "recipe"}
    return apply_values(base or TrainConfig(), tables, origin=f"recipe {name}")
