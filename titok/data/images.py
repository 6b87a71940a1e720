"""Image sets for evaluation and training: ImageNet-layout or any image folder, and built-in sets that need no download.

Evaluation preprocessing (TiTok / ADM style): resize the shorter side to S with PIL bicubic, then center-crop
S x S; every image becomes 8-bit RGB (grayscale, 16-bit grayscale, CMYK, palette and RGBA are converted). A
folder with a bad file does not stop a 50,000-image run: the file is skipped and counted (and the count goes
into the record's protocol), unless `strict` asks for a hard error.
Built-in sets: "procedural" (seeded shapes, gradients and textures) and "skimage" (crops of the photographs
shipped inside the scikit-image package).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from titok.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
RESIZE_MODE = "pil-bicubic-shorter-side+center-crop"
BUILTIN_SETS = ("procedural", "skimage")
# Colour photographs among scikit-image's bundled data files (always present, no download).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "color.png")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float grayscale -> 8-bit "L", scaled (PIL's own convert clips at 255)."""
    a = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        scale = 255.0 if a.size and np.nanmax(a) <= 1.0 else 1.0  # floats in [0, 1], else already 0..255
    else:
        sixteen_bit = img.mode.startswith("I;16") or (a.size > 0 and a.max() > 255)
        scale = 1 / 257 if sixteen_bit else 1.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.nan_to_num(a * scale), 0, 255).round().astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparent pixels are composited on white, as a viewer shows them."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return _high_depth_to_l(img).convert("RGB")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.split()[-1])
        return canvas
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    if (w, h) != (round(w * scale), round(h * scale)):
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, H, W)


class ImageFolder(torch.utils.data.Dataset):
    """Images under `root` (recursively, sorted) -> (uint8 (3,S,S), label).

    The label is the index of the image's top-level subfolder among the sorted subfolders (the ImageNet
    `val/<wnid>/` layout), or 0 for a flat folder. Unreadable files yield None and are listed in `skipped`.
    """

    def __init__(self, root, image_size: int | None = None, strict: bool = False, limit: int | None = None):
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
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.files)

    def label(self, path: Path) -> int:
        parts = path.relative_to(self.root).parts
        return self.class_index.get(parts[0], 0) if len(parts) > 1 else 0

    def __getitem__(self, i: int):
        path = self.files[i]
        try:
            with Image.open(path) as img:
                img.load()
                img = to_rgb(img)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            if self.strict:
                raise DataError(f"unreadable image {path}: {exc}") from None
            log.warning("skipping unreadable image %s: %s", path, exc)
            self.skipped.append(str(path))
            return None
        if self.image_size:
            img = resize_center_crop(img, self.image_size)
        return pil_to_uint8(img), self.label(path)


class TensorImages(torch.utils.data.Dataset):
    """An in-memory uint8 (N,3,H,W) tensor (and optional labels) as a data set."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"expected uint8 images (N,3,H,W), got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels = images, labels
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i]) if self.labels is not None else 0


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


def builtin_images(name: str, image_size: int, count: int, seed: int = 0) -> torch.Tensor:
    """`count` deterministic uint8 images (N,3,S,S) from a built-in set."""
    if name not in BUILTIN_SETS:
        raise DataError(f"unknown built-in image set {name!r}; known: {', '.join(BUILTIN_SETS)}")
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
            out.append(pil_to_uint8(resize_center_crop(img, image_size)))
    return torch.stack(out) if out else torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)


def open_dataset(spec: str, image_size: int, limit: int | None = None, strict: bool = False, seed: int = 0):
    """"builtin:procedural" | "builtin:skimage" (limit images, default 16) | a folder path -> a Dataset."""
    if spec.startswith("builtin:"):
        return TensorImages(builtin_images(spec.removeprefix("builtin:"), image_size, limit or 16, seed))
    return ImageFolder(spec, image_size=image_size, strict=strict, limit=limit)


def iter_image_batches(source, batch_size: int = 64, progress: bool = False, desc: str = "images"
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 tensor or Dataset -> batches (uint8 (B,3,H,W), labels (B,)); unreadable items are dropped.

    Images of different sizes (a folder read without resizing) are yielded one size-group at a time.
    """
    if isinstance(source, torch.Tensor):
        source = TensorImages(source)
    n = len(source)
    bar = tqdm(total=n, desc=desc, disable=not progress, unit="img")
    batch: list[tuple[torch.Tensor, int]] = []

    def flush():
        groups: dict[tuple, list] = {}
        for img, lab in batch:
            groups.setdefault(tuple(img.shape), []).append((img, lab))
        for items in groups.values():
            yield torch.stack([i for i, _ in items]), torch.tensor([lab for _, lab in items])

    for i in range(n):
        item = source[i]
        bar.update(1)
        if item is None:
            continue
        batch.append(item)
        if len(batch) == batch_size:
            yield from flush()
            batch = []
    if batch:
        yield from flush()
    bar.close()
