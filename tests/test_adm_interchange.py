"""Interchange with OpenAI's ADM evaluator: `export-npz` packs sample folders into the `.npz` it reads, and
`NpzImages` reads ADM-format batches as an image source, one image at a time.

Why these tests: a wrong row order, a header ADM's streaming reader does not take, or a half-written file
would change or break the paper's gFID/IS without an error anywhere, and reading a 2-39 GB `arr_0` whole would
exhaust memory; each is checked here on small files.
"""

from __future__ import annotations

import tracemalloc
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.commands.export_npz import export_npz, shuffled_order
from bench.metrics.reference import NpzImages
from titok.data.files import write_png_atomic
from titok.data.images import iter_image_batches
from titok.errors import DataError, InputError


def _write_samples(folder, count: int, size: int = 8, seed: int = 0) -> np.ndarray:
    """`count` random PNGs named as the generator names them; returns their pixels (N, H, W, 3)."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    for i, img in enumerate(pixels):
        write_png_atomic(folder / f"{i:06d}.png", torch.from_numpy(img).permute(2, 0, 1))
    return pixels


def _png(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


# ------------------------------------------------------------------------------------------------ export
@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Samples of the tiny generator: class-balanced (7) and with --labels 5,7,9 (5)."""
    from bench.run.tasks.common import load_model
    from bench.run.tasks.gen import generate_samples

    root = tmp_path_factory.mktemp("generated")
    gen, _ = load_model("generator", "titok_tiny_bert", {}, torch.device("cpu"))
    tok, _ = load_model("tokenizer", "titok_tiny_2stage", {}, torch.device("cpu"))
    generate_samples(gen, tok, root / "balanced", 7, run_seed=1, batch_size=4)
    generate_samples(gen, tok, root / "labelled", 5, run_seed=1, batch_size=4, labels=[5, 7, 9])
    return root


def test_export_of_generated_samples_reads_back_in_the_documented_order(generated, tmp_path, capsys):
    out = tmp_path / "samples.npz"
    assert main(["export-npz", str(generated / "balanced"), "--out", str(out), "--seed", "4"]) == 0
    assert "wrote 7 samples" in capsys.readouterr().out
    with np.load(out) as npz:  # plain np.load, as ADM's evaluator reads it
        assert sorted(npz.files) == ["arr_0", "arr_1", "sample_index"]
        arr, order, labels = npz["arr_0"], npz["sample_index"], npz["arr_1"]
    assert arr.dtype == np.uint8 and arr.shape == (7, 32, 32, 3)
    assert order.dtype == np.int64 and order.tolist() == np.random.default_rng(4).permutation(7).tolist()
    for j in range(7):  # row j is PNG sample_index[j]
        assert np.array_equal(arr[j], _png(generated / "balanced" / f"{order[j]:06d}.png"))
    assert labels.tolist() == (order % 1000).tolist()  # class i % num_classes, as generate_samples draws

    out = tmp_path / "labelled.npz"
    assert main(["export-npz", str(generated / "labelled"), "--out", str(out)]) == 0
    with np.load(out) as npz:
        order = npz["sample_index"]
        assert npz["arr_1"].tolist() == [[5, 7, 9][i % 3] for i in order]
        assert np.array_equal(npz["arr_0"][0], _png(generated / "labelled" / f"{order[0]:06d}.png"))


def test_members_are_what_np_savez_writes_and_adm_streams(tmp_path):
    pixels = _write_samples(tmp_path / "s", 12)
    out = tmp_path / "out" / "s.npz"  # the folder of --out is created
    made = export_npz(tmp_path / "s", out, seed=0)
    assert made.num == 12 and not made.labels and "no generation.json" in made.note
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=pixels[made.order], sample_index=made.order)
    with zipfile.ZipFile(out) as ours, zipfile.ZipFile(ref) as theirs:
        assert ours.namelist() == ["arr_0.npy", "sample_index.npy"]
        for name in ours.namelist():  # same header bytes (version, padding) and data as np.savez
            assert ours.read(name) == theirs.read(name)
            assert ours.getinfo(name).compress_type == zipfile.ZIP_STORED
        with ours.open("arr_0.npy") as f:  # ADM's evaluator streams versions 1.0 and 2.0 (it loads others whole)
            assert np.lib.format.read_magic(f) == (1, 0)
    with np.load(out) as npz:
        assert "mu" not in npz.files  # with "mu", ADM's evaluator would take statistics instead of computing them


