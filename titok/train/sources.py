"""Where training images come from at scale: an image folder in ImageNet's train layout, or tar shards in the
TiTok release's webdataset layout, listed once and read at random by index.

Labels: a folder's top-level subfolders in sorted order are classes 0..K-1 (ImageNet's `train/<wnid>/`, sorted
synsets, as torchvision's ImageFolder that the release's pretokenization uses); a flat folder is class 0. Shards:
members `<key>.jpg|png|jpeg|webp` with `<key>.cls` holding the class id as text (what the release's
`data/convert_imagenet_to_wds.py` writes). Shards are indexed with the standard library's tarfile (the byte
offset of every member) instead of being streamed with the `webdataset` package: random access by index keeps
the run's global order, so N processes still equal one and a resume continues at the exact sample.

The listing (`Listing`) is built by one process and broadcast to the others, so 8 ranks do not each walk 1.28M
files; each rank then decodes only the samples of its own slice of every batch. It is held in numpy arrays, not
Python lists: 1.28M path objects would be touched by reference counting in every DataLoader worker, turning the
shared copy-on-write pages into a private copy per worker; arrays of bytes are never written to.

Images are read as the release's training transform reads them: the shorter side resized (bicubic,
antialiased, as torchvision's Resize) to the load size; the random crop and flip are drawn later per sample.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from titok.data.images import DECODE_ERRORS, IMAGE_EXTENSIONS, open_rgb, pil_to_uint8
from titok.errors import DataError

log = logging.getLogger(__name__)
SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
MAX_OPEN_SHARDS = 64  # per process; ImageNet has 1,281 train shards and a default limit is 1,024 open files


@dataclass
class Listing:
    """Every sample of a source: for a folder, paths relative to `root`; for shards, (shard, offset, size)."""

    root: str
    kind: str  # "folder" | "shards"
    items: np.ndarray  # folder: (M,) utf-8 relative paths (bytes); shards: (M, 3) int64 shard index, offset, size
    labels: np.ndarray  # (M,) int64
    shards: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    def head(self, count: int) -> Listing:
        """The first `count` samples (all when count is 0)."""
        if not count:
            return self
        return Listing(self.root, self.kind, self.items[:count], self.labels[:count], self.shards, self.classes)


def expand_shards(pattern: str) -> list[Path]:
    """'dir/imagenet-train-{000000..000320}.tar' (webdataset's brace range), a glob, a folder of .tar, or one file."""
    match = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if match:
        first, last = match.group(1), match.group(2)
        names = [pattern[: match.start()] + str(i).zfill(len(first)) + pattern[match.end():]
                 for i in range(int(first), int(last) + 1)]
        paths = [Path(n).expanduser() for n in names]
    elif Path(pattern).expanduser().is_dir():
        paths = sorted(Path(pattern).expanduser().glob("*.tar"))
    elif any(c in pattern for c in "*?["):
        base = Path(pattern).expanduser()
        paths = sorted(base.parent.glob(base.name))
    else:
        paths = [Path(pattern).expanduser()]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise DataError(f"data.source {pattern!r}: shard files not found: {', '.join(missing[:3]) or 'none match'}")
    return paths


def is_shard_source(source: str) -> bool:
    p = Path(source).expanduser()
    return source.endswith(".tar") or "{" in source or (p.is_dir() and any(p.glob("*.tar")))


def list_folder(root: str) -> Listing:
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"data folder not found: {root}")
    files = sorted(str(p.relative_to(base)) for p in base.rglob("*")
                   if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    classes = sorted({Path(f).parts[0] for f in files if len(Path(f).parts) > 1})
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[Path(f).parts[0]] if len(Path(f).parts) > 1 else 0 for f in files]
    return Listing(str(base), "folder", np.array([f.encode() for f in files]), np.array(labels, dtype=np.int64),
                   classes=classes)


def list_shards(pattern: str) -> Listing:
    shards, items, all_labels = [], [], []
    for s, path in enumerate(expand_shards(pattern)):
        shards.append(str(path))
        images: dict[str, tuple[int, int]] = {}
        labels: dict[str, int] = {}
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                if ext.lower() in SHARD_IMAGE_EXTENSIONS:
                    images[key] = (member.offset_data, member.size)
                elif ext == "cls":
                    raw = tar.extractfile(member).read().decode().strip()
                    try:
                        labels[key] = int(raw)
                    except ValueError:
                        raise DataError(f"{path}: {member.name} holds {raw!r}, not a class id") from None
        for key in sorted(images):
            if key not in labels:
                raise DataError(f"{path}: sample {key!r} has an image but no {key}.cls label")
            items.append((s, *images[key]))
            all_labels.append(labels[key])
    if not items:
        raise DataError(f"data.source {pattern!r}: the shards hold no images")
    return Listing(pattern, "shards", np.array(items, dtype=np.int64), np.array(all_labels, dtype=np.int64), shards)


def list_source(source: str) -> Listing:
    return list_shards(source) if is_shard_source(source) else list_folder(source)


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """torchvision's Resize(size, BICUBIC, antialias=True) on a PIL image: shorter side to `size`, aspect kept."""
    w, h = img.size
    short, long = min(w, h), max(w, h)
    if short == size:
        return img
    new_long = int(size * long / short)
    return img.resize((size, new_long) if w <= h else (new_long, size), resample=Image.BICUBIC)


class ListedImages(torch.utils.data.Dataset):
    """item i -> (uint8 (3, H, W), label), or None for an unreadable file. By default the shorter side is resized
    to `load_size` (training: the crop comes per sample); `prepare` may instead make it square (pretokenization
    uses ADM's center_crop_arr, as the release)."""

    def __init__(self, listing: Listing, load_size: int, strict: bool = False,
                 prepare: Callable[[Image.Image, int], Image.Image] | None = None):
        self.listing, self.load_size, self.strict = listing, load_size, strict
        self.prepare = prepare or resize_shorter_side
        self._open: OrderedDict[int, object] = OrderedDict()  # shard files, opened lazily in each worker process

    def __len__(self) -> int:
        return len(self.listing.items)

    def _bytes(self, i: int) -> tuple[io.BytesIO | str, str]:
        item = self.listing.items[i]
        if self.listing.kind == "folder":
            path = str(Path(self.listing.root) / item.decode())
            return path, path
        shard, offset, size = (int(v) for v in item)
        f = self._open.pop(shard, None)
        if f is None:
            if len(self._open) >= MAX_OPEN_SHARDS:  # random access touches every shard: stay under the fd limit
                self._open.popitem(last=False)[1].close()
            f = open(self.listing.shards[shard], "rb")  # noqa: SIM115 (kept open for reuse)
        self._open[shard] = f  # most recently used last
        f.seek(offset)
        return io.BytesIO(f.read(size)), f"{self.listing.shards[shard]}@{offset}"

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        data, name = self._bytes(i)
        try:
            img = open_rgb(data)
        except DECODE_ERRORS as exc:
            if self.strict:
                raise DataError(f"unreadable image {name}: {exc}") from None
            log.warning("skipping unreadable image %s: %s", name, exc)
            return None
        return pil_to_uint8(self.prepare(img, self.load_size)), int(self.listing.labels[i])

    def __getstate__(self):  # file handles do not cross into DataLoader workers; each opens its own
        return {**self.__dict__, "_open": OrderedDict()}
