"""Training data: augmented images, pretokenized token caches, and the rank-independent global batch order.

The order is what makes N processes equal one: each epoch is a permutation of the data set drawn from
(seed, epoch); micro-batch g of the run takes the next `global_micro` indices of it, and rank r takes its
contiguous slice. Every sample also gets its own seed from (run seed, global sample index), which drives its
random crop and flip and whatever randomness a task draws for it (generator masking, VAE noise). So a sample's
treatment depends neither on the number of processes nor on restarts: the data state is just the step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from titok.data.images import TensorImages, builtin_images
from titok.errors import ConfigError, DataError
from titok.train.sources import ListedImages, Listing, list_source, resize_shorter_side

log = logging.getLogger(__name__)
TOKENS_META = "titok_train.tokens"


def sample_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for global sample `index` of a run seeded with `seed`."""
    hi, lo = (int(v) for v in np.random.SeedSequence([seed, index]).generate_state(2, np.uint32))
    return (hi & 0x7FFFFFFF) << 32 | lo  # < 2**63: fits an int64 tensor


def open_source(source: str, size: int, seed: int, strict: bool = False, listing: Listing | None = None,
                prepare: Callable = resize_shorter_side, builtin_count: int = 64):
    """uint8 images from a built-in set (`builtin_count` drawn at `size`), a folder or shards (`prepare`d to `size`).

    `listing` is the folder's or shards' list when another process already made it (see loop: one rank lists,
    every rank reads its own samples).
    """
    if source.startswith("builtin:"):
        return TensorImages(builtin_images(source.removeprefix("builtin:"), size, builtin_count, seed))
    return ListedImages(list_source(source) if listing is None else listing, size, strict, prepare)


def split_holdout(dataset, limit: int, holdout: int, seed: int, what: str = "images"):
    """(training subset, held-out subset or None): `holdout` items drawn with `seed` are never trained on; then
    `limit` (0 = all) of the rest train. Both choices are logged, so a limit is never silent."""
    n = len(dataset)
    if holdout + limit > n or holdout >= n:
        raise DataError(f"the data set has {n} {what}, fewer than watch.holdout={holdout} + data.limit={limit}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 17)).tolist()
    held, rest = sorted(order[:holdout]), order[holdout:]
    train = sorted(rest[:limit]) if limit else sorted(rest)
    log.info("training on %d of %d %s%s%s", len(train), n, what,
             f" (data.limit={limit})" if limit and limit < len(rest) else " (all)",
             f", {holdout} held out for evaluation" if holdout else "")
    subset = Subset(dataset, train)
    return subset, (Subset(dataset, held) if holdout else None)


def load_size(image_size: int, random_crop: bool, margin: float) -> int:
    return int(round(image_size * (1 + margin))) if random_crop else image_size


def augment(image: torch.Tensor, size: int, seed: int, random_crop: bool, hflip: bool) -> torch.Tensor:
    """uint8 (3, H, W) -> float (3, size, size) in [0, 1]: a random crop and flip drawn from the sample's seed.

    With the load size equal to `size` (data.crop_margin 0) this is the release's Resize(S) + RandomCrop(S) +
    RandomHorizontalFlip: the crop moves along the longer side only."""
    rng = np.random.default_rng(seed)
    top, left = rng.integers(0, image.shape[1] - size + 1), rng.integers(0, image.shape[2] - size + 1)
    flip = rng.random() < 0.5
    if not random_crop:  # center crop (the loaded size already equals `size` then)
        top, left = (image.shape[1] - size) // 2, (image.shape[2] - size) // 2
    out = image[:, top : top + size, left : left + size]
    if hflip and flip:
        out = out.flip(-1)
    return out.float() / 255.0


def fetch(dataset, index: int, strict: bool):
    """dataset[index], or the next readable item when a folder image is unreadable (deterministically)."""
    for k in range(len(dataset)):
        item = dataset[(index + k) % len(dataset)]
        if item is not None:
            return item
        if strict:
            break
    raise DataError("no readable image in the data set")


@dataclass(frozen=True)
class GlobalOrder:
    """Which samples micro-batch g gives to `rank`: a per-epoch permutation, cut into global micro-batches."""

    size: int  # data set length
    global_micro: int  # samples per micro-batch over all ranks (= batch_size / grad_accum)
    world_size: int
    rank: int
    seed: int

    def __post_init__(self) -> None:
        if self.global_micro % self.world_size:
            raise ConfigError(f"the micro-batch of {self.global_micro} (optim.batch_size / grad_accum) does not split "
                             f"over {self.world_size} processes")
        if self.size < self.global_micro:
            raise DataError(f"the data set has {self.size} samples, fewer than one micro-batch of {self.global_micro}")

    @property
    def per_epoch(self) -> int:
        return self.size // self.global_micro  # the last incomplete micro-batch of an epoch is dropped

    def position(self, micro_index: int) -> tuple[int, int]:
        """(epoch, micro-batch within the epoch) of the run's micro-batch `micro_index`."""
        return divmod(micro_index, self.per_epoch)

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.size, generator=g)

    def indices(self, micro_index: int) -> tuple[list[int], list[int]]:
        """(data indices, sample seeds) of this rank's share of global micro-batch `micro_index`."""
        epoch, within = self.position(micro_index)
        local = self.global_micro // self.world_size
        start = within * self.global_micro + self.rank * local
        idx = self.permutation(epoch)[start : start + local].tolist()
        first = micro_index * self.global_micro + self.rank * local
        return idx, [sample_seed(self.seed, first + j) for j in range(local)]


