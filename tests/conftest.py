"""Shared fixtures: small image folders, and a stand-in Inception weights file built once per session."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from titok.data.images import builtin_images


def write_pngs(folder, images: torch.Tensor, prefix: str = "img") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{prefix}{i:03d}.png")


def pytest_collection_modifyitems(config, items):
    """Marks every test that runs the (stand-in) Inception network `inception`: seconds to a minute each on CPU.
    Mutation testing leaves them out (tox -e mutation), since mutmut reruns a survivor's every test; the
    accumulator's arithmetic has fast tests of its own (tests/test_inception_metrics_arithmetic.py)."""
    for item in items:
        if "standin_inception" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.inception)


@pytest.fixture(scope="session")
def standin_inception(tmp_path_factory):
    """Seeded random-weight Inception saved to a file and loaded through the real path (metrics stack only)."""
    from bench.metrics.inception import make_standin_inception_weights

    return make_standin_inception_weights(tmp_path_factory.mktemp("inception") / "standin.pth", seed=0)


@pytest.fixture(scope="session")
def image_folders(tmp_path_factory):
    """Two folders of 64x64 PNGs: photographs (a) and procedural drawings (b), 12 each."""
    root = tmp_path_factory.mktemp("folders")
    write_pngs(root / "a", builtin_images("skimage", 64, 12, seed=0))
    write_pngs(root / "b", builtin_images("procedural", 64, 12, seed=0))
    return root / "a", root / "b"


@pytest.fixture
def one_torch_thread():
    """The test's in-process reference runs with one torch thread, as the ranks it spawns do (OMP_NUM_THREADS=1).

    A convolution's float32 sums depend on how its work is split over threads, so one process and two give
    bitwise-equal Inception features (and so equal digests, and statistics to 1e-6) only at equal thread counts;
    tox runs the tests with 2 threads by default."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
