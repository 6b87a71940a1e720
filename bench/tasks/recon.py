"""Reconstruction quality: an image set through a tokenizer and back; rFID (reconstructions vs originals),
PSNR and SSIM. rFID uses the real Inception when given, else a seeded stand-in (labelled standin_fid).
Unreadable images are skipped and their count stored as `protocol.skipped`, or are fatal with `strict`."""

from __future__ import annotations

import logging

import torch

from bench.suite import RunSpec
from bench.tasks.common import RunContext, free, inception_for, load_model
from titok.data.images import DataError, iter_image_batches, open_dataset

log = logging.getLogger(__name__)


def run_recon(spec: RunSpec, ctx: RunContext) -> None:
    from bench.metrics import compute_image_metrics, psnr, ssim

    s = spec.settings
    limit = min(s["limit"], ctx.limit) if ctx.limit else s["limit"]
    if {"fid", "kid", "prc"} & set(s["metrics"]):
        from bench.inception import require_torch_fidelity

        require_torch_fidelity()  # before the reconstructions, not after
    for preset in spec.models:
        tok, tag = load_model("tokenizer", preset, s["weights"], ctx.device)
        data = open_dataset(s["data"], tok.image_size, limit=limit, strict=s["strict"])
        reals, recons = [], []
        for batch, _ in iter_image_batches(data, s["eval_batch_size"], ctx.progress, desc=f"recon {preset}"):
            reals.append(batch)
            recons.append(tok.reconstruct(batch, batch_size=s["eval_batch_size"]))
        skipped = len(getattr(data, "skipped", []))
        if not reals:
            raise DataError(f"{s['data']}: none of the {len(data)} images could be read ({skipped} skipped)")
        if skipped:
            log.warning("%s: skipped %d unreadable images of %d (recorded as protocol.skipped)", s["data"],
                        skipped, len(data))
        real, rec = torch.cat(reals), torch.cat(recons)
        metrics = {}
        if "psnr" in s["metrics"]:
            metrics["psnr"] = psnr(rec, real)
        if "ssim" in s["metrics"]:
            metrics["ssim"] = ssim(rec, real)
        protocol = {"data": s["data"], "num_images": int(real.shape[0]), "resolution": tok.image_size,
                    "skipped": skipped}
        fid_metrics = [m for m in s["metrics"] if m in ("fid", "kid", "prc")]
        if fid_metrics:
            r = compute_image_metrics(rec, real, inception_weights=inception_for(s, ctx), metrics=fid_metrics,
                                      batch_size=s["eval_batch_size"], device=ctx.device, progress=ctx.progress)
            # Reconstruction FID is rFID: fid -> rfid, standin_fid -> standin_rfid.
            metrics.update({k.replace("fid", "rfid"): v for k, v in r.values.items()})
            protocol.update(r.protocol)
        ctx.emit(model=preset, task="recon", metrics=metrics, protocol=protocol, weights_tag=tag)
        free(tok)
