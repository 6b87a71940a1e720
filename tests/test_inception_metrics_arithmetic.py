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

import numpy as np
import pytest
import torch

from tests.reference_scores import (
    fid_of_features,
    frechet_by_definition,
    inception_score_by_definition,
    kid_by_definition,
    precision_recall_by_definition,
)

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

    def forward(self, images: torch.Tensor):
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
        extractor = _Lookup(tables["pool"], tables["logits"], tables["spatial"]).eval()
        info = ExtractorInfo("lookup", "", "ab" * 32, standin)
        monkeypatch.setattr(image_sets, "load_inception", lambda weights, device="cpu": (extractor, info))
        return tables

    return install


def _accumulator(metrics, num_fake, **kw):
    from bench.metrics.image_sets import InceptionMetrics

    return InceptionMetrics(metrics, num_fake=num_fake, **kw)


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
    lookup(_features(40, 64), standin=False)
    got = _feed(_accumulator(("fid", "kid"), 40, kid_subset_size=50), range(40), range(40, 104), batch=16).result()
    assert sorted(got.values) == ["fid", "kid_mean", "kid_std"]
    assert got.protocol["kid_subset_size"] == 40 and got.protocol["num_real"] == 64
    assert got.values["kid_mean"] > 0.5 and got.values["kid_std"] > 0  # subsets of the larger set differ
    assert "isc_splits" not in got.protocol and "sfid" not in got.values


def test_positions_given_out_of_order_give_the_in_order_values(lookup):
    n = 60
    lookup(_features(n, n))
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
    np.testing.assert_array_equal(shuffled.fake.store.array(), straight_store(n))


def straight_store(n: int) -> np.ndarray:
    return _features(n, n)["pool"][:n]


def test_real_images_out_of_order_in_one_process_are_refused_not_hashed_in_another_order(lookup):
    from bench.metrics.base import MetricError

    n = 40
    lookup(_features(n, n))
    acc = _accumulator(("fid",), n)
    acc.add_real(_images(range(n + 16, n + 32)), indices=range(16, 32))
    for rows, message in ((range(0, 16), "out of position order"), ([33, 32, 34], "out of position order")):
        with pytest.raises(MetricError, match=message):
            acc.add_real(_images([r + n for r in rows]), indices=rows)
    assert acc.real.n == 16 and acc.real.following == 32
    acc.add_real(_images(range(n + 36, n + 40)), indices=range(36, 40))  # a gap (unreadable images) is fine
    _feed(acc, range(n))
    digest = hashlib.sha256(_features(n, n)["pool"][[*range(n + 16, n + 32), *range(n + 36, n + 40)]].tobytes())
    assert acc.result().protocol["reference"] == {"images_sha256": digest.hexdigest()[:16]}


def _weighted_stats(x: np.ndarray, w: np.ndarray):
    return (w @ x) / w.sum(), np.cov(x, rowvar=False, fweights=w.astype(np.int64))


def test_bootstrap_replicates_are_paired_poisson_resamples_and_their_std_is_the_spread(lookup):
    from bench.metrics.streaming import poisson1_weights

    n, replicates = 80, 5
    t = lookup(_features(n, n, seed=3))
    fake, real = t["pool"][:n].astype(np.float64), t["pool"][n:].astype(np.float64)
    got = _feed(_accumulator(("fid",), n, bootstrap=replicates), range(n), range(n, 2 * n), batch=24).result()
    weights = poisson1_weights(0, n, replicates)  # image i's counts, the same for its fake and its real copy
    fids = np.array([frechet_by_definition(*_weighted_stats(fake, w), *_weighted_stats(real, w)) for w in weights])
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

    fids = [frechet_by_definition(*_weighted_stats(fake, w), ref["mu"], ref["sigma"])
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
