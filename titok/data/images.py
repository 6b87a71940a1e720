"""Image sets for evaluation and training: ImageNet-layout or any image folder, and built-in sets that need no download.

Every image becomes 8-bit RGB (grayscale, 16-bit grayscale, CMYK, palette and RGBA are converted) and is then
prepared to S x S by a named protocol from `titok.data.prepare` (by default ADM's `center_crop_arr`, the one
behind the gFID reference batch); the data set carries the protocol's name in `.preparation` so that a record
can say how its images were made. A folder with a bad file does not stop a 50,000-image run: the file is
skipped and counted (and the count goes into the record's protocol), unless `strict` asks for a hard error.

`iter_image_batches` decodes and prepares folder images in DataLoader worker processes, so that JPEG decoding
at ImageNet scale does not starve the model; the batches still come in the data set's order, unreadable files
still end up in the data set's `skipped` list, and a strict-mode error still reaches the caller as a DataError.
Built-in sets: "procedural" (seeded shapes, gradients and textures) and "skimage" (crops of the photographs
shipped inside the scikit-image package).
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from titok.data.prepare import (
    AS_IS,
    DEFAULT_PREPARATION,
    LEGACY,
    get_preparation,
    resize_center_crop,
    resolve_preparation,
    to_rgb,
)
from titok.errors import ConfigError, DataError
from titok.progress import Progress

__all__ = ["BUILTIN_SETS", "DEFAULT_PREPARATION", "IMAGE_EXTENSIONS", "RESIZE_MODE", "DataError", "ImageFolder",
           "LoadedBatch", "TensorImages", "Unreadable", "builtin_images", "collate_images", "default_num_workers",
           "iter_image_batches", "open_dataset", "pil_to_uint8", "resize_center_crop", "to_rgb"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
RESIZE_MODE = LEGACY  # the legacy protocol's name, which records made before the choice existed carry
BUILTIN_SETS = ("procedural", "skimage")
# Colour photographs among scikit-image's bundled data files (always present, no download).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "color.png")
MAX_DEFAULT_WORKERS = 8


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> uint8 (3, H, W)."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


class Unreadable(NamedTuple):
    """A file that could not be decoded, and why (what `ImageFolder.read` returns for it)."""

    path: str
    reason: str


# What a corrupt, truncated, non-image or oversized file raises while decoding: a bad input, never a bug of ours.
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


def open_rgb(source) -> Image.Image:
    """A file path or binary stream decoded in full and converted to RGB (raises one of `DECODE_ERRORS`)."""
    with Image.open(source) as img:
        img.load()
        return to_rgb(img)


class ImageFolder(torch.utils.data.Dataset):
    """Images under `root` (recursively, sorted) -> (uint8 (3,S,S), label).

    The label is the index of the image's top-level subfolder among the sorted subfolders (the ImageNet
    `val/<wnid>/` layout), or 0 for a flat folder. With `image_size`, images are prepared to S x S by the
    protocol named `preparation` (see titok.data.prepare); without, they keep their stored size and
    `.preparation` is "none". Unreadable files yield None from `[i]` and are listed in `skipped` (or raise a
    DataError with `strict`); `read(i)` is the same without the bookkeeping, for worker processes.
    """

    def __init__(self, root, image_size: int | None = None, strict: bool = False, limit: int | None = None,
                 preparation: str = DEFAULT_PREPARATION):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root}")
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {self.root}")
        self.files = files[:limit] if limit else files
        classes = sorted({p.relative_to(self.root).parts[0] for p in files if len(p.relative_to(self.root).parts) > 1})
        self.class_index = {c: i for i, c in enumerate(classes)}
        self.image_size, self.strict = image_size, strict
        self.preparation = resolve_preparation(preparation) if image_size else AS_IS
        self._prepare = get_preparation(self.preparation) if image_size else None
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.files)

    def label(self, path: Path) -> int:
        parts = path.relative_to(self.root).parts
        return self.class_index.get(parts[0], 0) if len(parts) > 1 else 0

    def read(self, i: int) -> tuple[torch.Tensor, int] | Unreadable:
        """The i-th image prepared, with its label, or `Unreadable` for a bad file (a DataError with `strict`).

        Touches no state, so it is safe in a DataLoader worker, whose changes to the data set are lost.
        """
        path = self.files[i]
        try:
            img = open_rgb(path)
        except DECODE_ERRORS as exc:
            if self.strict:
                raise DataError(f"unreadable image {path}: {exc}") from None
            return Unreadable(str(path), str(exc))
        if self._prepare is not None:
            img = self._prepare(img, self.image_size)
        return pil_to_uint8(img), self.label(path)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        item = self.read(i)
        if isinstance(item, Unreadable):
            log.warning("skipping unreadable image %s: %s", item.path, item.reason)
            self.skipped.append(item.path)
            return None
        return item


class TensorImages(torch.utils.data.Dataset):
    """An in-memory uint8 (N,3,H,W) tensor (and optional labels) as a data set.

    `preparation` names how the images were made S x S (a built-in set's photographs) or "none" (as given).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, preparation: str = AS_IS):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"expected uint8 images (N,3,H,W), got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels = images, labels
        self.preparation = preparation if preparation == AS_IS else resolve_preparation(preparation)
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i]) if self.labels is not None else 0

    def batch(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images start..stop-1 and their labels, copied out of the set."""
        labels = (self.labels[start:stop].to(torch.int64) if self.labels is not None
                  else torch.zeros(min(stop, len(self)) - start, dtype=torch.int64))
        return self.images[start:stop].clone(), labels.clone()


# ------------------------------------------------------------------------------------------- built-in sets
def _procedural(rng: np.random.Generator, size: int) -> np.ndarray:
    """One seeded synthetic picture: a colour gradient, a sinusoidal texture and a few flat shapes."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * math.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    freq, phase = rng.uniform(2, 12, 2), rng.uniform(0, 2 * math.pi)
    img += rng.uniform(5, 30) * np.sin(2 * math.pi * (freq[0] * xx + freq[1] * yy) + phase)[..., None]
    for _ in range(rng.integers(2, 6)):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        colour = rng.uniform(0, 255, 3)
        shape = ((xx - cx) ** 2 + (yy - cy) ** 2 < r**2) if rng.random() < 0.5 else (
            (abs(xx - cx) < r) & (abs(yy - cy) < r * rng.uniform(0.3, 1)))
        img[shape] = colour
    return np.clip(img, 0, 255).astype(np.uint8)


def _skimage_photos() -> list[Path]:
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    photos = [folder / name for name in SKIMAGE_PHOTOS if (folder / name).is_file()]
    if not photos:
        raise DataError(f"no bundled photographs found in {folder}; is scikit-image installed completely?")
    return photos


def builtin_images(name: str, image_size: int, count: int, seed: int = 0,
                   preparation: str = DEFAULT_PREPARATION) -> torch.Tensor:
    """`count` deterministic uint8 images (N,3,S,S) from a built-in set.

    "procedural" pictures are drawn at S (nothing to prepare); "skimage" photographs and their crops are
    prepared to S by the protocol named `preparation`.
    """
    if name not in BUILTIN_SETS:
        raise DataError(f"unknown built-in image set {name!r}; known: {', '.join(BUILTIN_SETS)}")
    prepare = get_preparation(preparation)
    rng = np.random.default_rng(seed)
    out = []
    if name == "procedural":
        out = [torch.from_numpy(_procedural(rng, image_size)).permute(2, 0, 1) for _ in range(count)]
    else:
        photos = [to_rgb(Image.open(p)) for p in _skimage_photos()]
        for i in range(count):
            img = photos[i % len(photos)]
            if i >= len(photos):  # past one pass over the photos, take seeded square crops of them
                w, h = img.size
                side = int(min(w, h) * rng.uniform(0.5, 1.0))
                left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
                img = img.crop((left, top, left + side, top + side))
            out.append(pil_to_uint8(prepare(img, image_size)))
    return torch.stack(out) if out else torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)


