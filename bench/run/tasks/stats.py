"""Reference statistics from real images (e.g. the 50,000 ImageNet val images): mu, sigma, the protocol they
were made under, and optionally the pool features, streamed batch by batch into one .npz.

One function serves the `titok-bench stats` command and the suites' `stats` task (the rehearsal suite makes
its reference this way before generating against it). At paper size it is one pass of Inception over 50,000
images with decoding in DataLoader workers, minutes on a GPU, so a stopped run is simply run again rather than
resumed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from bench.metrics.image_batches import rank_image_batches
from bench.run.suite import RunSpec
from bench.run.tasks.common import RunContext, inception_for
from bench.run.timing import PeakMemory
from titok.data.images import DEFAULT_PREPARATION, DataError, open_dataset
from titok.train.distributed import DistContext

log = logging.getLogger(__name__)


def make_statistics(data_spec: str, out: str | Path, image_size: int, *, inception_weights, preparation: str = "",
                    limit: int | None = None, strict: bool = False, batch_size: int = 64, device="cpu",
                    features: bool = False, progress: bool = False, num_workers: int | None = None,
                    dist: DistContext | None = None) -> dict:
    """Write the statistics file `out` for the images of `data_spec`; returns the protocol written into it.

    Under torchrun (`dist`, default the running process's place) each rank reads its global batches, the sums are
    added across ranks, and rank 0 writes the file; every rank returns the same protocol. COLLECTIVE there.
    """
    from bench.metrics.distributed import broadcast_from_main, current, sum_arrays, together
    from bench.metrics.image_sets import InceptionMetrics, few_images_warning
    from bench.metrics.statistics_file import STATS_FORMAT, write_statistics

    dist = dist or current()
    data = open_dataset(data_spec, image_size, limit=limit, strict=strict,
                        preparation=preparation or DEFAULT_PREPARATION)
    acc = InceptionMetrics(("fid", "sfid"), inception_weights=inception_weights, device=device, batch_size=batch_size,
                           keep_fake_features=features)
    with together(f"statistics of {data_spec}"):  # an unreadable image under strict on one rank ends every rank
        for batch, positions in rank_image_batches(data, batch_size, dist, progress and dist.is_main, "stats",
                                                   num_workers):
            acc.add_fake(batch, indices=positions.tolist())
    counts = sum_arrays({"n": np.array([acc.fake.n], np.int64),
                         "skipped": np.array([len(getattr(data, "skipped", []))], np.int64)})
    n, skipped = int(counts["n"][0]), int(counts["skipped"][0])
    acc.reduce()  # collective: the whole set's sums (and features) on rank 0; nothing to do in one process
    if n < 2:
        raise DataError(f"{data_spec}: statistics need at least 2 readable images, got {n} ({skipped} unreadable)")
    protocol = {"extractor": acc.info.name, "extractor_sha256": acc.info.weights_sha256,
                "standin": acc.info.standin, "image_size": int(image_size), "preparation": data.preparation,
                "num_images": n, "skipped": skipped, "source": str(data_spec), "features": features}
    with together(f"writing {out}"):
        if dist.is_main:
            if message := few_images_warning(n, f"images in {out}"):
                log.warning(message)
            mu, sigma = acc.fake_statistics()
            write_statistics(out, mu, sigma, protocol, acc.fake.store.array() if features else None,
                             spatial=acc.fake_spatial_statistics())
            log.info("wrote %s (%d images, %s)", out, n, STATS_FORMAT)
    return broadcast_from_main(protocol)


def run_stats(spec: RunSpec, ctx: RunContext) -> None:
    """The suites' `stats` task: a reference file at `reference` (often ${OUT_DIR}/...) and a record of it."""
    s = spec.settings
    if not s["reference"]:
        raise DataError("a stats run needs `reference`: the path of the .npz to write")
    limit = min(s["limit"], ctx.limit) if ctx.limit else s["limit"]
    start, memory = time.perf_counter(), PeakMemory(ctx.device)
    protocol = make_statistics(s["data"], s["reference"], s["image_size"], inception_weights=inception_for(s, ctx),
                               preparation=s["preparation"], limit=limit, strict=s["strict"],
                               batch_size=s["eval_batch_size"], device=ctx.device, features=s["features"],
                               progress=ctx.progress, dist=ctx.dist)
    ctx.emit(model="reference", task="stats", metrics={"wall_s": time.perf_counter() - start, **memory.read()},
             protocol={**protocol, "path": str(s["reference"])}, weights_tag="none")
