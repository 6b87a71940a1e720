"""InceptionMetrics' own arithmetic, with the network replaced by a lookup table of known features.

Every value the accumulator reports (FID, sFID, IS, KID, precision/recall, the FID bootstrap), the protocol it
records and its checkpoints are checked here against the scores written out in tests/reference_scores.py, on
features chosen so that a bug shows: precision near 1 with recall far below it, KID far from 0, IS far from 1.
The Inception network is the only part replaced: `_Lookup` stands where torch-fidelity's extractor stands and
returns, for each image, the row of the tables its first pixel encodes, through the same `inception_features` /
`SpatialTap` path as the real network. The feature sizes are shrunk (12-d pool, 28-d spatial, 10 logits) so each
test runs in well under a second and mutation testing can afford them; the arithmetic does not depend on the
sizes. The real network's values against torch-fidelity are tests/test_metric_references.py's.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
import torch

from tests.reference_scores import (
    fid_of_features,
    frechet_by_definition,
    inception_score_by_definition,
    kid_by_definition,
    precision_recall_by_definition,
    weighted_statistics,
)
from titok.data.images import Unreadable

pytestmark = pytest.mark.metrics  # the accumulator needs torch-fidelity (KID, the Fréchet distance)

POOL, SIDE, CHANNELS, CLASSES = 12, 2, 7, 10
SPATIAL = CHANNELS * SIDE * SIDE


class _Lookup(torch.nn.Module):
    """A stand-in for the Inception extractor: image i carries its row in pixel (0, 0) of channels 0 and 1; the
    row's pool features and logits are returned, and its spatial features pass through a module at sFID's layer
    name as an NCHW map (with two extra channels the tap must drop), so the real SpatialTap hook takes them."""

    def __init__(self, pool: np.ndarray, logits: np.ndarray, spatial: np.ndarray):
        super().__init__()
        from bench.metrics.inception import SPATIAL_LAYER

        self.register_buffer("pool_table", torch.from_numpy(pool))
        self.register_buffer("logit_table", torch.from_numpy(logits))
        self.register_buffer("spatial_table", torch.from_numpy(spatial))
        parent = self
        *path, leaf = SPATIAL_LAYER.split(".")
        for name in path:
            parent.add_module(name, torch.nn.Module())
            parent = parent.get_submodule(name)
        parent.add_module(leaf, torch.nn.Identity())
        self.layer = SPATIAL_LAYER
        self.batches: list[int] = []  # the size of each batch the network saw

    def forward(self, images: torch.Tensor):
        self.batches.append(len(images))
        rows = images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()
        nhwc = self.spatial_table[rows].reshape(-1, SIDE, SIDE, CHANNELS)
        extra = torch.full((len(rows), 2, SIDE, SIDE), 1e3)
        self.get_submodule(self.layer)(torch.cat([nhwc.permute(0, 3, 1, 2), extra], 1))
        return self.pool_table[rows], self.logit_table[rows]


def _images(rows) -> torch.Tensor:
    """uint8 (B, 3, 4, 4) images whose first pixel encodes their row in the tables."""
    rows = torch.as_tensor(list(rows))
    out = torch.zeros(len(rows), 3, 4, 4, dtype=torch.uint8)
    out[:, 0, 0, 0], out[:, 1, 0, 0] = rows % 256, rows // 256
    return out


def _features(n_fake: int, n_real: int, seed: int = 0) -> dict:
    """float32 tables, fake rows first: the fake pool features are a tight cluster inside the wide real cloud
    (precision near 1, recall small), the spatial ones shifted and scaled, the logits peaked (IS well above 1)."""
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.5, 2.0, POOL)
    real = rng.normal(size=(n_real, POOL)) * scale
    fake = 0.15 * rng.normal(size=(n_fake, POOL)) * scale + 0.1
    spatial = rng.normal(size=(n_fake + n_real, SPATIAL)) * np.linspace(0.5, 1.5, SPATIAL)
    spatial[n_fake:] = 1.3 * spatial[n_fake:] + 0.4
    logits = 4 * rng.normal(size=(n_fake + n_real, CLASSES))
    return {"pool": np.concatenate([fake, real]).astype(np.float32), "logits": logits.astype(np.float32),
            "spatial": spatial.astype(np.float32), "n_fake": n_fake}


@pytest.fixture
def lookup(monkeypatch):
    """Installs a lookup extractor for the given tables (and shrinks the feature sizes); returns its installer."""
    import bench.metrics.image_sets as image_sets
    import bench.metrics.statistics_file as statistics_file
    from bench.metrics.inception import ExtractorInfo

    for module in (image_sets, statistics_file):
        monkeypatch.setattr(module, "FEATURE_DIM", POOL)
        monkeypatch.setattr(module, "SPATIAL_DIM", SPATIAL)
    monkeypatch.setattr(image_sets, "LOGITS_DIM", CLASSES)

    def install(tables: dict, standin: bool = True):
        def load(weights, device):  # a network of its own for each accumulator, as each process has
            if weights != WEIGHTS or device is None:  # what the callers were asked to pass on
                raise AssertionError(f"Inception loaded with weights {weights!r} on device {device!r}")
            extractor = _Lookup(tables["pool"], tables["logits"], tables["spatial"]).eval()
            return extractor, ExtractorInfo("lookup", "", "ab" * 32, standin)

        monkeypatch.setattr(image_sets, "load_inception", load)
        return tables

    return install


WEIGHTS = "lookup-weights.pth"  # a name only: the lookup installed by the fixture stands in for the file


def _accumulator(metrics, num_fake, **kw):
    from bench.metrics.image_sets import InceptionMetrics

    return InceptionMetrics(metrics, num_fake=num_fake, inception_weights=WEIGHTS, **kw)


def _metrics(fake, real=None, **kw):
    from bench.metrics.image_sets import compute_image_metrics

    return compute_image_metrics(fake, real, inception_weights=WEIGHTS, **kw)


def _feed(acc, fake_rows, real_rows=(), batch: int = 32):
    fake_rows, real_rows = list(fake_rows), list(real_rows)
    for s in range(0, len(fake_rows), batch):
        acc.add_fake(_images(fake_rows[s:s + batch]))
    for s in range(0, len(real_rows), batch):
        acc.add_real(_images(real_rows[s:s + batch]))
    return acc


ALL = ("fid", "sfid", "isc", "kid", "prc")


def test_every_value_against_images_equals_its_written_definition(lookup):
    n = 150
    t = lookup(_features(n, n))
    fake, real = t["pool"][:n].astype(np.float64), t["pool"][n:].astype(np.float64)
    acc = _feed(_accumulator(ALL, n), range(n), range(n, 2 * n), batch=32)  # a last batch of 22
    got = acc.result()
    v = got.values
    assert sorted(v) == sorted(f"standin_{k}" for k in ("fid", "sfid", "isc_mean", "isc_std", "kid_mean", "kid_std",
                                                         "precision", "recall"))
    assert v["standin_fid"] == pytest.approx(fid_of_features(fake, real), rel=1e-7)
    assert v["standin_sfid"] == pytest.approx(fid_of_features(t["spatial"][:n], t["spatial"][n:]), rel=1e-7)
    isc_mean, isc_std = inception_score_by_definition(t["logits"][:n])
    assert (v["standin_isc_mean"], v["standin_isc_std"]) == pytest.approx((isc_mean, isc_std), rel=1e-9)
    # Equal sizes and a subset of the whole set: every subset is a permutation, so the mean is the whole set's
    # MMD^2 and the spread over subsets is nothing but float noise.
    assert v["standin_kid_mean"] == pytest.approx(kid_by_definition(fake, real), rel=1e-9)
    assert abs(v["standin_kid_std"]) < 1e-9 * abs(v["standin_kid_mean"])
    precision, recall = precision_recall_by_definition(fake, real)
    assert (v["standin_precision"], v["standin_recall"]) == (precision, recall)
    # Far from the trivial values, so a swap, a sign or a constant shows.
    assert precision > 0.9 and recall < 0.3
    assert v["standin_kid_mean"] > 0.5 and isc_mean > 2.5 and v["standin_fid"] > 5 and v["standin_sfid"] > 5
    p = got.protocol
    assert (p["num_fake"], p["num_real"], p["kid_subset_size"]) == (n, n, n)
    assert p["extractor"] == {"name": "lookup", "weights_sha256": "ab" * 32, "standin": True}
    assert p["metrics"] == sorted(ALL) and p["streaming"] is True and p["isc_splits"].startswith("torch-fidelity")
    assert p["conventions"]["kid"]["subset_size"] == n and p["conventions"]["prc"]["k"] == 3
    digest = hashlib.sha256(t["pool"][n:].tobytes()).hexdigest()[:16]  # the real set's float32 features in order
    assert p["reference"] == {"images_sha256": digest}
    assert got.spreads == {}


def test_kid_subset_is_the_smaller_set_and_names_have_no_prefix_for_real_weights(lookup):
    lookup(_features(64, 40), standin=False)  # more generated images than real ones
    got = _feed(_accumulator(("fid", "kid"), 64, kid_subset_size=50), range(64), range(64, 104), batch=16).result()
    assert sorted(got.values) == ["fid", "kid_mean", "kid_std"]
    assert got.protocol["kid_subset_size"] == 40 and got.protocol["num_real"] == 40
    assert got.values["kid_mean"] > 0.5 and got.values["kid_std"] > 0  # subsets of the larger set differ
    lookup(_features(40, 64), standin=False)  # and fewer
    fewer = _feed(_accumulator(("kid",), 40, kid_subset_size=50), range(40), range(40, 104), batch=16).result()
    assert fewer.protocol["kid_subset_size"] == 40
    assert "isc_splits" not in got.protocol and "sfid" not in got.values


def test_positions_given_out_of_order_give_the_in_order_values(lookup):
    n = 60
    t = lookup(_features(n, n))
    straight = _feed(_accumulator(ALL, n, bootstrap=3), range(n), range(n, 2 * n), batch=16).result()
    shuffled = _accumulator(ALL, n, bootstrap=3)
    batches = [range(s, min(s + 16, n)) for s in range(0, n, 16)]
    for rows in reversed(batches):
        shuffled.add_fake(_images(rows), indices=rows)
    for rows in batches:  # one process hashes the real set as it comes: in order (see the next test)
        shuffled.add_real(_images([r + n for r in rows]), indices=rows)
    got = shuffled.result()
    for key, want in straight.values.items():
        assert got.values[key] == pytest.approx(want, rel=1e-9, abs=1e-12), key
    assert got.protocol["reference"] == straight.protocol["reference"]
    for key in ("mean", "std"):
        assert got.spreads["standin_fid"][key] == pytest.approx(straight.spreads["standin_fid"][key], rel=1e-9)
    np.testing.assert_array_equal(shuffled.fake.store.array(), t["pool"][:n])


def test_real_images_out_of_order_in_one_process_are_refused_not_hashed_in_another_order(lookup):
    from bench.metrics.base import MetricError

    n = 40
    lookup(_features(n, n))
    acc = _accumulator(("fid",), n)
    acc.add_real(_images(range(n + 16, n + 32)), indices=range(16, 32))
    for rows, first, last in ((range(0, 16), 0, 15), ([33, 32, 34], 32, 34), ([35, 35], 35, 35)):
        with pytest.raises(MetricError, match="^" + re.escape(
                f"real images added out of position order in one process (positions {first}..{last} after 31): the "
                f"real set's digest is hashed as they come, so add them in increasing position order (gaps are "
                f"fine)") + "$"):
            acc.add_real(_images([r + n for r in rows]), indices=rows)
    assert acc.real.n == 16 and acc.real.following == 32
    acc.add_real(_images(range(n + 36, n + 40)), indices=range(36, 40))  # a gap (unreadable images) is fine
    _feed(acc, range(n))
    digest = hashlib.sha256(_features(n, n)["pool"][[*range(n + 16, n + 32), *range(n + 36, n + 40)]].tobytes())
    assert acc.result().protocol["reference"] == {"images_sha256": digest.hexdigest()[:16]}


def test_bootstrap_replicates_are_paired_poisson_resamples_and_their_std_is_the_spread(lookup):
    from bench.metrics.streaming import poisson1_weights

    n, replicates = 80, 5
    t = lookup(_features(n, n, seed=3))
    fake, real = t["pool"][:n].astype(np.float64), t["pool"][n:].astype(np.float64)
    got = _feed(_accumulator(("fid",), n, bootstrap=replicates), range(n), range(n, 2 * n), batch=24).result()
    weights = poisson1_weights(0, n, replicates)  # image i's counts, the same for its fake and its real copy
    fids = np.array([frechet_by_definition(*weighted_statistics(fake, w), *weighted_statistics(real, w))
                     for w in weights])
    spread = got.spreads["standin_fid"]
    assert spread["n"] == replicates and spread["method"] == "poisson-bootstrap over images"
    assert spread["mean"] == pytest.approx(fids.mean(), rel=1e-7)
    assert spread["std"] == pytest.approx(fids.std(ddof=1), rel=1e-6)
    assert spread["std"] > 0.01 * spread["mean"]


def test_a_set_against_itself_has_zero_fid_in_every_bootstrap_replicate(lookup):
    n = 50
    lookup(_features(n, 0))
    got = _feed(_accumulator(("fid",), n, bootstrap=4), range(n), range(n), batch=16).result()
    assert abs(got.values["standin_fid"]) < 1e-6
    assert got.spreads["standin_fid"]["mean"] < 1e-6 and got.spreads["standin_fid"]["std"] < 1e-6


def _write_reference(path, pool: np.ndarray, spatial: np.ndarray | None = None) -> dict:
    """A statistics file in the documented layout (mu, sigma, features; mu_s, sigma_s for sFID), written here."""
    x = pool.astype(np.float64)
    arrays = {"mu": x.mean(0), "sigma": np.cov(x, rowvar=False), "features": pool}
    if spatial is not None:
        s = spatial.astype(np.float64)
        arrays.update(mu_s=s.mean(0), sigma_s=np.cov(s, rowvar=False))
    np.savez(path, **arrays)
    return arrays


def test_every_value_against_a_statistics_file_equals_its_written_definition(lookup, tmp_path):
    n = 100
    t = lookup(_features(n, n, seed=5))
    ref = _write_reference(tmp_path / "ref.npz", t["pool"][n:], t["spatial"][n:])
    got = _feed(_accumulator(ALL, n, reference=tmp_path / "ref.npz", bootstrap=3), range(n), batch=32).result()
    v, fake = got.values, t["pool"][:n].astype(np.float64)
    assert v["standin_fid"] == pytest.approx(
        frechet_by_definition(fake.mean(0), np.cov(fake, rowvar=False), ref["mu"], ref["sigma"]), rel=1e-7)
    assert v["standin_sfid"] == pytest.approx(fid_of_features(t["spatial"][:n], t["spatial"][n:]), rel=1e-7)
    assert v["standin_kid_mean"] == pytest.approx(kid_by_definition(fake, t["pool"][n:]), rel=1e-9)
    assert (v["standin_precision"], v["standin_recall"]) == precision_recall_by_definition(fake, t["pool"][n:])
    sha = hashlib.sha256((tmp_path / "ref.npz").read_bytes()).hexdigest()
    assert got.protocol["reference"] == {"path": str(tmp_path / "ref.npz"), "sha256": sha}
    assert "num_real" not in got.protocol
    # Against a file the reference is fixed: each replicate resamples the generated set alone.
    from bench.metrics.streaming import poisson1_weights

    fids = [frechet_by_definition(*weighted_statistics(fake, w), ref["mu"], ref["sigma"])
            for w in poisson1_weights(0, n, 3)]
    assert got.spreads["standin_fid"]["mean"] == pytest.approx(np.mean(fids), rel=1e-7)


def test_a_statistics_file_without_spatial_statistics_leaves_sfid_out_and_says_why(lookup, tmp_path):
    n = 30
    t = lookup(_features(n, n))
    _write_reference(tmp_path / "ref.npz", t["pool"][n:])
    got = _feed(_accumulator(("fid", "sfid"), n, reference=tmp_path / "ref.npz"), range(n)).result()
    assert "standin_sfid" not in got.values and "standin_fid" in got.values
    assert got.protocol["sfid_skipped"] == f"{tmp_path / 'ref.npz'} holds no mu_s/sigma_s"


def test_a_checkpoint_part_way_continues_to_the_straight_run(lookup, tmp_path):
    n = 64
    t = lookup(_features(n, n))
    _write_reference(tmp_path / "ref.npz", t["pool"][n:], t["spatial"][n:])  # checkpoints score against a file
    settings = {"bootstrap": 2, "keep_fake_features": True, "reference": tmp_path / "ref.npz"}
    straight = _feed(_accumulator(ALL, n, **settings), range(n), batch=16)
    first = _accumulator(ALL, n, **settings)
    for s in range(0, 32, 16):
        first.add_fake(_images(range(s, s + 16)))
    np.savez(tmp_path / "state.npz", **first.state_dict())
    resumed = _accumulator(ALL, n, **settings)
    with np.load(tmp_path / "state.npz", allow_pickle=False) as z:
        resumed.load_state_dict(z)
    for s in range(32, n, 16):
        resumed.add_fake(_images(range(s, s + 16)))
    want, got = straight.result(), resumed.result()
    assert got.values == want.values and got.spreads == want.spreads
    np.testing.assert_array_equal(resumed.fake.store.array(), straight.fake.store.array())
    state = resumed.state_dict()
    assert int(state["fake.n"]) == n and int(state["isc.seen"]) == n and int(state["fake.following"]) == n


def test_a_checkpoint_made_otherwise_or_damaged_is_refused_and_changes_nothing(lookup):
    from bench.metrics.base import MetricError

    n = 32
    lookup(_features(n, n))
    first = _feed(_accumulator(("fid", "isc"), n, bootstrap=2), range(16))
    state = first.state_dict()
    other = _accumulator(("fid", "isc"), n, bootstrap=3)
    with pytest.raises(MetricError, match="bootstrap: state 2, here 3"):
        other.load_state_dict(state)
    target = _accumulator(("fid", "isc"), n, bootstrap=2)
    for key, damage, message in (("fake.gaussian.mean", np.zeros(POOL + 1), r"shape \(13,\), expected \(12,\)"),
                                 ("isc.seen", None, "lacks isc.seen"), ("settings", None, "no settings")):
        broken = dict(state)
        if damage is None:
            del broken[key]
        else:
            broken[key] = damage
        with pytest.raises(MetricError, match=message):
            target.load_state_dict(broken)
        assert target.fake.n == 0 and target.isc.seen == 0
    target.load_state_dict(state)
    assert target.fake.n == 16 and target.isc.seen == 16 and target.fake.following == 16


def test_results_that_cannot_be_computed_are_errors_not_numbers(lookup):
    from bench.metrics.base import MetricError

    n = 20
    t = lookup(_features(n, n))
    with pytest.raises(MetricError, match="no images"):
        _accumulator(("fid",), n).result()
    with pytest.raises(MetricError, match="FID needs real images"):
        _feed(_accumulator(("fid",), n), range(n)).result()
    with pytest.raises(MetricError, match="at least 10 images, got 9"):
        _feed(_accumulator(("isc",), n), range(9)).result()
    with pytest.raises(MetricError, match="KID and precision/recall need"):
        _feed(_accumulator(("prc",), n), range(n)).result()
    t["logits"][3] = np.nan  # a damaged network: an error at the batch, before any sum moves
    lookup(t)
    acc = _accumulator(("isc",), n)
    with pytest.raises(MetricError, match="non-finite"):
        acc.add_fake(_images(range(8)))
    assert acc.isc.seen == 0 and acc.fake.n == 0


class _Rows(torch.utils.data.Dataset):
    """A data set of lookup images read one at a time, as a folder is: rows in `unreadable` come back as such."""

    def __init__(self, rows, unreadable=()):
        self.rows, self.bad, self.skipped = list(rows), set(unreadable), []

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, i: int):
        if i in self.bad:
            return Unreadable(f"row{i}.png", "truncated")
        return _images([self.rows[i]])[0], 0

    __getitem__ = read


def test_compute_image_metrics_reads_tensors_and_data_sets_into_the_same_values(lookup):
    n = 70
    t = lookup(_features(n, n, seed=7))
    fake, real = t["pool"][:n].astype(np.float64), t["pool"][n:].astype(np.float64)
    from_tensors = _metrics(_images(range(n)), _images(range(n, 2 * n)), metrics=ALL, batch_size=32)
    from_sets = _metrics(_Rows(range(n)), _Rows(range(n, 2 * n)), metrics=ALL, batch_size=32, num_workers=0)
    assert from_sets.values == from_tensors.values and from_sets.protocol == from_tensors.protocol
    v = from_tensors.values
    assert v["standin_fid"] == pytest.approx(fid_of_features(fake, real), rel=1e-7)
    assert (v["standin_precision"], v["standin_recall"]) == precision_recall_by_definition(fake, real)
    assert from_tensors.protocol["batch_size"] == 32 and from_tensors.protocol["num_fake"] == n


def test_an_unreadable_image_leaves_its_place_empty(lookup):
    """Row 5 of the fake set cannot be read: the rest keep their positions, so the Inception Score's splits are those
    of the announced set with image 5 left out, not of a set shifted by one."""
    from bench.metrics.streaming import isc_split_of_index

    n = 40
    t = lookup(_features(n, n, seed=8))
    source = _Rows(range(n), unreadable={5})
    got = _metrics(source, _Rows(range(n, 2 * n)), metrics=("fid", "isc"), batch_size=16, num_workers=0)
    kept = [i for i in range(n) if i != 5]
    assert source.skipped == ["row5.png"] and got.protocol["num_fake"] == n - 1
    assert got.values["standin_fid"] == pytest.approx(fid_of_features(t["pool"][kept], t["pool"][n:]), rel=1e-7)
    split = isc_split_of_index(n)[kept]
    probs = torch.from_numpy(t["logits"][kept]).double().softmax(1)
    scores = []
    for s in range(10):
        p = probs[torch.from_numpy(split == s)]
        scores.append(float(torch.exp((p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean())))
    assert got.values["standin_isc_mean"] == pytest.approx(np.mean(scores), rel=1e-9)
    assert "40 announced, 39 read" in got.protocol["isc_splits"]


@pytest.fixture
def two_thread_ranks(monkeypatch):
    from tests.thread_world import ThreadWorld

    world = ThreadWorld(2)
    world.install(monkeypatch)
    return world


@pytest.mark.parametrize("as_set", [False, True], ids=["tensors", "data-set"])
def test_two_ranks_give_every_rank_the_one_process_values(lookup, two_thread_ranks, as_set):
    """Two ranks (threads standing in for processes) each read their global batches and reduce: every rank
    returns what one process computes, the real set's digest included (gathered, then hashed in position order)."""
    n = 75  # 3 global batches of 32: rank 0 reads two (one of them short), rank 1 one

    def sets():
        if as_set:
            return _Rows(range(n)), _Rows(range(n, 2 * n))
        return _images(range(n)), _images(range(n, 2 * n))

    t = lookup(_features(n, n, seed=9))
    kw = {"metrics": ALL, "batch_size": 32, "bootstrap": 3, "num_workers": 0}
    one = _metrics(*sets(), **kw)
    ranks = two_thread_ranks.run(lambda rank: _metrics(*sets(), **kw))
    for got in ranks:
        assert got.protocol == one.protocol
        for key, want in one.values.items():
            assert got.values[key] == pytest.approx(want, rel=1e-9, abs=1e-12), key
        assert got.spreads["standin_fid"]["std"] == pytest.approx(one.spreads["standin_fid"]["std"], rel=1e-9)
    assert one.values["standin_fid"] == pytest.approx(fid_of_features(t["pool"][:n], t["pool"][n:]), rel=1e-7)


