"""Named, published ways of turning a decoded image into the S x S picture a metric or a model sees.

Why this exists: FID compares Inception statistics of two image sets, and a reference was computed from images
prepared one particular way. Prepare ours differently and the score moves for reasons that have nothing to do
with the model (a different downscaling filter changes a 640x512 photo by up to 59/255 at 256). So every
protocol here is named after where it comes from, follows that source step by step, and the name goes into
the record of a run (`ImageFolder.preparation`).

Protocols (all take an RGB PIL image and the side S, and return an S x S PIL image):

- "adm-center-crop-arr": OpenAI guided-diffusion's `center_crop_arr` (guided_diffusion/image_datasets.py,
  lines 126-143 at commit 22e0df8), which made ADM's reference batches (VIRTUAL_imagenet256_labeled.npz, the
  gFID reference of the TiTok paper). While the shorter side is at least 2S, halve both sides (integer
  division) with PIL's BOX filter; then PIL-BICUBIC resize by S / shorter side, each side rounded with Python's
  round(); then crop S x S at offset ((W - S) // 2, (H - S) // 2). The TiTok release reuses this very function
  for its training-set pre-tokenization (scripts/pretokenization.py, lines 40-58).
- "torchvision-resize-bicubic+center-crop", alias "titok-release": the evaluation transform of the TiTok
  release (bytedance/1d-tokenizer, data/webdataset_reader.py, lines 114-123 at commit 942a96f, the loader of
  its reconstruction-FID evaluation, unchanged since the file appeared): `transforms.Resize(S,
  InterpolationMode.BICUBIC, antialias=True)` then `transforms.CenterCrop(S)` on a PIL RGB image. On a PIL
  image torchvision's Resize is PIL's own BICUBIC resize (which always filters with a support widened by the
  downscale factor, so the antialias flag changes nothing), to a shorter side of S and a longer side of
  int(S * long / short), truncated, and no resize at all when the shorter side already is S. CenterCrop
  places the crop at int(round((W - S) / 2)): Python's round, so a half offset goes to the even neighbour.
- "pil-bicubic-shorter-side+center-crop": what this project did before there was a choice, kept so records
  carrying the name stay reproducible: a single PIL-BICUBIC resize of the shorter side straight to S (sides
  rounded, no resize when already S), crop at the floored offset.

Where they agree: ADM's and the legacy protocol give identical pixels whenever the shorter side is below 2S
(no halving happens, and both round the sides and floor the offsets). The release's protocol differs from
both where the longer side's S * long / short has a fraction >= .5 (truncated, not rounded) or the crop's
slack is an odd number whose half rounds up (383x256 at 256: offset 64, not 63), and from ADM's also when a
halving happens. Most ImageNet val shapes (500x375, 500x333, 375x500) come out the same under all three.

DEFAULT_PREPARATION is ADM's: it is the one behind the gFID reference batch, it is the de-facto standard of
the ImageNet generation literature (ADM, DiT, MaskGIT, the release's own pre-tokenization), and using one
protocol for every real image keeps statistics computed from a folder comparable with that batch. To repeat
the release's own rFID evaluation exactly, ask for "titok-release". Not reproduced from the release: its
ImageNet shards hold the val images re-encoded as quality-100 JPEG (data/convert_imagenet_to_wds.py), while
we decode the original files. Every protocol converts to RGB first with `to_rgb`; for the modes ImageNet
holds (RGB, grayscale, CMYK) that equals the plain `convert("RGB")` both sources use.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np
from PIL import Image

from titok.errors import ConfigError

Preparation = Callable[[Image.Image, int], Image.Image]

ADM = "adm-center-crop-arr"
TORCHVISION = "torchvision-resize-bicubic+center-crop"
TITOK_RELEASE = "titok-release"
LEGACY = "pil-bicubic-shorter-side+center-crop"
AS_IS = "none"  # recorded for images used at the size they are stored or drawn at (nothing resized or cropped)
DEFAULT_PREPARATION = ADM


# ------------------------------------------------------------------------------------------- colour modes
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


# ------------------------------------------------------------------------------------------------ protocols
def _square(img: Image.Image, size: int, left: int, top: int) -> Image.Image:
    return img.crop((left, top, left + size, top + size))


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ConfigError(f"image size must be a positive integer, got {size!r}")


def adm_center_crop_arr(img: Image.Image, size: int) -> Image.Image:
    """guided-diffusion's center_crop_arr: BOX halvings while the shorter side >= 2S, BICUBIC to S, floor crop."""
    _check_size(size)
    while min(img.size) >= 2 * size:
        img = img.resize((img.width // 2, img.height // 2), resample=Image.BOX)
    factor = size / min(img.size)
    img = img.resize((round(img.width * factor), round(img.height * factor)), resample=Image.BICUBIC)
    return _square(img, size, (img.width - size) // 2, (img.height - size) // 2)


def torchvision_resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision Resize(S, BICUBIC, antialias=True) + CenterCrop(S) on a PIL image (the TiTok release's eval)."""
    _check_size(size)
    width, height = img.size
    short, long = min(width, height), max(width, height)
    if short != size:
        new_long = int(size * long / short)
        img = img.resize((size, new_long) if width <= height else (new_long, size), resample=Image.BICUBIC)
    left, top = int(round((img.width - size) / 2)), int(round((img.height - size) / 2))
    return _square(img, size, left, top)


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """The legacy protocol: one PIL-BICUBIC resize of the shorter side to S (sides rounded), floor crop."""
    _check_size(size)
    w, h = img.size
    scale = size / min(w, h)
    if (w, h) != (round(w * scale), round(h * scale)):
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    return _square(img, size, (w - size) // 2, (h - size) // 2)


PREPARATIONS: dict[str, Preparation] = {
    ADM: adm_center_crop_arr,
    TORCHVISION: torchvision_resize_center_crop,
    LEGACY: resize_center_crop,
}
ALIASES: dict[str, str] = {TITOK_RELEASE: TORCHVISION}


def preparation_names() -> tuple[str, ...]:
    """Every name a preparation can be asked for by: the protocols, then their aliases."""
    return (*PREPARATIONS, *ALIASES)


def resolve_preparation(name: str) -> str:
    """A protocol's canonical name (the one records carry) from its name or alias; ConfigError when unknown."""
    canonical = ALIASES.get(name, name)
    if canonical not in PREPARATIONS:
        raise ConfigError(f"unknown image preparation {name!r}; known: {', '.join(preparation_names())}")
    return canonical


def get_preparation(name: str) -> Preparation:
    """The protocol function (PIL image, side S) -> S x S PIL image behind a name or alias."""
    return PREPARATIONS[resolve_preparation(name)]


def prepare(img: Image.Image, size: int, preparation: str = DEFAULT_PREPARATION) -> Image.Image:
    """Any PIL image -> RGB, S x S, by the named protocol."""
    return get_preparation(preparation)(to_rgb(img), size)