class ImageBatches:
    """Augmented image batches: {"images": float (b,3,S,S) in [0,1], "labels": (b,), "seeds": (b,)}."""

    def __init__(self, dataset, image_size: int, random_crop: bool, hflip: bool, strict: bool = False):
        self.dataset, self.image_size = dataset, image_size
        self.random_crop, self.hflip, self.strict = random_crop, hflip, strict

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, indices: list[int], seeds: list[int]) -> dict[str, torch.Tensor]:
        images, labels = [], []
        for i, s in zip(indices, seeds, strict=True):
            img, label = fetch(self.dataset, i, self.strict)
            images.append(augment(img, self.image_size, s, self.random_crop, self.hflip))
            labels.append(label)
        return {"images": torch.stack(images), "labels": torch.tensor(labels), "seeds": torch.tensor(seeds)}


class TokenBatches:
    """Pretokenized batches: {"tokens": (b, N) long, "labels": (b,), "seeds": (b,)} from a cache file."""

    def __init__(self, path: str | Path):
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise DataError(f"token cache not found: {path}")
        with safe_open(str(path), "pt") as f:
            self.meta = f.metadata() or {}
        data = load_file(str(path))
        if "tokens" not in data or "labels" not in data:
            raise DataError(f"{path} is not a token cache (needs 'tokens' and 'labels' tensors)")
        self.tokens, self.labels = data["tokens"], data["labels"]  # stored small (int16 codes); widened per batch

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def batch(self, indices: list[int], seeds: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.tensor(indices)
        return {"tokens": self.tokens[idx].long(), "labels": self.labels[idx].long(), "seeds": torch.tensor(seeds)}


class _MicroBatches(torch.utils.data.Dataset):
    """Item g = this rank's share of global micro-batch g, fully built (so workers can build them ahead)."""

    def __init__(self, source, order: GlobalOrder):
        self.source, self.order = source, order

    def __len__(self) -> int:
        return 2**62  # unbounded: the sampler says which micro-batches are read

    def __getitem__(self, g: int) -> dict[str, torch.Tensor]:
        return self.source.batch(*self.order.indices(g))


def micro_batch_loader(source, order: GlobalOrder, start: int, stop: int, workers: int = 0, pin: bool = False):
    """Micro-batches start .. stop-1 in order; each depends only on its index, so workers change nothing."""
    return torch.utils.data.DataLoader(_MicroBatches(source, order), batch_size=None, sampler=range(start, stop),
                                       num_workers=workers, pin_memory=pin,
                                       generator=torch.Generator().manual_seed(0))  # keep off the global RNG