def test_two_ranks_fake_statistics_are_the_whole_sets_after_reduce_and_refused_before(lookup, two_thread_ranks):
    from bench.metrics.base import MetricError
    from bench.metrics.distributed import rank_batches

    n = 50
    t = lookup(_features(n, 0, seed=10))
    fake = t["pool"][:n].astype(np.float64)

    def work(rank: int):
        acc = _accumulator(("fid", "sfid"), n, reference=None)
        for r in rank_batches(n, 16, rank, 2):
            acc.add_fake(_images(r), indices=r)
        with pytest.raises(MetricError, match=rf"^fake_statistics\(\) before reduce\(\): rank {rank} holds only"):
            acc.fake_statistics()
        with pytest.raises(MetricError, match=r"^fake_spatial_statistics\(\) before reduce\(\)"):
            acc.fake_spatial_statistics()
        with pytest.raises(MetricError, match="before reduce"):
            acc.result()
        acc.reduce()
        with pytest.raises(MetricError, match="after reduce"):
            acc.add_fake(_images([0]), indices=[0])
        return acc.fake_statistics(), acc.fake_spatial_statistics(), acc.fake.n

    one = _accumulator(("fid", "sfid"), n)  # one process: the statistics so far, no reduce() needed
    _feed(one, range(n))
    np.testing.assert_allclose(one.fake_statistics()[0], fake.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(one.fake_spatial_statistics()[0], t["spatial"][:n].mean(0), rtol=1e-6, atol=1e-6)
    for (mu, sigma), (mu_s, sigma_s), count in two_thread_ranks.run(work):
        assert count == n
        np.testing.assert_allclose(mu, fake.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sigma, np.cov(fake, rowvar=False), rtol=1e-10, atol=1e-12)
        spatial = t["spatial"][:n].astype(np.float64)
        np.testing.assert_allclose(mu_s, spatial.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sigma_s, np.cov(spatial, rowvar=False), rtol=1e-10, atol=1e-12)


def test_a_checkpoints_layout_is_the_documented_one(lookup, tmp_path):
    """The saved settings and keys are a file format: a checkpoint written by an earlier run must still load, so a
    renamed key is a break, caught here against the layout written out."""
    n = 24
    t = lookup(_features(n, n))
    ref = tmp_path / "ref.npz"
    _write_reference(ref, t["pool"][n:])
    acc = _feed(_accumulator(("fid", "isc", "kid"), n, reference=ref, bootstrap=2), range(12))
    state = acc.state_dict()
    settings = {"version": 1, "metrics": ["fid", "isc", "kid"], "num_fake": n, "bootstrap": 2,
                "dims": {"pool": POOL, "spatial": SPATIAL, "logits": CLASSES},
                "reference": hashlib.sha256(ref.read_bytes()).hexdigest(), "extractor": "ab" * 32,
                "keep_fake_features": False}
    assert state["settings"] == json.dumps(settings, sort_keys=True)
    fake = [f"fake.{k}" for k in ("n", "following", "gaussian.n", "gaussian.mean", "gaussian.m2", "bootstrap.weight",
                                  "bootstrap.mean", "bootstrap.m2", "bootstrap.seen", "store.indices",
                                  "store.features")]
    assert sorted(state) == sorted(["settings", "rank", "world_size", *fake, "real.n", "real.following", "isc.plogp",
                                    "isc.psum", "isc.count", "isc.seen"])
    assert (state["rank"], state["world_size"], state["fake.n"], state["fake.following"]) == (0, 1, 12, 12)
    assert state["fake.store.features"].dtype == np.float32 and state["isc.count"].dtype == np.int64


def test_a_loaded_checkpoint_is_a_copy_with_the_saved_types(lookup, tmp_path):
    """Loading copies: adding images afterwards leaves the caller's state as it was, and every array keeps its dtype
    (integer counts stay integers), so a state saved again equals one of a straight run, key by key."""
    n = 32
    t = lookup(_features(n, n))
    _write_reference(tmp_path / "ref.npz", t["pool"][n:])
    settings = {"reference": tmp_path / "ref.npz", "bootstrap": 2, "keep_fake_features": True}
    metrics = ("fid", "isc")
    straight = _feed(_accumulator(metrics, n, **settings), range(n), batch=8).state_dict()
    saved = _feed(_accumulator(metrics, n, **settings), range(16), batch=8).state_dict()
    before = {k: np.array(v, copy=True) for k, v in saved.items()}
    resumed = _accumulator(metrics, n, **settings)
    resumed.load_state_dict(saved)
    _feed(resumed, range(16, n), batch=8)  # positions follow the saved ones
    for key, value in before.items():
        np.testing.assert_array_equal(np.asarray(saved[key]), value, err_msg=f"the caller's {key} changed")
    untouched = _accumulator(metrics, n, **settings)
    untouched.load_state_dict(saved)
    for key, want in untouched.state_dict().items():  # saved again at once: the same state, types included
        assert np.asarray(want).dtype == np.asarray(before[key]).dtype, key
        np.testing.assert_array_equal(np.asarray(want), before[key], err_msg=key)
    again = resumed.state_dict()
    assert sorted(again) == sorted(straight)
    for key, want in straight.items():
        got = np.asarray(again[key])
        assert got.dtype == np.asarray(want).dtype, key
        np.testing.assert_array_equal(got, np.asarray(want), err_msg=key)


def test_checkpoint_refusals_name_what_is_wrong(lookup, tmp_path, two_thread_ranks):
    from bench.metrics.base import MetricError

    n = 24
    t = lookup(_features(n, n))
    _write_reference(tmp_path / "ref.npz", t["pool"][n:])
    keep = {"reference": tmp_path / "ref.npz", "keep_fake_features": True}
    state = _feed(_accumulator(("fid",), n, **keep), range(8)).state_dict()
    target = _accumulator(("fid",), n, **keep)
    first_eight = sorted(k for k in state if k != "settings")[:8]
    for change, message in (({"settings": "{not json"}, r"^an InceptionMetrics state whose settings are not JSON$"),
                            ({"settings": None}, "^" + re.escape(f"not an InceptionMetrics state (no settings; keys "
                                                                 f"{first_eight})") + "$"),
                            ({"fake.store.indices": None}, "lacks fake.store.indices"),
                            ({"fake.store.features": None}, "lacks fake.store.features"),
                            ({"fake.n": None}, "lacks fake.n"),
                            ({"fake.gaussian.m2": None}, r"^the saved metrics state lacks fake\.gaussian\.m2$")):
        broken = {k: v for k, v in {**state, **change}.items() if v is not None}
        with pytest.raises(MetricError, match=message):
            target.load_state_dict(broken)
    other = _accumulator(("fid",), n, reference=tmp_path / "ref.npz", bootstrap=2)  # two settings differ
    with pytest.raises(MetricError, match=r"^the saved metrics state was made under other settings: "
                                          r"bootstrap: state 0, here 2; keep_fake_features: state True, here False$"):
        other.load_state_dict(state)
    against_images = _feed(_accumulator(("fid",), n), range(8), range(n, n + 8))
    with pytest.raises(MetricError, match=r"^the real images' digest is a running sha256 that cannot be saved "
                                          r"part-way; checkpoint runs that score against a statistics file$"):
        against_images.state_dict()

    def work(rank: int):
        acc = _accumulator(("fid",), n, **keep)
        acc.add_fake(_images([rank, rank + 2]), indices=[rank, rank + 2])
        acc.reduce()
        with pytest.raises(MetricError, match=r"^state_dict\(\) after reduce\(\): the state would count"):
            acc.state_dict()
        with pytest.raises(MetricError, match=r"^load_state_dict\(\) after reduce\(\)"):
            acc.load_state_dict(state)
        return acc.fake.n

    assert two_thread_ranks.run(work) == [4, 4]


def test_extract_features_returns_every_row_in_order(lookup, capsys, monkeypatch):
    from bench.metrics.base import MetricError
    from bench.metrics.image_sets import extract_features

    n = 23
    t = lookup(_features(n, 0))
    extractor = _Lookup(t["pool"], t["logits"], t["spatial"])
    got = extract_features(_images(range(n)), extractor, batch_size=5, spatial=True)
    assert sorted(got) == ["logits_unbiased", "pool", "spatial"]
    for key, table in (("pool", "pool"), ("logits_unbiased", "logits"), ("spatial", "spatial")):
        assert got[key].dtype == np.float64
        np.testing.assert_array_equal(got[key], t[table][:n].astype(np.float64), err_msg=key)
    monkeypatch.setenv("TITOK_PROGRESS_INTERVAL", "0")  # a line per update where progress is on
    assert sorted(extract_features(_images(range(3)), extractor)) == ["logits_unbiased", "pool"]
    assert capsys.readouterr().err == ""  # quiet unless asked
    extractor.batches.clear()
    extract_features(_images([i % n for i in range(130)]), extractor)
    assert extractor.batches == [64, 64, 2]  # the default batch size
    with pytest.raises(MetricError, match="^no images to compute features from$"):
        extract_features(_Rows([]), extractor)
    extract_features(_images(range(3)), extractor, progress=True)
    assert re.search(r"^inception: 3/3 img", capsys.readouterr().err, re.M)
    assert not extractor._forward_hooks and not extractor.get_submodule(extractor.layer)._forward_hooks


def test_compute_image_metrics_against_a_statistics_file_and_without_real_images(lookup, tmp_path, capsys,
                                                                                  monkeypatch):
    monkeypatch.setenv("TITOK_PROGRESS_INTERVAL", "0")  # a line per update, so short blocks show too
    n = 40
    t = lookup(_features(n, n, seed=11))
    ref = _write_reference(tmp_path / "ref.npz", t["pool"][n:], t["spatial"][n:])
    fake = t["pool"][:n].astype(np.float64)
    got = _metrics(_images(range(n)), tmp_path / "ref.npz", metrics=("fid", "sfid", "kid"), kid_subset_size=30,
                   batch_size=16)
    assert got.values["standin_fid"] == pytest.approx(
        frechet_by_definition(fake.mean(0), np.cov(fake, rowvar=False), ref["mu"], ref["sigma"]), rel=1e-7)
    assert got.protocol["reference"]["path"] == str(tmp_path / "ref.npz") and "num_real" not in got.protocol
    assert got.protocol["kid_subset_size"] == 30 and got.values["standin_kid_mean"] > 0.5
    alone = _metrics(_images(range(n)), None, metrics=("isc",), batch_size=16)  # the Inception Score needs no real set
    assert alone.values["standin_isc_mean"] == pytest.approx(inception_score_by_definition(t["logits"][:n])[0],
                                                             rel=1e-9)
    assert capsys.readouterr().err == ""  # no progress unless asked for
    _metrics(_images(range(n)), _images(range(n, 2 * n)), metrics=("fid",), batch_size=16, progress=True)
    err = capsys.readouterr().err
    assert re.search(r"^inception \(fake\): ", err, re.M) and re.search(r"^inception \(real\): ", err, re.M), err


def test_a_rank_whose_features_fail_is_named_on_every_rank(lookup, two_thread_ranks):
    from bench.metrics.distributed import RankFailure

    n = 64
    t = _features(n, n)
    t["logits"][40] = np.nan  # in global batch 2 of 16: rank 0's
    lookup(t)

    def work(rank: int):
        with pytest.raises(RankFailure) as raised:
            _metrics(_images(range(n)), _images(range(n, 2 * n)), metrics=("fid",), batch_size=16)
        return str(raised.value)

    messages = two_thread_ranks.run(work)
    assert messages[0] == messages[1]
    assert re.match(r"^Inception features failed on 1 of 2 ranks: rank 0: MetricError: non-finite Inception logits",
                    messages[0]), messages[0]


def test_reduce_refuses_another_group_and_a_second_call(lookup, two_thread_ranks):
    from bench.metrics.base import MetricError

    n = 32
    lookup(_features(n, n))
    made_alone = _accumulator(("fid",), n)

    def work(rank: int):
        if rank == 0:
            with pytest.raises(MetricError, match=r"^made in a group of 1 processes, reduced in one of 2$"):
                made_alone.reduce()
        acc = _accumulator(("fid",), n)
        acc.add_fake(_images([rank]), indices=[rank])
        acc.reduce()
        with pytest.raises(MetricError, match=r"^reduce\(\) after reduce\(\): the ranks' sums were already combined$"):
            acc.reduce()
        return acc.fake.n

    assert two_thread_ranks.run(work) == [2, 2]


def test_bootstrap_fids_that_are_not_finite_are_an_error(lookup, monkeypatch):
    import bench.metrics.image_sets as image_sets
    from bench.metrics.base import MetricError

    n = 20
    lookup(_features(n, n))
    monkeypatch.setattr(image_sets, "frechet_distance", lambda *a: float("nan"))
    acc = _feed(_accumulator(("fid",), n, bootstrap=2), range(n), range(n, 2 * n))
    with pytest.raises(MetricError, match=r"^bootstrap FIDs are not finite: \[nan, nan\]$"):
        acc.result()


def test_a_checkpoint_keeps_kept_features_at_their_positions_and_restarts_the_real_digest(lookup, tmp_path):
    """Saved after images at positions 8..15 only, loaded, then 0..7: the kept features are in position order, as
    a straight run's. Saved before any real image (FID against images), the real set's digest starts afresh."""
    n = 16
    lookup(_features(n, n))
    first = _accumulator(("fid", "kid"), n)
    first.add_fake(_images(range(8, 16)), indices=range(8, 16))
    resumed = _accumulator(("fid", "kid"), n)
    resumed.load_state_dict(first.state_dict())
    resumed.add_fake(_images(range(8)), indices=range(8))
    _feed(resumed, (), range(n, 2 * n), batch=8)
    straight = _feed(_accumulator(("fid", "kid"), n), range(n), range(n, 2 * n), batch=8)
    np.testing.assert_array_equal(resumed.fake.store.array(), straight.fake.store.array())
    for key, want in straight.result().values.items():  # the same sums, added in another order
        assert resumed.result().values[key] == pytest.approx(want, rel=1e-12), key
    assert resumed.result().protocol["reference"] == straight.result().protocol["reference"]


def test_a_checkpoints_kept_features_must_match_their_positions(lookup, tmp_path):
    from bench.metrics.base import MetricError

    n = 16
    t = lookup(_features(n, n))
    _write_reference(tmp_path / "ref.npz", t["pool"][n:])
    acc = _feed(_accumulator(("fid", "kid"), n, reference=tmp_path / "ref.npz"), range(3))
    state = acc.state_dict()
    for rows, columns in ((2, POOL), (3, POOL + 1)):
        broken = {**state, "fake.store.features": np.zeros((rows, columns), np.float32)}
        with pytest.raises(MetricError, match="^" + re.escape(f"the saved metrics state's fake.store holds "
                                                              f"{(rows, columns)} features for 3 positions") + "$"):
            _accumulator(("fid", "kid"), n, reference=tmp_path / "ref.npz").load_state_dict(broken)


def test_two_images_are_enough_for_the_statistics_and_one_is_not(lookup, tmp_path):
    from bench.metrics.base import MetricError

    n = 8
    t = lookup(_features(n, n))
    _write_reference(tmp_path / "ref.npz", t["pool"][n:], t["spatial"][n:])
    two = _feed(_accumulator(("fid", "sfid"), n, reference=tmp_path / "ref.npz"), range(2)).result()
    assert two.values["standin_fid"] > 0 and two.values["standin_sfid"] > 0
    one = _feed(_accumulator(("sfid",), n, reference=tmp_path / "ref.npz"), range(1))
    with pytest.raises(MetricError, match=r"^sFID statistics need at least 2 samples, got 1$"):
        one.result()
    one = _feed(_accumulator(("fid",), n, reference=tmp_path / "ref.npz"), range(1))
    with pytest.raises(MetricError, match=r"^FID statistics need at least 2 samples, got 1$"):
        one.result()
    with pytest.raises(MetricError, match=r"^sFID needs real images or reference statistics$"):
        _feed(_accumulator(("sfid",), n), range(4)).result()


def test_adding_after_reduce_is_refused_by_name(lookup, two_thread_ranks):
    from bench.metrics.base import MetricError

    n = 8
    lookup(_features(n, n))

    def work(rank: int):
        acc = _accumulator(("fid",), n)
        acc.add_real(_images([n + rank]), indices=[rank])
        acc.reduce()
        with pytest.raises(MetricError, match=r"^add_real after reduce\(\): the ranks' sums were already combined$"):
            acc.add_real(_images([n]), indices=[5])
        with pytest.raises(MetricError, match=r"^add_fake after reduce\(\)"):
            acc.add_fake(_images([0]), indices=[5])
        return acc.real.n

    assert two_thread_ranks.run(work) == [2, 2]


@pytest.mark.gpu
def test_images_reach_the_network_on_the_accumulators_device(lookup):
    """On a GPU the images are moved to the network's device before it runs (on CPU a lost device argument cannot
    show: every tensor is already there)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    n = 12
    t = lookup(_features(n, n))
    seen = []
    forward = _Lookup.forward

    def recording(self, images):
        seen.append(images.device.type)
        return forward(self, images.cpu())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_Lookup, "forward", recording)
        got = _metrics(_images(range(n)), _images(range(n, 2 * n)), metrics=("fid",), device="cuda", batch_size=4)
        _feed(_accumulator(("fid",), n, device="cuda"), range(4), range(n, n + 4))
        from bench.metrics.image_sets import extract_features

        extract_features(_images(range(4)), _Lookup(t["pool"], t["logits"], t["spatial"]), device="cuda")
    assert seen and set(seen) == {"cuda"}
    assert got.values["standin_fid"] == pytest.approx(fid_of_features(t["pool"][:n], t["pool"][n:]), rel=1e-7)


def test_construction_checks_and_defaults(lookup, tmp_path):
    from bench.metrics.base import MetricError
    from bench.metrics.image_sets import InceptionMetrics

    n = 1001  # one more than KID's default subset
    t = lookup(_features(n, n))
    with pytest.raises(MetricError, match=r"^unknown metrics \['fud'\]; known: fid, sfid, isc, kid, prc$"):
        _accumulator(("fid", "fud"), 10)
    with pytest.raises(ValueError, match=r"^the Inception Score needs num_fake \(the size of the set\) up front$"):
        InceptionMetrics(("isc",), inception_weights=WEIGHTS)
    assert InceptionMetrics(("fid",), inception_weights=WEIGHTS).isc is None  # no set size needed without IS
    _write_reference(tmp_path / "pool-only.npz", t["pool"][n:n + 20])
    np.savez(tmp_path / "no-features.npz", **{k: v for k, v in np.load(tmp_path / "pool-only.npz").items()
                                              if k != "features"})
    assert _accumulator(("fid",), 10, reference=tmp_path / "no-features.npz").reference_features is None
    for metric in ("kid", "prc"):
        with pytest.raises(MetricError, match="^" + re.escape(
                f"KID and precision/recall need real images or a statistics file with their features (`titok-bench "
                f"stats --features`); {tmp_path / 'no-features.npz'} has none") + "$"):
            _accumulator(("fid", metric), 10, reference=tmp_path / "no-features.npz")
    got = _feed(InceptionMetrics(("kid",), inception_weights=WEIGHTS, num_fake=n), range(n), range(n, 2 * n),
                batch=256).result()
    assert got.protocol["kid_subset_size"] == 1000 and got.protocol["batch_size"] == 64
    assert got.protocol["resize"] == "pil-bicubic-shorter-side+center-crop"  # the default preparation's name
    by_default = _metrics(_images(range(n)), _images(range(n, 2 * n)), metrics=("kid",))
    assert by_default.protocol["kid_subset_size"] == 1000 and by_default.protocol["batch_size"] == 64
    prepared = _feed(_accumulator(("fid",), 20, preparation="center-crop"), range(20), range(n, n + 20)).result()
    assert prepared.protocol["resize"] == "center-crop"


def test_the_inception_score_takes_ten_images_and_refuses_nine(lookup):
    from bench.metrics.base import MetricError

    lookup(_features(10, 0))
    # Ten splits of one image each: every split's score is exp(KL(p || p)) = 1.
    assert _feed(_accumulator(("isc",), 10), range(10)).result().values["standin_isc_mean"] == pytest.approx(1.0)
    with pytest.raises(MetricError, match=r"^the Inception Score uses 10 splits and needs at least 10 images, got 9$"):
        _feed(_accumulator(("isc",), 10), range(9)).result()


def test_result_refusals_name_what_is_missing(lookup, monkeypatch, two_thread_ranks):
    import bench.metrics.image_sets as image_sets
    from bench.metrics.base import MetricError

    n = 20
    lookup(_features(n, n))
    with pytest.raises(MetricError, match=r"^no images to compute features from$"):
        _accumulator(("fid",), n).result()
    with pytest.raises(MetricError, match=r"^FID needs real images or reference statistics$"):
        _feed(_accumulator(("fid",), n), range(n)).result()
    with pytest.raises(MetricError, match=r"^KID and precision/recall need real images or reference features$"):
        _feed(_accumulator(("kid",), n), range(n)).result()

    def work(rank: int):
        acc = _accumulator(("fid",), n)
        acc.add_fake(_images([rank, rank + 2]), indices=[rank, rank + 2])
        acc.add_real(_images([n + rank, n + rank + 2]), indices=[rank, rank + 2])
        acc.reduce()
        if rank == 1:
            with pytest.raises(MetricError, match=r"^the whole set's metrics are on rank 0 after reduce\(\); this is "
                                                  r"rank 1 \(compute_image_metrics hands them to every rank\)$"):
                acc.result()
        return rank

    two_thread_ranks.run(work)
    monkeypatch.setattr(image_sets, "frechet_distance", lambda *a: float("inf"))
    with pytest.raises(MetricError, match=r"^metric values are not finite: \{'fid': inf\}$"):
        _feed(_accumulator(("fid",), n), range(n), range(n, 2 * n)).result()


def test_fid_over_fewer_images_than_feature_dimensions_warns_once_per_count(lookup, monkeypatch, caplog):
    import bench.metrics.image_sets as image_sets

    monkeypatch.setattr(image_sets, "_said", set())
    n = 10  # below the (shrunk) 12 feature dimensions
    lookup(_features(n, n))
    with caplog.at_level("WARNING", logger=image_sets.log.name):
        for _ in range(2):
            _feed(_accumulator(("fid",), n), range(n), range(n, 2 * n - 1)).result()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said  # the generated set's and the reference set's, once each
    assert said[0].startswith("FID statistics over 10 images: fewer than 12, the Inception feature dimension")
    assert said[1].startswith("FID statistics over 9 reference images: fewer than 12")


def test_a_local_accumulator_counts_its_own_images_on_any_rank_without_a_collective(lookup, two_thread_ranks):
    """Training's held-out rFID: each rank scores its own images with `local=True`; reduce() is no collective (rank 1
    never calls it here, and nothing waits), and result() works on every rank, over that rank's images only."""
    n = 24
    t = lookup(_features(n, n))

    def work(rank: int):
        acc = _accumulator(("fid",), n, local=True)
        rows = range(rank * 12, rank * 12 + 12)
        _feed(acc, rows, [r + n for r in rows], batch=5)
        if rank == 0:
            acc.reduce()
        return acc.result().values["standin_fid"], (acc.dist.rank, acc.dist.world_size, acc.dist.device.type)

    for rank, (fid, dist) in enumerate(two_thread_ranks.run(work)):
        rows = list(range(rank * 12, rank * 12 + 12))
        assert fid == pytest.approx(fid_of_features(t["pool"][rows], t["pool"][[r + n for r in rows]]), rel=1e-7)
        assert dist == (0, 1, "cpu")


