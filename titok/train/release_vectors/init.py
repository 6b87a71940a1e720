"""init_stats.json: the initial weights' statistics of each recorded model, built by our constructors (the preset
our recipe of the recorded config trains), compared as a scheme rather than values (the README): the same names,
shapes and requires_grad; constants (biases 0, norms 1) exactly; otherwise the std within sampling tolerance, the
mean near the recorded one, and the family: uniform where the release's range is 2 sqrt(3) std (ours inside its
bound), normal elsewhere (ours wider than a uniform, and than a +-2 std truncation where the sample tells), with
thresholds that a recording with other seeds passes, so a wrong scale, family or a missing init pass fails."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from titok.registry import create
from titok.train.recipes import load_recipe
from titok.train.release_vectors import Result
from titok.train.release_vectors._release_models import recipe_for

FILE = "init_stats.json"


def _stats(p: torch.Tensor) -> dict:
    x = p.detach().double().flatten()
    return {"mean": x.mean().item(), "std": x.std().item() if x.numel() > 1 else 0.0, "min": x.min().item(),
            "max": x.max().item()}


def _compare(ours: dict, rec: dict) -> tuple[bool, str]:
    n = rec["numel"]
    if rec["std"] == 0.0:  # a constant: exact
        ok = ours["min"] == ours["max"] == rec["min"]
        return ok, f"constant: ours [{ours['min']:.6g}, {ours['max']:.6g}], release {rec['min']:.6g}"
    tol = 0.02 + 5.0 / math.sqrt(2.0 * n)  # the std of a sample std is ~ std / sqrt(2n): 5 of those, plus 2%
    std_ok = abs(ours["std"] / rec["std"] - 1.0) <= tol
    mean_ok = abs(ours["mean"] - rec["mean"]) <= 5.0 * rec["std"] * math.sqrt(2.0 / n) + 1e-12
    span = (ours["max"] - ours["min"]) / max(ours["std"], 1e-30)
    span_rec = (rec["max"] - rec["min"]) / rec["std"]
    if span_rec < 3.8:  # the release's is uniform (range / std = 2 sqrt 3 = 3.46): ours too, within its bound
        bound = math.sqrt(3.0) * rec["std"] * (1.0 + tol)
        family_ok = span < 3.8 and max(-ours["min"], ours["max"]) <= bound
        family = f"uniform: ours range/std {span:.2f}, max |w| {max(-ours['min'], ours['max']):.4g} <= {bound:.4g}"
    else:  # normal-like: ours not uniform, and (where the sample is large enough to tell) not cut at +-2 std
        floor = 4.8 if n >= 4096 else 3.8  # n >= 4096 normals span ~7.1 +- 0.5 std; a +-2 std cut spans <= 4.6
        family_ok = span >= floor
        family = f"normal: ours range/std {span:.2f} (>= {floor}), release {span_rec:.2f}"
    detail = (f"std ours {ours['std']:.5g} release {rec['std']:.5g} (tol {tol:.1%}); mean ours {ours['mean']:.3g} "
              f"release {rec['mean']:.3g}; {family}")
    return std_ok and mean_ok and family_ok, detail


def _model(key: str, rec: dict) -> list[Result]:
    recipe = recipe_for(rec["config"])
    if recipe is None:
        return [Result(FILE, key, False, f"no recipe of ours reproduces {rec['config']}")]
    mc = load_recipe(recipe).model
    kind = "generator" if mc.task == "generator" else "tokenizer"
    model = create(kind, mc.preset, None, family=None if kind == "generator" else "titok")
    ours = dict(model.named_parameters())
    out: list[Result] = []
    names = [p["name"] for p in rec["parameters"]]
    missing = sorted(set(names) - set(ours))
    extra = sorted(n for n in set(ours) - set(names) if not n.startswith("pixel_"))
    out.append(Result(FILE, f"{key} ({recipe}: {mc.preset}) parameter names", not missing and not extra,
                      f"{len(names)} recorded; missing {missing[:5]}, extra {extra[:5]} (the pixel decoder and its "
                      f"codebook, loaded from the MaskGIT-VQGAN, are not compared)"))
    bad = []
    for p in rec["parameters"]:
        mine = ours.get(p["name"])
        if mine is None:
            continue
        if list(mine.shape) != p["shape"]:
            bad.append(f"{p['name']}: shape {list(mine.shape)} vs {p['shape']}")
            continue
        if mine.requires_grad != p["requires_grad"]:
            bad.append(f"{p['name']}: requires_grad {mine.requires_grad} vs {p['requires_grad']}")
            continue
        ok, detail = _compare(_stats(mine), p)
        if not ok:
            bad.append(f"{p['name']}: {detail}")
    out.append(Result(FILE, f"{key} init scheme per parameter", not bad,
                      f"{len(bad)} of {len(names)} differ" + (f", e.g. {'; '.join(bad[:3])}" if bad else "")))
    return out


def check(folder: Path, entry: dict) -> list[Result]:
    data = json.loads((Path(folder) / FILE).read_text())
    out: list[Result] = []
    for key, rec in data["models"].items():
        with torch.random.fork_rng():
            out += _model(key, rec)
    return out


CHECKS = {FILE: check}
