"""Data sets: folder reading, colour-mode conversion, bad files, preprocessing, built-in sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from titok.data.images import DataError, ImageFolder, builtin_images, iter_image_batches, open_dataset


def test_modes_are_converted_to_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    ds = ImageFolder(tmp_path, image_size=32)
    assert len(ds) == 4
    for i in range(4):
        img, label = ds[i]
        assert img.dtype == torch.uint8 and img.shape == (3, 32, 32) and label == 0
    gray = ds[ds.files.index(tmp_path / "gray.png")][0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_resize_shorter_side_then_center_crop(tmp_path):
    img = np.zeros((100, 300, 3), dtype=np.uint8)
    img[:, 100:200] = 255  # a white centre band: the crop keeps exactly it
    Image.fromarray(img).save(tmp_path / "wide.png")
    out, _ = ImageFolder(tmp_path, image_size=50)[0]
    assert out.shape == (3, 50, 50) and out.float().mean() > 250


def test_corrupt_file_is_skipped_or_fatal(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    ds = ImageFolder(tmp_path, image_size=8)
    batches = list(iter_image_batches(ds, batch_size=4))
    assert sum(b.shape[0] for b, _ in batches) == 1 and ds.skipped == [str(tmp_path / "bad.png")]
    with pytest.raises(DataError, match="bad.png"):
        ImageFolder(tmp_path, image_size=8, strict=True)[0]


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images"):
        ImageFolder(tmp_path)
    with pytest.raises(DataError, match="not found"):
        ImageFolder(tmp_path / "missing")


def test_imagenet_layout_labels(tmp_path):
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / wnid).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / wnid / "x.JPEG")
    ds = ImageFolder(tmp_path, image_size=8)
    assert [ds[i][1] for i in range(2)] == [0, 1]


def test_builtin_sets_are_deterministic():
    for name in ("procedural", "skimage"):
        a, b = builtin_images(name, 32, 14, seed=3), builtin_images(name, 32, 14, seed=3)
        assert a.shape == (14, 3, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b)
        assert len({img.float().mean().item() for img in a}) == 14  # all different
    assert not torch.equal(builtin_images("procedural", 32, 4, 0), builtin_images("procedural", 32, 4, 1))
    with pytest.raises(DataError, match="known: procedural, skimage"):
        open_dataset("builtin:imagenet", 32)


def test_mixed_sizes_are_batched_by_size(tmp_path):
    for i, size in enumerate((8, 8, 16)):
        Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(tmp_path / f"{i}.png")
    shapes = sorted(tuple(b.shape) for b, _ in iter_image_batches(ImageFolder(tmp_path), batch_size=8))
    assert shapes == [(1, 3, 16, 16), (2, 3, 8, 8)]


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "gray16.png")  # PIL's own convert("RGB") would make it all white
    img, _ = ImageFolder(tmp_path, image_size=32)[0]
    assert img[0, 0, 0] == 0 and img[0, -1, -1] == 255 and abs(img.float().mean() - 127.5) < 1
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