def test_bootstrap_settings_are_checked_and_only_pairwise_metrics_keep_features(lookup):
    from bench.metrics.base import MetricError

    n = 12
    lookup(_features(n, n))
    for bootstrap, metrics in ((1, ("fid",)), (3, ("isc", "kid"))):
        with pytest.raises(MetricError, match="^" + re.escape(
                f"an FID bootstrap needs FID among the metrics and at least 2 replicates, got {bootstrap} replicates "
                f"for {sorted(metrics)}") + "$"):
            _accumulator(metrics, n, bootstrap=bootstrap)
    streamed = _accumulator(("fid", "sfid", "isc"), n)  # memory that does not grow with the set
    assert streamed.fake.store is None and streamed.real.store is None
    assert json.loads(_accumulator(("isc",), n).state_dict()["settings"])["bootstrap"] == 0
    for metric in ("kid", "prc"):
        assert _accumulator((metric,), n).fake.store is not None


def test_a_statistics_file_without_spatial_statistics_says_so_when_sfid_is_asked_for(lookup, tmp_path, caplog):
    import bench.metrics.image_sets as image_sets

    n = 12
    t = lookup(_features(n, n))
    _write_reference(tmp_path / "full.npz", t["pool"][n:], t["spatial"][n:])
    _write_reference(tmp_path / "pool.npz", t["pool"][n:])
    with caplog.at_level("WARNING", logger=image_sets.log.name):
        _accumulator(("fid", "sfid"), n, reference=tmp_path / "full.npz")
        assert caplog.records == []
        _accumulator(("fid", "sfid"), n, reference=tmp_path / "pool.npz")
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'pool.npz'} holds no sFID statistics (mu_s, sigma_s): sFID is left out; remake the file with "
        f"`titok-bench stats` to get them"]


