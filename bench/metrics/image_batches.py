"""One rank's share of an image set, in batches that carry each image's position in the whole set.

Every reader of an image set for metrics goes through `rank_image_batches`: `titok-bench fid` and `stats`
(compute_image_metrics, the stats task) and the recon task, so a set is batched the same way by all of them, at any
world size. The set is cut into global batches [j*B, (j+1)*B); rank r reads those with j % world == r
(bench.metrics.distributed.rank_batches). An image's position is its index in the data set: the metrics key their
per-image randomness (the Inception Score's split, the bootstrap weights) and their gathering order by it, so a
result does not depend on which rank read an image. An unreadable file is dropped and leaves its place empty: its
global batch comes out one image short rather than filled up from the next one (`_by_global_batch`), so batches,
and a model's float rounding by batch, are the same at every world size.
"""

from __future__ import annotations

import os

import torch

from bench.metrics.distributed import rank_batches
from titok.data.images import TensorImages, Unreadable, default_num_workers, iter_image_batches
from titok.progress import Progress
from titok.train.distributed import DistContext


class _Positioned(torch.utils.data.Dataset):
    """The items `indices` of a data set, each labelled with its index in the whole set instead of its class.

    The positions come back with the images through DataLoader workers. Items are read with the set's `read` where
    it has one (ImageFolder: an unreadable file comes back as `Unreadable` and is counted in the set's own
    `skipped` list by iter_image_batches), else by indexing. `strict` is the set's, so a strict folder still
    raises on a bad file."""

    def __init__(self, data, indices: list[int]):
        self.data, self.indices = data, indices
        self.skipped = getattr(data, "skipped", [])
        self.strict = getattr(data, "strict", False)

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, k: int):
        i = self.indices[k]
        item = self.data.read(i) if hasattr(self.data, "read") else self.data[i]
        return item if item is None or isinstance(item, Unreadable) else (item[0], i)


def rank_workers(local_world: int | None = None) -> int:
    """Decoding processes per rank: the host's default shared among the ranks torchrun put on it."""
    local_world = local_world or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, (default_num_workers() + 1) // max(1, local_world) - 1)


def rank_image_batches(data, batch_size: int, dist: DistContext, progress: bool = False, desc: str = "images",
                       num_workers: int | None = None):
    """This rank's share of an image set (a uint8 tensor, TensorImages or a Dataset): (uint8 (B,3,H,W), positions
    (B,) int64) batches in order. One process reads every batch. `num_workers`: decoding processes of this rank
    (default: the host's default, shared among the ranks on it under torchrun)."""
    if isinstance(data, torch.Tensor):
        data = TensorImages(data)
    batches = rank_batches(len(data), batch_size, dist.rank, dist.world_size)
    if isinstance(data, TensorImages):  # in memory: slices, no workers
        with Progress(sum(len(b) for b in batches), desc, "img", progress) as bar:
            for b in batches:
                yield data.batch(b.start, b.stop)[0], torch.arange(b.start, b.stop, dtype=torch.int64)
                bar.update(len(b))
        return
    mine = _Positioned(data, [i for b in batches for i in b])
    if not len(mine):
        return
    if num_workers is None and dist.world_size > 1:
        num_workers = rank_workers()
    yield from _by_global_batch(iter_image_batches(mine, batch_size, progress, desc, num_workers), batch_size)


def _by_global_batch(batches, batch_size: int):
    """(images, positions) batches regrouped so that each holds exactly the readable images of one global batch.

    iter_image_batches fills a batch up past an unreadable file with the next batch's images; a rank's next batch
    is another one than one process's, so the batches would then differ between world sizes. Regrouped, a batch
    with an unreadable file is one image short, the same at any world size."""
    held: list[tuple[torch.Tensor, torch.Tensor]] = []
    held_batch = None
    for images, positions in batches:
        which = positions // batch_size
        start = 0
        for end in range(1, len(positions) + 1):
            if end < len(positions) and which[end] == which[start]:
                continue
            j = int(which[start])
            if held and j != held_batch:
                yield torch.cat([x for x, _ in held]), torch.cat([p for _, p in held])
                held = []
            held_batch = j
            held.append((images[start:end], positions[start:end]))
            start = end
    if held:
        yield torch.cat([x for x, _ in held]), torch.cat([p for _, p in held])
