"""training_mode.json: what trains and how, through our recipes and build_task (meta device): trainable / frozen
parameter counts per top-level module of the tokenizer in stage 1 and 2; active dropout sites and rates of both
generators; the id layout of the generator's vocabulary; per recorded config, mixed precision, TF32, grad
clipping, accumulation and EMA of our recipe."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from titok.train.recipes import load_recipe
from titok.train.release_vectors import Result
from titok.train.release_vectors._release_models import recipe_for, recipe_task

FILE = "training_mode.json"


def _counts(model: nn.Module) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, p in model.named_parameters():
        c = out.setdefault(name.split(".")[0], {"trainable": 0, "frozen": 0})
        c["trainable" if p.requires_grad else "frozen"] += p.numel()
    return out


def _active_dropout(model: nn.Module) -> list[float]:
    return [m.p for m in model.modules() if isinstance(m, nn.Dropout) and m.p > 0]


def _tokenizer(stage: str, rec: dict) -> list[Result]:
    recipe = recipe_for(rec["config"])
    if recipe is None:
        return [Result(FILE, f"tokenizer {stage}", False, f"no recipe of ours reproduces {rec['config']}")]
    config, task = recipe_task(recipe)
    ours, want = _counts(task.model), rec["requires_grad_by_top_module"]
    out = []
    if "loss_quantizer_weight" in rec:
        got, w = config.loss.quantizer_weight, rec["loss_quantizer_weight"]
        out.append(Result(FILE, f"tokenizer {stage} ({recipe}) quantizer loss weight", got == w,
                          f"ours {got}, release {w}"))
    for top, c in want.items():
        out.append(Result(FILE, f"tokenizer {stage} ({recipe}) {top} trainable/frozen", ours.get(top) == c,
                          f"ours {ours.get(top)}, release {c}"))
    extra = {k: v for k, v in ours.items() if k not in want}
    out.append(Result(FILE, f"tokenizer {stage} modules only ours has are frozen",
                      all(v["trainable"] == 0 for v in extra.values()),
                      f"{extra} (stage 1: the teacher's pixel decoder and codebook, loaded and frozen)"))
    want_p = sorted({p for _, p in rec.get("dropout_modules", []) if p > 0})
    got_p = sorted(set(_active_dropout(task.model)))
    out.append(Result(FILE, f"tokenizer {stage} active dropout rates", got_p == want_p,
                      f"ours {got_p}, release {want_p}"))
    return out


def _generator(key: str, rec: dict) -> list[Result]:
    recipe = recipe_for(rec["config"])
    if recipe is None:
        return [Result(FILE, f"generator {key}", False, f"no recipe of ours reproduces {rec['config']}")]
    _, task = recipe_task(recipe)
    active = _active_dropout(task.model)
    rates = sorted({p for p in rec.get("dropout_rates_present", []) if p > 0})
    want_n = rec["dropout_modules_count"] if rates else 0  # p = 0 modules are no dropout at all
    ok = len(active) == want_n and sorted(set(active)) == rates
    out = [Result(FILE, f"generator {key} ({recipe}) active dropout sites", ok,
                  f"ours {len(active)} at {sorted(set(active))}, release {want_n} at {rates}")]
    return out


def _layout(layout: dict) -> list[Result]:
    _, task = recipe_task(recipe_for("configs/training/generator/maskgit.yaml"))
    g = task.model
    k = int(layout["codebook_size"])
    labels = torch.tensor([0, 999])
    got = (g.codebook_size, g.mask_token_id, g.class_token_ids(labels).tolist(), g.null_class_id, g.config.vocab_size)
    want = (k, int(layout["mask_token_id"]), [k + 1, k + 1000], k + g.num_classes + 1, k + g.num_classes + 2)
    return [Result(FILE, "generator token-id layout (codebook, mask, classes, null class, vocabulary)", got == want,
                   f"ours {got}, release {want} ({layout['class_token']}; {layout['dropped_class_token']})")]


def _precision(path: str, rec: dict) -> list[Result]:
    recipe = recipe_for(path)
    if recipe is None:
        return []  # e.g. a TA-TiTok config we have no recipe for: nothing of ours to compare
    c = load_recipe(recipe)
    got = {"mixed_precision": c.run.precision, "enable_tf32": c.run.tf32, "max_grad_norm": c.optim.grad_clip,
           "gradient_accumulation_steps": c.optim.grad_accum, "use_ema": c.optim.ema_decay > 0}
    want = {k: rec[k] for k in got}
    return [Result(FILE, f"{recipe} precision, TF32, clipping, accumulation, EMA", got == want,
                   f"ours {got}, release {want}")]


def check(folder: Path, entry: dict) -> list[Result]:
    data = json.loads((Path(folder) / FILE).read_text())
    out: list[Result] = []
    for stage, rec in data.get("tokenizer", {}).items():
        out += _tokenizer(stage, rec)
    for key, rec in data.get("generator", {}).items():
        out += _generator(key, rec)
    if "class_token_layout" in data:
        out += _layout(data["class_token_layout"])
    for path, rec in data.get("training_config_precision", {}).items():
        out += _precision(path, rec)
    return out


CHECKS = {FILE: check}
