"""mlm_loss.npz: the generator's masked-token loss (label smoothing, unmasked weight, whole-batch normalisation),
its logged accuracy, the mask-count schedule and the masks the release draws, through titok/train/losses.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from titok.train.losses import (
    mask_counts,
    mask_ratio,
    mask_tokens,
    masked_token_accuracy,
    masked_token_loss,
    masks_from_draws,
)
from titok.train.recipes import load_recipe
from titok.train.release_vectors import Result
from titok.train.release_vectors._release_models import close, recipe_for

FILE = "mlm_loss.npz"
REL, ABS = 1e-5, 1e-7  # the README's pure loss arithmetic


def check(folder: Path, entry: dict) -> list[Result]:
    d = np.load(Path(folder) / FILE)
    t = {k: torch.from_numpy(d[k]) for k in d.files}
    out: list[Result] = []
    want = entry.get("losses", {})
    smoothing, unmasked = want.get("label_smoothing", 0.1), want.get("loss_weight_unmasked_token", 0.1)
    recipe = recipe_for(entry.get("config", "configs/training/generator/maskgit.yaml"))
    if recipe is not None:  # our release recipe trains with the recorded loss settings
        lc = load_recipe(recipe).loss
        got = (lc.label_smoothing, lc.unmasked_weight, lc.token_loss_norm)
        out.append(Result(FILE, f"recipe {recipe} loss settings", got == (smoothing, unmasked, "batch"),
                          f"ours {got}, release ({smoothing}, {unmasked}, 'batch')"))
        smoothing, unmasked = lc.label_smoothing, lc.unmasked_weight
    logits, targets, mask = t["logits"], t["targets"], t["mask"].bool()
    for suffix, m in (("", mask), ("_all_masked", torch.ones_like(mask))):
        loss = masked_token_loss(logits, targets, m, smoothing, unmasked).item()
        out.append(Result(FILE, f"loss{suffix}", *close(loss, float(d[f"loss{suffix}"]), REL, ABS)))
        acc = masked_token_accuracy(logits, targets, m).item()
        out.append(Result(FILE, f"correct_tokens{suffix}", *close(acc, float(d[f"correct_tokens{suffix}"]), REL, ABS)))
    ratio = mask_ratio(t["schedule_t"])
    err = (ratio - t["schedule_mask_ratio"]).abs().max().item()
    out.append(Result(FILE, "schedule_mask_ratio", err <= 1e-6, f"max |err| {err:.3g} (tol 1e-6, float32)"))
    for key in sorted(k for k in d.files if k.startswith("schedule_num_masked_L")):
        length = int(key.removeprefix("schedule_num_masked_L"))
        got = mask_counts(t["schedule_t"], length)
        out.append(Result(FILE, key, torch.equal(got, t[key]), f"ours {got.tolist()}, release {d[key].tolist()}"))
    mask_id = int(entry.get("mask_token_id", 4096))
    for prefix in sorted({k.rsplit("_", 1)[0] for k in d.files if k.startswith("masking_L") and k.endswith("_rand")}):
        times, rand = t[f"{prefix}_timesteps"], t[f"{prefix}_rand"]
        counts = mask_counts(times, rand.shape[-1])
        out.append(Result(FILE, f"{prefix}_num_masked", torch.equal(counts, t[f"{prefix}_num_masked"]),
                          f"ours {counts.tolist()}, release {d[f'{prefix}_num_masked'].tolist()}"))
        masks = masks_from_draws(times, rand)
        bad = int((masks != t[f"{prefix}_masks"].bool()).sum())
        out.append(Result(FILE, f"{prefix}_masks", bad == 0, f"{bad} of {masks.numel()} positions differ"))
        masked = mask_tokens(t[f"{prefix}_tokens"], masks, mask_id)
        bad = int((masked != t[f"{prefix}_masked_tokens"]).sum())
        out.append(Result(FILE, f"{prefix}_masked_tokens", bad == 0, f"{bad} of {masked.numel()} ids differ"))
    return out


CHECKS = {FILE: check}