def test_order_is_a_seeded_permutation(tmp_path):
    pixels = _write_samples(tmp_path / "s", 30)
    orders = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        export_npz(tmp_path / "s", tmp_path / f"{name}.npz", seed=seed, workers=3)
        with np.load(tmp_path / f"{name}.npz") as npz:
            orders[name] = npz["sample_index"]
            assert np.array_equal(npz["arr_0"], pixels[orders[name]])
    assert sorted(orders["a"].tolist()) == list(range(30))
    assert np.array_equal(orders["a"], orders["b"]) and not np.array_equal(orders["a"], orders["c"])
    assert np.array_equal(orders["a"], shuffled_order(30, 0))
    assert not np.array_equal(orders["a"], np.arange(30))  # shuffled: ADM's IS chunks must not follow the classes


def test_num_exports_the_first_samples_and_gaps_are_refused(tmp_path, capsys):
    pixels = _write_samples(tmp_path / "s", 10)
    made = export_npz(tmp_path / "s", tmp_path / "five.npz", num=5)
    with np.load(tmp_path / "five.npz") as npz:
        assert np.array_equal(npz["arr_0"], pixels[:5][made.order])
    (tmp_path / "s" / "000003.png").unlink()
    assert main(["export-npz", str(tmp_path / "s"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "1 of samples 0..9 missing or cut short (000003.png)" in capsys.readouterr().err
    assert main(["export-npz", str(tmp_path / "s"), "--out", str(tmp_path / "x.npz"), "--num", "12"]) == 2
    assert "3 of samples 0..11 missing" in capsys.readouterr().err
    assert main(["export-npz", str(tmp_path / "s"), "--out", str(tmp_path / "x.npz"), "--num", "3"]) == 0
    # A PNG cut short (no IEND) counts as missing, not as a sample.
    data = (tmp_path / "s" / "000001.png").read_bytes()
    (tmp_path / "s" / "000001.png").write_bytes(data[:-20])
    assert main(["export-npz", str(tmp_path / "s"), "--out", str(tmp_path / "x.npz"), "--num", "3"]) == 2
    assert "000001.png" in capsys.readouterr().err


def test_a_failure_midway_leaves_no_file_under_the_final_name(tmp_path, capsys):
    _write_samples(tmp_path / "s", 20, size=32)
    out = tmp_path / "out" / "samples.npz"
    export_npz(tmp_path / "s", out, num=2)
    before = out.read_bytes()
    # A PNG whose header reads but whose pixel data is broken: the export fails while writing arr_0.
    path = tmp_path / "s" / "000017.png"
    data = bytearray(path.read_bytes())
    start = data.find(b"IDAT") + 100
    data[start:start + 300] = bytes(300)
    path.write_bytes(bytes(data))
    assert main(["export-npz", str(tmp_path / "s"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unreadable PNG" in err and "000017.png" in err
    assert out.read_bytes() == before  # the earlier file is untouched, not half-replaced
    assert sorted(p.name for p in out.parent.iterdir()) == ["samples.npz"]  # no temporary file left
    out.unlink()
    assert main(["export-npz", str(tmp_path / "s"), "--out", str(out)]) == 2
    assert not out.exists() and not list(out.parent.iterdir())


def test_bad_input_exits_2(tmp_path, capsys):
    def fails(argv, message):
        assert main(["export-npz", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("titok-bench export-npz: error: ") and message in err and err.count("\n") == 1

    fails([str(tmp_path / "none"), "--out", str(tmp_path / "x.npz")], "sample folder not found")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "photo.png").write_bytes(b"")
    fails([str(tmp_path / "empty"), "--out", str(tmp_path / "x.npz")], "no samples (000000.png")
    _write_samples(tmp_path / "mixed", 3, size=8)
    write_png_atomic(tmp_path / "mixed" / "000003.png", torch.zeros(3, 8, 16, dtype=torch.uint8))
    fails([str(tmp_path / "mixed"), "--out", str(tmp_path / "x.npz")], "mixed image sizes: 000000.png is 8x8, "
          "000003.png is 16x8")
    _write_samples(tmp_path / "fine", 2)
    fails([str(tmp_path / "fine"), "--out", str(tmp_path)], "is a folder")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "000000.png").write_bytes(b"not a png" + b"IEND\xaeB`\x82" * 4)
    fails([str(tmp_path / "junk"), "--out", str(tmp_path / "x.npz")], "unreadable PNG")
    assert not (tmp_path / "x.npz").exists()


# -------------------------------------------------------------------------------------------- NpzImages
def _adm_batch(path, images: np.ndarray, compressed: bool = False, **extra) -> None:
    """The layout of ADM's reference batches: images in arr_0 beside precomputed statistics."""
    stats = {"mu": np.zeros(8), "sigma": np.eye(8), "mu_s": np.zeros(4), "sigma_s": np.eye(4)}
    (np.savez_compressed if compressed else np.savez)(path, arr_0=images, **stats, **extra)


def test_npz_images_reads_a_large_batch_in_constant_memory(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (1000, 128, 128, 3), dtype=np.uint8)  # 49 MB
    path = tmp_path / "VIRTUAL_like.npz"
    _adm_batch(path, images)
    expected = images.reshape(1000, -1).sum(axis=1, dtype=np.int64)
    del images
    tracemalloc.start()
    try:
        data = NpzImages(path)
        sums = [int(data[i][0].sum()) for i in range(len(data))]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sums == expected.tolist()
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB: arr_0 was read whole"  # arr_0 is 47 MiB
    assert data.shape == (1000, 128, 128, 3) and not data.compressed and data.labels is None
    assert data.skipped == [] and data.preparation == "none"


def test_npz_images_yields_what_np_load_does(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (11, 16, 24, 3), dtype=np.uint8)
    labels = np.arange(11) * 7 % 1000
    for compressed in (False, True):
        path = tmp_path / f"batch-{compressed}.npz"
        _adm_batch(path, images, compressed=compressed, arr_1=labels)
        with np.load(path) as npz:
            loaded = npz["arr_0"]
        data = NpzImages(path)
        assert data.compressed == compressed and len(data) == 11
        for i in (0, 5, 2, 10, 9, -1):  # out of order too: a deflated member restarts its stream
            img, label = data[i]
            assert img.dtype == torch.uint8 and img.shape == (3, 16, 24)
            assert np.array_equal(img.permute(1, 2, 0).numpy(), loaded[i]) and label == labels[i]
        with pytest.raises(IndexError):
            data[11]
        # Through the harness's batcher, in this process and in DataLoader workers (handles opened per process).
        for workers in (0, 2):
            batches = list(iter_image_batches(data, batch_size=4, num_workers=workers))
            assert [len(b) for b, _ in batches] == [4, 4, 3]
            got = torch.cat([b for b, _ in batches]).permute(0, 2, 3, 1).numpy()
            assert np.array_equal(got, loaded)
            assert torch.cat([lab for _, lab in batches]).tolist() == labels.tolist()


def test_npz_images_reads_an_export(tmp_path):
    pixels = _write_samples(tmp_path / "s", 6)
    made = export_npz(tmp_path / "s", tmp_path / "s.npz", seed=2)
    (tmp_path / "s" / "generation.json").write_text('{"generator": "titok_tiny_bert", "labels": [3, 4]}')
    export_npz(tmp_path / "s", tmp_path / "labelled.npz", seed=2)
    for name, labels in (("s.npz", [0] * 6), ("labelled.npz", [[3, 4][i % 2] for i in made.order])):
        data = NpzImages(tmp_path / name)
        assert [data[j][1] for j in range(6)] == labels
        for j in range(6):
            assert np.array_equal(data[j][0].permute(1, 2, 0).numpy(), pixels[made.order[j]])


def test_npz_images_bad_input(tmp_path):
    with pytest.raises(InputError, match="image batch not found"):
        NpzImages(tmp_path / "none.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match="not an .npz file"):
        NpzImages(tmp_path / "text.npz")
    np.savez(tmp_path / "stats.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(DataError, match=r"no 'arr_0' array .* \(it has: mu, sigma\) \(a statistics-only file"):
        NpzImages(tmp_path / "stats.npz")
    np.savez(tmp_path / "float.npz", arr_0=np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(DataError, match=r"uint8 images \(N, H, W, 3\).*got float32 \(2, 4, 4, 3\)"):
        NpzImages(tmp_path / "float.npz")
    np.savez(tmp_path / "chw.npz", arr_0=np.zeros((2, 3, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"got uint8 \(2, 3, 4, 4\)"):
        NpzImages(tmp_path / "chw.npz")
    np.savez(tmp_path / "label.npz", arr_0=np.zeros((2, 4, 4, 3), np.uint8), label=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="'label' must hold 2 integers"):
        NpzImages(tmp_path / "label.npz")
    np.savez(tmp_path / "other.npz", np.zeros((2, 4, 4, 3), np.uint8), np.zeros((5, 5)))  # arr_1, not labels
    assert NpzImages(tmp_path / "other.npz").labels is None
    whole = tmp_path / "whole.npz"
    np.savez(whole, arr_0=np.zeros((50, 16, 16, 3), np.uint8))
    (tmp_path / "cut.npz").write_bytes(whole.read_bytes()[:20000])
    with pytest.raises(DataError, match="not an .npz file"):  # the zip's directory is at the end: gone
        NpzImages(tmp_path / "cut.npz")
    np.savez(tmp_path / "key.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    assert len(NpzImages(tmp_path / "key.npz", key="images")) == 2
