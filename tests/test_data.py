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


# ------------------------------------------------------------------------------- DataLoader workers, preparation
def imagenet_like(root, bad_at: int | None = 5):
    """Two class folders of differently sized photos (noise), with one corrupt file among them."""
    rng = np.random.default_rng(1)
    sizes = [(40, 30), (30, 40), (64, 48), (33, 57), (50, 50), (45, 31), (70, 36)]
    k = 0
    for wnid in ("n01440764", "n01443537"):
        (root / wnid).mkdir()
        for w, h in sizes:
            path = root / wnid / f"ILSVRC2012_val_{k:08d}.JPEG"
            if k == bad_at:
                path.write_bytes(b"\xff\xd8\xff\xe0 truncated")
            else:
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format="JPEG")
            k += 1
    return sorted(root.rglob("*.JPEG"))


def test_workers_give_the_same_batches_in_order_with_labels(tmp_path):
    files = imagenet_like(tmp_path)
    runs = {}
    for workers in (0, 2):
        ds = ImageFolder(tmp_path, image_size=24)
        runs[workers] = list(iter_image_batches(ds, batch_size=4, num_workers=workers))
        assert ds.skipped == [str(files[5])]  # counted once, in this process, whatever the number of workers
    assert [len(b) for b, _ in runs[0]] == [4, 4, 4, 1]  # full batches although a file was skipped
    for (a, la), (b, lb) in zip(runs[0], runs[2], strict=True):
        assert a.dtype == torch.uint8 and torch.equal(a, b) and torch.equal(la, lb) and la.dtype == torch.int64
    ds = ImageFolder(tmp_path, image_size=24)
    expected = [ds.read(i) for i in range(len(ds)) if i != 5]  # the data set's order
    assert torch.equal(torch.cat([b for b, _ in runs[2]]), torch.stack([img for img, _ in expected]))
    assert torch.cat([lab for _, lab in runs[2]]).tolist() == [0] * 6 + [1] * 7


def test_strict_error_in_a_worker_reaches_the_caller_as_a_data_error(tmp_path):
    files = imagenet_like(tmp_path)
    for workers in (0, 2):
        seen = []
        with pytest.raises(DataError) as err:
            for batch, _ in iter_image_batches(ImageFolder(tmp_path, image_size=24, strict=True), 2,
                                               num_workers=workers):
                seen.append(len(batch))
        assert type(err.value) is DataError
        assert str(err.value).startswith(f"unreadable image {files[5]}: ") and "Traceback" not in str(err.value)
        assert seen == [2, 2]  # the batches before the bad file's arrive first


def test_mixed_sizes_with_workers_come_one_size_group_at_a_time(tmp_path):
    for i, size in enumerate((8, 16, 8, 16, 8)):
        Image.fromarray(np.full((size, size, 3), i, np.uint8)).save(tmp_path / f"{i}.png")
    batches = list(iter_image_batches(ImageFolder(tmp_path), batch_size=4, num_workers=2))
    assert [(tuple(b.shape), b[:, 0, 0, 0].tolist()) for b, _ in batches] == [
        ((2, 3, 8, 8), [0, 2]), ((2, 3, 16, 16), [1, 3]), ((1, 3, 8, 8), [4])]


def test_tensor_sets_are_sliced_without_workers():
    images = builtin_images("procedural", 16, 7)
    batches = list(iter_image_batches(images, batch_size=3, num_workers=4))
    assert [len(b) for b, _ in batches] == [3, 3, 1] and torch.equal(torch.cat([b for b, _ in batches]), images)
    assert all(lab.dtype == torch.int64 and not lab.any() for _, lab in batches)
    batches[0][0].zero_()
    assert images[0].any()  # the batches are copies, not views of the set


def test_collate_drops_unreadable_items_and_stacks_per_size():
    from titok.data.images import Unreadable, collate_images

    a, b = torch.zeros(3, 4, 4, dtype=torch.uint8), torch.ones(3, 2, 2, dtype=torch.uint8)
    out = collate_images([(a, 1), None, Unreadable("x.png", "broken"), (b, 2), (a, 3)])
    assert out.seen == 5 and out.error is None and out.skipped == [Unreadable("x.png", "broken")]
    assert [(tuple(i.shape), lab.tolist()) for i, lab in out.groups] == [((2, 3, 4, 4), [1, 3]), ((1, 3, 2, 2), [2])]


def test_default_number_of_workers(monkeypatch):
    from titok.data.images import default_num_workers

    for cpus, expected in ((1, 0), (2, 1), (4, 3), (64, 8)):
        monkeypatch.setattr("os.sched_getaffinity", lambda _pid, n=cpus: set(range(n)), raising=False)
        assert default_num_workers() == expected


def test_data_sets_carry_their_preparation(tmp_path):
    from titok.data.prepare import ADM, LEGACY, TORCHVISION, adm_center_crop_arr, torchvision_resize_center_crop
    from titok.errors import ConfigError

    img = np.random.default_rng(0).integers(0, 256, (512, 640, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "wide.png")
    assert ImageFolder(tmp_path, image_size=256).preparation == ADM
    assert ImageFolder(tmp_path).preparation == "none"  # nothing resized
    release = ImageFolder(tmp_path, image_size=256, preparation="titok-release")
    assert release.preparation == TORCHVISION
    expected = np.asarray(torchvision_resize_center_crop(Image.fromarray(img), 256)).transpose(2, 0, 1)
    assert np.array_equal(release[0][0].numpy(), expected)
    adm = np.asarray(adm_center_crop_arr(Image.fromarray(img), 256)).transpose(2, 0, 1)
    assert np.array_equal(open_dataset(str(tmp_path), 256)[0][0].numpy(), adm)
    assert open_dataset(str(tmp_path), 256, preparation=LEGACY).preparation == LEGACY
    assert open_dataset("builtin:skimage", 32, limit=2).preparation == ADM
    assert open_dataset("builtin:skimage", 32, limit=2, preparation="titok-release").preparation == TORCHVISION
    assert open_dataset("builtin:procedural", 32, limit=2).preparation == "none"
    with pytest.raises(ConfigError, match="known: adm-center-crop-arr"):
        open_dataset(str(tmp_path), 256, preparation="bilinear")