def open_dataset(spec: str, image_size: int, limit: int | None = None, strict: bool = False, seed: int = 0,
                 preparation: str = DEFAULT_PREPARATION) -> ImageFolder | TensorImages:
    """"builtin:procedural" | "builtin:skimage" (limit images, default 16) | a folder path -> a Dataset.

    Its `.preparation` is the canonical name of the protocol the images went through ("none" for procedural
    pictures, which are drawn at `image_size`).
    """
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        images = builtin_images(name, image_size, limit or 16, seed, preparation=preparation)
        return TensorImages(images, preparation=AS_IS if name == "procedural" else preparation)
    return ImageFolder(spec, image_size=image_size, strict=strict, limit=limit, preparation=preparation)


# ------------------------------------------------------------------------------------------------ batching
def default_num_workers() -> int:
    """Decoding processes for a folder: one per CPU this process may use, less one for the main process, at most 8.

    Eight keep a GPU fed with 256 px ImageNet JPEGs; more only add start-up time and memory.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(MAX_DEFAULT_WORKERS, cpus - 1))


class _Failed(NamedTuple):
    """A strict-mode DataError raised while reading an item in a worker, carried back as a value."""

    message: str


class LoadedBatch(NamedTuple):
    """One DataLoader batch: its images stacked per size (in order of first appearance), the unreadable files,
    the strict-mode error if any, and how many items of the data set it covered."""

    groups: list[tuple[torch.Tensor, torch.Tensor]]
    skipped: list[Unreadable]
    error: str | None
    seen: int


class _Reader(torch.utils.data.Dataset):
    """`source` seen from a worker: items, `Unreadable` files or `_Failed` errors, never an exception of ours.

    A DataError raised in a worker would reach the caller re-made from a message holding the worker's whole
    traceback; carried back as a value, it is raised again in the main process with its own message.
    """

    def __init__(self, source):
        self.source = source
        self.read = getattr(source, "read", None)  # bookkeeping-free access where the data set offers it

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        try:
            return self.read(i) if self.read is not None else self.source[i]
        except DataError as exc:
            return _Failed(str(exc))


def collate_images(items: list) -> LoadedBatch:
    """DataLoader collate: drop unreadable items (None / `Unreadable`), stack the rest per image size.

    Runs in the worker, so the main process receives a few stacked tensors per batch, not one per image.
    """
    groups: dict[tuple[int, ...], tuple[list[torch.Tensor], list[int]]] = {}
    skipped, error = [], None
    for item in items:
        if item is None:
            continue
        if isinstance(item, Unreadable):
            skipped.append(item)
        elif isinstance(item, _Failed):
            error = error or item.message
        else:
            img, label = item
            images, labels = groups.setdefault(tuple(img.shape), ([], []))
            images.append(img)
            labels.append(int(label))
    stacked = [(torch.stack(images), torch.tensor(labels, dtype=torch.int64)) for images, labels in groups.values()]
    return LoadedBatch(stacked, skipped, error, len(items))


def _split_first(pending: deque, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Take the first `count` images off the queue of (images, labels) chunks, splitting a chunk if needed."""
    taken = []
    while count:
        images, labels = pending[0]
        if len(images) <= count:
            taken.append(pending.popleft())
            count -= len(images)
        else:
            taken.append((images[:count], labels[:count]))
            pending[0] = (images[count:], labels[count:])
            count = 0
    return taken


