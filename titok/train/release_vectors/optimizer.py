"""optimizer_param_groups.json: AdamW groups by parameter name (weight decay, lr, betas, eps) and the frozen
parameters, for each recorded model and its discriminator, through our recipe, build_task and the loop's
optimizer builders (titok/train/loop.py model_optimizer / disc_optimizer, param_groups.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from titok.train.discriminator import NLayerDiscriminator
from titok.train.loop import disc_optimizer, model_optimizer
from titok.train.release_vectors import Result
from titok.train.release_vectors._release_models import recipe_for, recipe_task

FILE = "optimizer_param_groups.json"
HYPER = ("weight_decay", "lr", "betas", "eps")


def _groups(opt: torch.optim.Optimizer, names: dict[int, str]) -> list[dict]:
    # "lr" as the optimizer was made: the scheduler has already scaled the live value (by 0 at step 0)
    return [{"names": [names[id(p)] for p in g["params"]], **{k: g[k] for k in HYPER},
             "lr": g.get("initial_lr", g["lr"])} for g in opt.param_groups]


def _compare(what: str, ours: list[dict], release: list[dict], not_release: set[str]) -> list[Result]:
    """Group by group (the release's order): hyper-parameters and the set of parameter names (the order within a
    group follows module definition order, which differs in places and changes nothing AdamW computes). Names our
    model has and the release's does not (`not_release`, e.g. stage 1's pixel decoder, the teacher's copy) are left
    out."""
    out = [Result(FILE, f"{what} group count", len(ours) == len(release), f"ours {len(ours)}, release {len(release)}")]
    for i, (g, r) in enumerate(zip(ours, release, strict=False)):
        hyper_ok = all(float(g[k]) == float(r[k]) if k != "betas" else list(g[k]) == list(r[k]) for k in HYPER)
        out.append(Result(FILE, f"{what} group {i} hyper-parameters", hyper_ok,
                          f"ours { {k: g[k] for k in HYPER} }, release { {k: r[k] for k in HYPER} }"))
        names = [n for n in g["names"] if n not in not_release]
        missing, extra = sorted(set(r["names"]) - set(names)), sorted(set(names) - set(r["names"]))
        same = not missing and not extra and len(names) == len(r["names"])
        detail = f"{len(names)} names" if same else f"missing {missing[:5]} extra {extra[:5]}"
        out.append(Result(FILE, f"{what} group {i} names (wd {r['weight_decay']})", same, detail))
    return out


def _model(key: str, rec: dict) -> list[Result]:
    recipe = recipe_for(rec["config"])
    if recipe is None:
        return [Result(FILE, key, False, f"no recipe of ours reproduces {rec['config']}")]
    config, task = recipe_task(recipe)
    names = {id(p): n for n, p in task.model.named_parameters()}
    opt, _ = model_optimizer(task, config)
    mo = rec["model_optimizer"]
    release_names = {n for g in mo["groups"] for n in g["names"]} | set(mo.get("not_in_optimizer") or [])
    ours_all = set(names.values())
    not_release = ours_all - release_names
    out = _compare(f"{key} ({recipe}) model", _groups(opt, names), mo["groups"], not_release)
    trainable_extra = sorted(n for n, p in task.model.named_parameters() if n in not_release and p.requires_grad)
    out.append(Result(FILE, f"{key} parameters only ours has are frozen", not trainable_extra,
                      f"{len(not_release)} extra (e.g. {sorted(not_release)[:2]}), trainable: {trainable_extra[:5]}"))
    missing = sorted(release_names - ours_all)
    out.append(Result(FILE, f"{key} every release parameter exists in ours", not missing, f"missing {missing[:5]}"))
    frozen = sorted(n for n, p in task.model.named_parameters() if not p.requires_grad and n in release_names)
    want = sorted(mo.get("not_in_optimizer") or [])
    out.append(Result(FILE, f"{key} not_in_optimizer (frozen)", frozen == want,
                      f"ours {len(frozen)}, release {len(want)}; differ: {sorted(set(frozen) ^ set(want))[:5]}"))
    do = rec.get("discriminator_optimizer")
    if do:
        lc = config.loss
        with torch.device("meta"):
            disc = NLayerDiscriminator(lc.disc_channels, lc.disc_layers)
        d_names = {id(p): f"discriminator.{n}" for n, p in disc.named_parameters()}
        d_opt, _ = disc_optimizer(disc, config)
        out += _compare(f"{key} ({recipe}) discriminator", _groups(d_opt, d_names), do["groups"], set())
    return out


def check(folder: Path, entry: dict) -> list[Result]:
    data = json.loads((Path(folder) / FILE).read_text())
    out: list[Result] = []
    for key, rec in data["models"].items():
        out += _model(key, rec)
    return out


CHECKS = {FILE: check}