def test_positions_that_do_not_fit_are_refused_by_name(lookup):
    from bench.metrics.base import MetricError

    n = 8
    lookup(_features(n, n))
    acc = _accumulator(("fid", "isc"), n)
    with pytest.raises(MetricError, match=r"^more images than the 8 announced \(position 8\)$"):
        acc.add_fake(_images([6, 7]), indices=[7, 8])
    with pytest.raises(MetricError, match=r"^indices must be 2 non-negative integer positions, one per image of the "
                                          r"batch, got int64 of shape \(3,\)$"):
        acc.add_fake(_images([6, 7]), indices=np.array([1, 2, 3]))
    assert acc.fake.n == 0 and acc.isc.seen == 0


def test_frechet_distance_computes_in_float64_and_prints_nothing(capsys):
    """Statistics handed over in float32 (a statistics file written so) are computed with in float64, as the
    definition is; torch-fidelity's own report line stays off."""
    from bench.metrics.image_sets import frechet_distance

    rng = np.random.default_rng(12)
    a, b = rng.normal(size=(200, 16)), 1.5 * rng.normal(size=(200, 16)) + 0.3
    stats = [(x.mean(0).astype(np.float32), np.cov(x, rowvar=False).astype(np.float32)) for x in (a, b)]
    want = frechet_by_definition(*(np.float64(v) for v in (*stats[0], *stats[1])))
    assert frechet_distance(*stats[0], *stats[1]) == pytest.approx(want, rel=1e-10)
    assert capsys.readouterr().err == "" and capsys.readouterr().out == ""


