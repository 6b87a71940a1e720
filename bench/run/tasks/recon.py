"""Reconstruction quality: an image set through a tokenizer and back; rFID (reconstructions vs originals),
PSNR and SSIM. rFID uses the real Inception when given, else a seeded stand-in (labelled standin_fid).
Unreadable images are skipped and their count stored as `protocol.skipped`, or are fatal with `strict`."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from bench.metrics.image_batches import rank_image_batches
from bench.run.suite import RunSpec
from bench.run.tasks.common import RunContext, free, inception_for, load_model
from bench.run.timing import PeakMemory
from titok.contract import to_uint8, to_unit_float
from titok.data.images import DEFAULT_PREPARATION, DataError, open_dataset

log = logging.getLogger(__name__)


@torch.no_grad()
def encode_decode(tok, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B,3,H,W) -> (codes on the tokenizer's device, reconstructions uint8 (B,3,H,W) on CPU)."""
    x = tok.check_images(to_unit_float(batch.to(tok.device)))
    codes = tok.encode(x)
    return codes, to_uint8(tok.decode(codes)).cpu()


def run_recon(spec: RunSpec, ctx: RunContext) -> None:
    """Stream the image set through the tokenizer: per batch, reconstruct and update every metric's sums.

    Nothing grows with the number of images (PSNR/SSIM sums, running Inception statistics, code counts), so
    the 50,000 ImageNet val images at 512 need the memory of one batch. Under torchrun each rank reads its own
    global batches of the set (rank_image_batches), the sums are added across ranks (each accumulator's
    `reduce`), and rank 0 computes the numbers and writes the record; its `eval_wall_s` is rank 0's wall time
    and the peak memory the largest of any rank's.
    """
    from bench.metrics.distributed import all_gather, sum_arrays, together
    from bench.metrics.image_sets import InceptionMetrics
    from bench.metrics.streaming import CodebookUsage, RunningPixelMetrics

    s = spec.settings
    limit = min(s["limit"], ctx.limit) if ctx.limit else s["limit"]
    inception_metrics = [m for m in s["metrics"] if m in ("fid", "kid", "prc")]
    if inception_metrics:
        from bench.metrics.inception import require_torch_fidelity

        require_torch_fidelity()  # before the reconstructions, not after
    for preset in ctx.each_model(spec.models, "recon"):
        inception_weights = inception_for(s, ctx) if inception_metrics else None
        tok, tag = load_model("tokenizer", preset, s["weights"], ctx.device)
        start, memory = time.perf_counter(), PeakMemory(ctx.device)
        data = open_dataset(s["data"], tok.image_size, limit=limit, strict=s["strict"],
                            preparation=s["preparation"] or DEFAULT_PREPARATION)
        pixels = RunningPixelMetrics(tuple(s["metrics"]))
        usage = CodebookUsage(tok.codebook_size) if tok.is_vq else None
        inception = (InceptionMetrics(inception_metrics, inception_weights=inception_weights, device=ctx.device,
                                      batch_size=s["eval_batch_size"], preparation=data.preparation,
                                      bootstrap=s["fid_bootstrap"])
                     if inception_metrics else None)
        with together(f"recon of {preset}"):  # an unreadable image under strict on one rank ends every rank
            for real, positions in rank_image_batches(data, s["eval_batch_size"], ctx.dist, ctx.progress,
                                                      desc=f"recon {preset}"):
                codes, rec = encode_decode(tok, real)
                pixels.update(rec, real)
                if usage is not None:
                    usage.update(codes)
                if inception is not None:  # positions: each image's place in the set, whichever rank read it
                    inception.add_real(real, indices=positions.tolist())
                    inception.add_fake(rec, indices=positions.tolist())
        for part in (pixels, usage, inception):  # collective: the whole set's sums (Inception's on rank 0)
            if part is not None:
                part.reduce()
        skipped = int(sum_arrays({"skipped": np.array([len(getattr(data, "skipped", []))], np.int64)})["skipped"][0])
        if not pixels.n:
            raise DataError(f"{s['data']}: none of the {len(data)} images could be read ({skipped} skipped)")
        peaks = all_gather(memory.read())
        with together(f"recon of {preset}: its numbers"):
            if ctx.is_main:
                _emit(ctx, preset, tag, s, tok, data, pixels, usage, inception, skipped, start, peaks)
        free(tok)


def _emit(ctx, preset, tag, s, tok, data, pixels, usage, inception, skipped, start, peaks) -> None:
    """Rank 0's record of one tokenizer from the reduced sums."""
    if skipped:
        log.warning("%s: skipped %d unreadable images of %d (recorded as protocol.skipped)", s["data"], skipped,
                    len(data))
    metrics = {**pixels.result(), "eval_wall_s": time.perf_counter() - start,
               **{k: max(p[k] for p in peaks) for k in peaks[0]}}
    if usage is not None:
        metrics.update(usage.result())
    spreads = None
    protocol = {"data": s["data"], "num_images": pixels.n, "resolution": tok.image_size, "skipped": skipped,
                "preparation": data.preparation}
    if inception is not None:
        r = inception.result()
        # Reconstruction FID is rFID: fid -> rfid, standin_fid -> standin_rfid.
        metrics.update({k.replace("fid", "rfid"): v for k, v in r.values.items()})
        spreads = {k.replace("fid", "rfid"): v for k, v in r.spreads.items()} or None
        protocol.update(r.protocol)
    ctx.emit(model=preset, task="recon", metrics=metrics, protocol=protocol, weights_tag=tag, spreads=spreads)
