"""lr_schedules.json: the learning rate at every recorded scheduler step, for the model's and the discriminator's
optimizers, through the schedulers the loop builds (titok/train/loop.py model_optimizer / disc_optimizer) from our
recipe of the recorded config; a config no recipe of ours reproduces is checked through loop.lr_factor with the
recorded warm-up, horizon and lrs. LR values to 1e-12 relative (the README)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from titok.train.discriminator import NLayerDiscriminator
from titok.train.loop import disc_optimizer, lr_factor, model_optimizer
from titok.train.release_vectors import Result
from titok.train.release_vectors._release_models import close, recipe_for, recipe_task

FILE = "lr_schedules.json"
REL = 1e-12


def _series(what: str, factor, base: float, rec: dict) -> list[Result]:
    out = []
    for step, lam, lr in zip(rec["steps"], rec["lambda_"], rec["lr"], strict=True):
        ok, detail = close(factor(step), lam, REL, 1e-15)
        ok2, detail2 = close(factor(step) * base, lr, REL, 1e-18)
        out.append(Result(FILE, f"{what} step {step}", ok and ok2, f"multiplier {detail}; lr {detail2}"))
    return out


def _schedule(key: str, rec: dict) -> list[Result]:
    recipe = recipe_for(rec["config"])
    w, h, base, end = rec["warmup_steps"], rec["max_train_steps"], rec["base_lr"], rec["end_lr"]
    if recipe is None:  # the function alone, with the recorded settings
        out = _series(f"{key} model (lr_factor; no recipe reproduces {rec['config']})",
                      lambda s: lr_factor(s, h, w, base, end), base, rec["model"])
        d = rec.get("discriminator")
        if d:
            out += _series(f"{key} discriminator (lr_factor)",
                           lambda s: lr_factor(s, d["horizon"], w, base, end), d["optimizer_lr"], d)
        return out
    config, task = recipe_task(recipe)
    oc, sc, lc = config.optim, config.schedule, config.loss
    got = (sc.warmup_steps, sc.steps, oc.lr, sc.end_lr)
    out = [Result(FILE, f"{key} recipe {recipe} schedule settings", got == (w, h, base, end),
                  f"ours (warmup, steps, lr, end_lr) {got}, release {(w, h, base, end)}")]
    opt, sched = model_optimizer(task, config)
    out += _series(f"{key} model", sched.lr_lambdas[0], oc.lr, rec["model"])
    lrs = []
    with warnings.catch_warnings():  # stepping a scheduler without optimizer steps: only the lr is read here
        warnings.simplefilter("ignore")
        for i in range(len(rec["model_lr_after_0_1_2_3_scheduler_steps"])):
            if i:
                sched.step()
            lrs.append(opt.param_groups[0]["lr"])
    want = rec["model_lr_after_0_1_2_3_scheduler_steps"]
    ok = all(close(a, b, REL, 1e-18)[0] for a, b in zip(lrs, want, strict=True))
    out.append(Result(FILE, f"{key} model lr after 0..{len(want) - 1} scheduler steps", ok,
                      f"ours {lrs}, release {want}"))
    d = rec.get("discriminator")
    if d:
        got = (lc.disc_start, sc.steps - lc.disc_start, oc.disc_lr)
        want = (d["discriminator_start"], d["horizon"], d["optimizer_lr"])
        out.append(Result(FILE, f"{key} discriminator start, horizon, lr", got == want, f"ours {got}, release {want}"))
        with torch.device("meta"):
            disc = NLayerDiscriminator(lc.disc_channels, lc.disc_layers)
        _, d_sched = disc_optimizer(disc, config)
        out += _series(f"{key} discriminator", d_sched.lr_lambdas[0], oc.disc_lr, d)
    return out


def check(folder: Path, entry: dict) -> list[Result]:
    data = json.loads((Path(folder) / FILE).read_text())
    out: list[Result] = []
    for key, rec in data["schedules"].items():
        out += _schedule(key, rec)
    return out


CHECKS = {FILE: check}
