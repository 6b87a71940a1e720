"""What the generator/optimizer/schedule/init/mode checks share: which of our recipes reproduces a release config,
building that recipe's task through the public training code on the meta device (names, shapes and requires_grad
only, no memory), and tolerance comparisons that say their numbers."""

from __future__ import annotations

import logging
import math

import torch

from titok.train.config import TrainConfig
from titok.train.recipes import list_recipes, load_recipe, read_recipe
from titok.train.tasks import Task, build_task


def recipes_citing(release_config: str) -> list[str]:
    """Our recipes whose first cited release file is `release_config`, in list_recipes() order."""
    out = []
    for name in list_recipes():
        files = read_recipe(name).get("recipe", {}).get("release_files", [])
        if files and files[0] == release_config:
            out.append(name)
    return out


def recipe_for(release_config: str) -> str | None:
    """Our recipe whose first cited release file is `release_config` (e.g. configs/training/TiTok/stage1/
    titok_l32.yaml -> titok_l32_stage1); None when no recipe reproduces that config."""
    return next(iter(recipes_citing(release_config)), None)


def meta_task(config: TrainConfig) -> Task:
    """The task `config` trains, built by build_task on the meta device (frozen parts frozen, nothing loaded; the
    warnings about random teacher/tokenizer weights, true and irrelevant here, are kept out of the report)."""
    tasks_log = logging.getLogger("titok.train.tasks")
    level = tasks_log.level
    tasks_log.setLevel(logging.ERROR)
    try:
        with torch.device("meta"):
            return build_task(config, architecture_only=True)
    finally:
        tasks_log.setLevel(level)


def recipe_task(recipe: str) -> tuple[TrainConfig, Task]:
    config = load_recipe(recipe)
    return config, meta_task(config)


def close(got: float, want: float, rel: float, abs_floor: float = 0.0) -> tuple[bool, str]:
    err = abs(got - want)
    ok = math.isfinite(got) and err <= max(rel * abs(want), abs_floor)
    return ok, f"got {got:.10g}, want {want:.10g}, |err| {err:.3g} (tol rel {rel:g}, abs {abs_floor:g})"