def test_a_result_that_fails_on_rank_zero_is_raised_on_every_rank(lookup, two_thread_ranks):
    from bench.metrics.distributed import RankInputError

    n = 16
    lookup(_features(n, n))

    def work(rank: int):
        with pytest.raises(RankInputError) as raised:  # FID with neither real images nor a statistics file
            _metrics(_images(range(n)), None, metrics=("fid",), batch_size=4)
        return str(raised.value)

    assert two_thread_ranks.run(work) == ["metrics failed on 1 of 2 ranks: rank 0: MetricError: FID needs real images "
                                          "or reference statistics"] * 2


def test_only_what_was_asked_for_is_accumulated(lookup):
    """No Inception Score sums without IS, and no running digest of the real set without FID against it: KID alone
    against real images checkpoints (its real features are kept, not hashed)."""
    n = 12
    lookup(_features(n, n))
    fid_only = _accumulator(("fid",), n)
    assert fid_only.isc is None
    _feed(fid_only, range(4))
    kid_only = _feed(_accumulator(("kid",), n), range(4), range(n, n + 4))
    assert kid_only.real.hash is None
    state = kid_only.state_dict()
    assert int(state["real.n"]) == 4 and state["real.store.features"].shape == (4, POOL)
    assert not [k for k in state if k.startswith("isc.")]