def _by_size(chunks: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    groups: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for images, labels in chunks:
        groups.setdefault(tuple(images.shape[1:]), []).append((images, labels))
    for same in groups.values():
        if len(same) == 1:
            yield same[0]
        else:
            yield torch.cat([i for i, _ in same]), torch.cat([lab for _, lab in same])


def iter_image_batches(source, batch_size: int = 64, progress: bool = False, desc: str = "images",
                       num_workers: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 tensor or Dataset -> batches (uint8 (B,3,H,W), labels (B,)) in the data set's order.

    Items are read by a DataLoader with `num_workers` processes (default `default_num_workers()`, never more
    than there are batches; 0 reads in this process; an in-memory tensor set is sliced, with no workers).
    Unreadable items are dropped and, where the data set offers `read` (ImageFolder), appended to its
    `skipped` list here in the main process, so the count is right whatever the number of workers. Batches
    hold `batch_size` images even when files were skipped (the last one fewer); images of different sizes (a
    folder read without resizing) are yielded one size group at a time, `batch_size` images between them.
    A strict-mode DataError raised while reading is raised here, with its message, when its batch is reached.
    """
    if isinstance(source, torch.Tensor):
        source = TensorImages(source)
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    n = len(source)
    bar = Progress(n, desc, "img", progress)
    if isinstance(source, TensorImages):
        try:
            for start in range(0, n, batch_size):
                yield source.batch(start, start + batch_size)
                bar.update(min(batch_size, n - start))
        finally:
            bar.close()
        return
    workers = default_num_workers() if num_workers is None else num_workers
    if workers < 0:
        raise ConfigError(f"num_workers must be 0 or more, got {workers}")
    workers = min(workers, math.ceil(n / batch_size))
    loader = torch.utils.data.DataLoader(_Reader(source), batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=collate_images, persistent_workers=False)
    skipped_list = getattr(source, "skipped", None) if hasattr(source, "read") else None
    pending: deque = deque()
    count = 0
    try:
        for loaded in loader:
            if loaded.error is not None:
                raise DataError(loaded.error)
            for item in loaded.skipped:
                log.warning("skipping unreadable image %s: %s", item.path, item.reason)
                if skipped_list is not None:
                    skipped_list.append(item.path)
            for images, labels in loaded.groups:
                pending.append((images, labels))
                count += len(images)
            bar.update(loaded.seen)
            while count >= batch_size:
                yield from _by_size(_split_first(pending, batch_size))
                count -= batch_size
        if count:
            yield from _by_size(list(pending))
    finally:
        bar.close()
