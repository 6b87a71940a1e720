"""Preparation protocols, each checked against an implementation of its published steps written here.

The references below follow the sources' steps with different machinery (integer arithmetic for sizes and
offsets, numpy slicing for crops, and where the whole protocol reduces to exact 2x2 box averages, numpy alone),
so a slip in the protocol's rounding, offsets or order of steps shows up as unequal pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from titok.data import prepare as P
from titok.errors import ConfigError

# (width, height): the 640x512, tall and wide, just below / at / above 2S, several halvings, odd sides,
# ImageNet val's common shapes, upscaling, and sizes where the protocols' roundings part.
SIZES = [(640, 512), (513, 1030), (300, 256), (256, 256), (1023, 517), (257, 999), (777, 555), (200, 150),
         (2048, 1536), (511, 300), (512, 700), (500, 375), (375, 500), (500, 333), (383, 256), (500, 358),
         (31, 17), (999, 1001)]
TARGETS = [256, 64, 33]


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Seeded noise over a smooth gradient: every resampling difference shows, and nothing is flat."""
    rng = np.random.default_rng(seed + 7919 * width + height)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / max(width - 1, 1), yy * 255 / max(height - 1, 1),
                     (xx + yy) * 127 / max(width + height - 2, 1)], axis=-1)
    noise = rng.normal(0, 40, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


# -------------------------------------------------------------------------------- independent references
def adm_reference(img: Image.Image, s: int) -> np.ndarray:
    """guided-diffusion center_crop_arr, step by step: BOX halvings, one BICUBIC resize, floor-offset crop."""
    w, h = img.size
    while w >= 2 * s and h >= 2 * s:  # "while the shorter side is at least twice the target"
        w, h = w // 2, h // 2
        img = img.resize((w, h), resample=Image.BOX)
    k = s / min(w, h)
    img = img.resize((round(w * k), round(h * k)), resample=Image.BICUBIC)
    a = np.array(img)
    y0, x0 = (a.shape[0] - s) // 2, (a.shape[1] - s) // 2
    return a[y0:y0 + s, x0:x0 + s]


def half_even(twice: int) -> int:
    """round(twice / 2) with ties to the even neighbour, in integers (Python's round on the float)."""
    q, r = divmod(twice, 2)
    return q if r == 0 or q % 2 == 0 else q + 1


def torchvision_reference(img: Image.Image, s: int) -> np.ndarray:
    """torchvision Resize(s, BICUBIC) on a PIL image + CenterCrop(s), per torchvision's documented semantics.

    Resize with an int: the smaller edge becomes s, the larger s * long / short truncated to an int, and a PIL
    input is resized by PIL itself with the mapped filter (always antialiased); an image whose smaller edge is
    already s is returned untouched. CenterCrop: top-left at round((H - s) / 2), round((W - s) / 2).
    """
    w, h = img.size
    if min(w, h) != s:
        if w <= h:
            w, h = s, (s * h) // w  # exact integer floor of the truncated quotient
        else:
            w, h = (s * w) // h, s
        img = img.resize((w, h), Image.BICUBIC)
    a = np.array(img)
    top, left = half_even(a.shape[0] - s), half_even(a.shape[1] - s)
    return a[top:top + s, left:left + s]


def legacy_reference(img: Image.Image, s: int) -> np.ndarray:
    """This project's former resize_center_crop: shorter side to s by one BICUBIC resize, floor-offset crop."""
    w, h = img.size
    k = s / min(w, h)
    size = (max(s, round(w * k)), max(s, round(h * k)))
    if size != (w, h):
        img = img.resize(size, Image.BICUBIC)
    a = np.array(img)
    y0, x0 = (a.shape[0] - s) // 2, (a.shape[1] - s) // 2
    return a[y0:y0 + s, x0:x0 + s]


def box_halve(a: np.ndarray) -> np.ndarray:
    """PIL's BOX resize to exactly half of even sides, in numpy: two passes (rows, then columns), each
    averaging a pair and rounding half up, as PIL's fixed-point resampler does with weights of exactly 1/2."""
    x = a.astype(np.int64)
    x = (x[:, 0::2] + x[:, 1::2] + 1) // 2
    x = (x[0::2] + x[1::2] + 1) // 2
    return x.astype(np.uint8)


REFERENCES = {P.ADM: adm_reference, P.TORCHVISION: torchvision_reference, P.LEGACY: legacy_reference}


# ------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", list(REFERENCES))
@pytest.mark.parametrize("s", TARGETS)
def test_protocol_equals_its_published_steps(name, s):
    fn = P.get_preparation(name)
    for w, h in SIZES:
        img = photo(w, h)
        out = fn(img, s)
        assert out.size == (s, s) and out.mode == "RGB"
        assert np.array_equal(np.asarray(out), REFERENCES[name](img, s)), (name, s, (w, h))


@pytest.mark.parametrize("w, h, halvings", [(640, 512, 1), (1280, 1024, 2), (512, 512, 1), (1024, 2048, 2)])
def test_adm_is_box_halvings_then_a_floor_crop_when_the_sides_halve_to_s(w, h, halvings):
    """Where halving lands the shorter side exactly on 256, ADM's protocol is numpy-only: no BICUBIC step."""
    a = np.asarray(photo(w, h))
    for _ in range(halvings):
        a = box_halve(a)
    y0, x0 = (a.shape[0] - 256) // 2, (a.shape[1] - 256) // 2
    expected = a[y0:y0 + 256, x0:x0 + 256]
    assert np.array_equal(np.asarray(P.adm_center_crop_arr(photo(w, h), 256)), expected)


def test_adm_and_legacy_differ_where_adm_halves():
    """The issue's case: a 640x512 image at 256 is BOX-halved by ADM but BICUBIC-resized by the legacy protocol."""
    for w, h in [(640, 512), (512, 700), (2048, 1536), (513, 1030), (777, 555)]:
        img = photo(w, h)
        diff = np.abs(np.asarray(P.adm_center_crop_arr(img, 256), dtype=int)
                      - np.asarray(P.resize_center_crop(img, 256), dtype=int))
        assert diff.max() >= 10, (w, h, diff.max())


def test_adm_and_legacy_agree_when_no_halving_happens():
    """Shorter side below 2S: both make one BICUBIC resize to the same rounded size and crop at the floor."""
    for w, h in [(511, 300), (300, 256), (256, 256), (500, 375), (375, 500), (500, 333), (500, 358), (383, 256),
                 (257, 999), (767, 511), (1023, 511), (200, 150), (31, 17)]:
        img = photo(w, h)
        assert np.array_equal(np.asarray(P.adm_center_crop_arr(img, 256)),
                              np.asarray(P.resize_center_crop(img, 256))), (w, h)


def test_release_protocol_agrees_with_adm_on_common_imagenet_shapes_and_parts_where_roundings_do():
    same = [(500, 375), (375, 500), (500, 333), (500, 400), (256, 256), (300, 256)]
    for w, h in same:
        img = photo(w, h)
        assert np.array_equal(np.asarray(P.torchvision_resize_center_crop(img, 256)),
                              np.asarray(P.adm_center_crop_arr(img, 256))), (w, h)
    # 383x256: no resize, slack 127 -> torchvision's round(63.5) = 64, ADM's floor = 63.
    img = photo(383, 256)
    assert np.array_equal(np.asarray(P.torchvision_resize_center_crop(img, 256)), np.asarray(img)[:, 64:320])
    assert np.array_equal(np.asarray(P.adm_center_crop_arr(img, 256)), np.asarray(img)[:, 63:319])
    # 500x358: 256 * 500 / 358 = 357.54 -> 357 wide (truncated) against ADM's 358 (rounded).
    img = photo(500, 358)
    assert not np.array_equal(np.asarray(P.torchvision_resize_center_crop(img, 256)),
                              np.asarray(P.adm_center_crop_arr(img, 256)))


def test_names_aliases_and_default():
    assert P.DEFAULT_PREPARATION == P.ADM == "adm-center-crop-arr"
    assert P.resolve_preparation("titok-release") == P.TORCHVISION
    assert P.get_preparation("titok-release") is P.torchvision_resize_center_crop
    assert P.resolve_preparation(P.LEGACY) == "pil-bicubic-shorter-side+center-crop"
    assert set(P.preparation_names()) == {P.ADM, P.TORCHVISION, P.LEGACY, P.TITOK_RELEASE}
    with pytest.raises(ConfigError, match="unknown image preparation 'bilinear'; known: adm-center-crop-arr, ") as e:
        P.get_preparation("bilinear")
    assert all(name in str(e.value) for name in P.preparation_names())
    for bad in (0, -3, 2.5):
        with pytest.raises(ConfigError, match="positive integer"):
            P.adm_center_crop_arr(photo(20, 20), bad)


@pytest.mark.parametrize("name", P.preparation_names())
def test_prepare_converts_any_mode_first(name):
    rgb = photo(90, 60)
    for mode in ("L", "RGBA", "P", "CMYK"):
        out = P.prepare(rgb.convert(mode), 32, name)
        assert out.mode == "RGB" and out.size == (32, 32)
