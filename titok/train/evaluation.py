"""Evaluation during training on held-out data (watch.holdout items never trained on), every watch.eval_every steps.

Tokenizers: reconstruction MSE and PSNR of the center-cropped held-out images (8-bit rounded, as images are
saved), and for VQ tokenizers the fraction of the codebook the held-out tokens use. Generators: cross-entropy
and accuracy on masked positions of held-out token rows, with masks fixed by the rows' indices so that every
evaluation of a run sees the same problem.

With `watch.rfid`, tokenizers also get rFID of the held-out reconstructions. The Inception network and the FID
code belong to the harness (`bench`), which this package must not import (the layer contract), and they are too
large to move down; so the harness offers them as a plug-in in the entry-point group `titok_bench.train_metrics`
(pyproject.toml), the same inversion by which the baselines join the model registry. Without the plug-in (the
harness not installed) `watch.rfid` is one clear error before training starts.
"""

from __future__ import annotations

import math
from importlib.metadata import entry_points

import torch
import torch.nn.functional as F
from torch import nn

from titok.contract import autocast_context
from titok.errors import MissingDependencyError
from titok.train.data import augment, fetch, sample_seed
from titok.train.losses import arccos_masks

EVAL_SEED = 987_654_321  # masks of held-out rows: fixed for the whole run, unlike training's per-step draws
METRIC_GROUP = "titok_bench.train_metrics"


def load_image_metric(name: str):
    """The factory a package registered under METRIC_GROUP as `name` (the harness registers `rfid`)."""
    found = [ep for ep in entry_points(group=METRIC_GROUP) if ep.name == name]
    if not found:
        raise MissingDependencyError(f"watch.{name}: no {name!r} plug-in in the entry-point group {METRIC_GROUP}; it "
                                     f"comes with the harness: install titok-bench (pip install -e '.[metrics]')")
    return found[0].load()


@torch.no_grad()
def evaluate_tokenizer(model: nn.Module, holdout, image_size: int, batch_size: int, device: torch.device,
                       dtype: torch.dtype | None, image_metric=None) -> dict[str, float]:
    """`image_metric`: a plug-in's accumulator (add(real uint8, fake uint8), result() -> dict), e.g. rFID."""
    model.eval()
    sq_err, psnr_sum, n, used = 0.0, 0.0, 0, set()
    for start in range(0, len(holdout), batch_size):
        items = [fetch(holdout, i, False)[0] for i in range(start, min(start + batch_size, len(holdout)))]
        x = torch.stack([augment(img, image_size, 0, False, False) for img in items]).to(device)  # center crops
        with autocast_context(device, dtype):
            codes = model.encode(x)
            recon = model.decode(codes)
        recon = (recon.float().clamp(0, 1) * 255).round() / 255  # as it would be saved
        if image_metric is not None:
            image_metric.add((x * 255).round().to(torch.uint8).cpu(), (recon * 255).round().to(torch.uint8).cpu())
        mse = ((recon - x) ** 2).flatten(1).mean(1)  # (b,)
        sq_err += float(mse.sum())
        psnr_sum += float((-10 * torch.log10(mse.clamp_min(1e-10))).sum())
        n += x.shape[0]
        if getattr(model, "is_vq", False):
            used.update(codes.flatten().tolist())
    out = {"recon_mse": sq_err / n, "psnr": psnr_sum / n}
    if getattr(model, "is_vq", False):
        out["codebook_usage"] = len(used) / model.codebook_size
    if image_metric is not None:
        out.update(image_metric.result())
    return out


@torch.no_grad()
def evaluate_generator(model: nn.Module, holdout, batch_size: int, device: torch.device,
                       dtype: torch.dtype | None) -> dict[str, float]:
    model.eval()
    ce_sum, correct, masked = 0.0, 0, 0
    for start in range(0, len(holdout), batch_size):
        idx = list(range(start, min(start + batch_size, len(holdout))))
        rows = [holdout[i] for i in idx]
        tokens = torch.stack([r[0] for r in rows]).long().to(device)
        labels = torch.tensor([int(r[1]) for r in rows], device=device)
        masks, _ = arccos_masks(torch.tensor([sample_seed(EVAL_SEED, i) for i in idx]), model.num_tokens, 0.0)
        masks = masks.to(device)
        ids = torch.where(masks, torch.full_like(tokens, model.mask_token_id), tokens)
        with autocast_context(device, dtype):
            logits = model.logits(ids, labels)
        ce = F.cross_entropy(logits.float()[masks], tokens[masks], reduction="sum")
        ce_sum += float(ce)
        correct += int((logits.argmax(-1)[masks] == tokens[masks]).sum())
        masked += int(masks.sum())
    return {"masked_ce": ce_sum / masked, "masked_acc": correct / masked,
            "masked_ppl": math.exp(min(ce_sum / masked, 50.0))}


class TokenRows(torch.utils.data.Dataset):
    """A token cache's rows as (tokens (N,), label) items, so held-out rows split like images."""

    def __init__(self, tokens: torch.Tensor, labels: torch.Tensor):
        self.tokens, self.labels = tokens, labels

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, i: int):
        return self.tokens[i], int(self.labels[i])
