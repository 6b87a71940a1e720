"""compute_image_metrics over a folder with unreadable files: an image's position is its index in the folder, so
two ranks (threads of this process standing in for torchrun's, tests/thread_world.py) count, split and score the
same images as one process, and every rank returns rank 0's result. The Inception Score is also written out here
over the readable positions (torch-fidelity's seeded split of the announced count)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import write_pngs
from tests.thread_world import ThreadWorld
from titok.data.images import builtin_images

pytestmark = [pytest.mark.metrics, pytest.mark.usefixtures("one_torch_thread")]
N, BAD, B = 24, (3, 8), 4  # 2 of 24 files unreadable, both in rank 0's batches (0 and 2) at world 2


@pytest.fixture
def folder(tmp_path):
    images = builtin_images("procedural", 32, N, seed=4)
    write_pngs(tmp_path / "set", images)
    for i in BAD:
        (tmp_path / "set" / f"img{i:03d}.png").write_bytes(b"\x89PNG not really")
    return tmp_path / "set", images


def _isc_of_positions(logits: dict[int, torch.Tensor], n: int, splits=10, seed=2020):
    """IS over splits of a seeded permutation of the n announced positions, each split holding its readable ones."""
    perm = np.random.RandomState(seed).permutation(n)
    scores = []
    for i in range(splits):
        chunk = torch.stack([logits[int(j)] for j in perm[i * n // splits:(i + 1) * n // splits] if int(j) in logits])
        p, log_p = chunk.double().softmax(1), chunk.double().log_softmax(1)
        scores.append(math.exp(float((p * (log_p - p.mean(0, keepdim=True).log())).sum(1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


@pytest.mark.slow
def test_skipped_files_keep_every_other_image_in_its_place_at_any_world_size(folder, standin_inception,
                                                                          monkeypatch):
    from bench.metrics.image_sets import compute_image_metrics, extract_features
    from bench.metrics.inception import load_inception
    from titok.data.images import ImageFolder

    root, images = folder

    def score():
        data = ImageFolder(root)
        r = compute_image_metrics(data, None, inception_weights=standin_inception, metrics=("isc",), batch_size=B,
                                  num_workers=0)
        return r, len(data.skipped)

    one, skipped_one = score()
    world = ThreadWorld(2)
    world.install(monkeypatch)
    (r0, skipped0), (r1, skipped1) = world.run(lambda rank: score())
    assert skipped_one == skipped0 == 2 and skipped1 == 0  # each rank reads (and skips) only its own files
    assert r0.protocol == r1.protocol == one.protocol and one.protocol["num_fake"] == N - len(BAD)
    assert r0.values == r1.values
    # with a skipped file one process refills its batch from the next global batch, a rank from its own next one:
    # the same images, in batches of other company, so features agree to float32 rounding, not bitwise
    assert r0.values == pytest.approx(one.values, rel=1e-6)
    extractor, _ = load_inception(standin_inception)
    good = [i for i in range(N) if i not in BAD]
    logits = extract_features(images[good], extractor, batch_size=B)["logits_unbiased"]
    want = _isc_of_positions(dict(zip(good, torch.from_numpy(logits), strict=True)), N)
    assert (one.values["standin_isc_mean"], one.values["standin_isc_std"]) == pytest.approx(want, rel=1e-6)


def test_a_grouped_accumulator_refuses_partial_results_and_a_local_one_ignores_the_group(standin_inception,
                                                                                        monkeypatch):
    from bench.metrics.base import MetricError
    from bench.metrics.image_sets import InceptionMetrics

    images = builtin_images("procedural", 32, 12, seed=5)

    def make(local=False):
        return InceptionMetrics(("isc",), inception_weights=standin_inception, num_fake=12, local=local)

    one = make()
    one.add_fake(images[:6])
    one.add_fake(images[6:])
    want = one.result().values
    world = ThreadWorld(2)
    world.install(monkeypatch)

    def work(rank):
        said = {}
        local = make(local=True)
        local.add_fake(images[:6])
        local.add_fake(images[6:])
        local.reduce()  # nothing to combine: its images are this rank's alone
        said["local"] = local.result().values
        grouped = make()
        grouped.add_fake(images[6 * rank:6 * rank + 6], range(6 * rank, 6 * rank + 6))
        with pytest.raises(MetricError, match="before reduce"):
            grouped.result()
        grouped.reduce()
        with pytest.raises(MetricError, match="after reduce"):
            grouped.add_fake(images[:1])
        if rank == 0:
            said["grouped"] = grouped.result().values
        else:
            with pytest.raises(MetricError, match="on rank 0"):
                grouped.result()
        return said

    r0, r1 = world.run(work)
    assert r0["local"] == r1["local"] == want
    assert r0["grouped"] == pytest.approx(want, rel=1e-12)
