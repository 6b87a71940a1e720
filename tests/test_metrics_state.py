"""InceptionMetrics checkpoints: a state saved part-way (through np.savez, no pickle) and loaded into a new
accumulator continues to exactly the sums of a straight run; a state made under other settings is refused with the
difference named; positions given out of order land where their images belong."""

from __future__ import annotations

import numpy as np
import pytest

from titok.data.images import builtin_images

pytestmark = [pytest.mark.metrics]
N, B = 12, 4


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from bench.metrics.statistics_file import write_statistics

    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 0.3, size=(40, 2048))
    path = tmp_path_factory.mktemp("ref") / "ref.npz"
    write_statistics(path, x.mean(0), np.cov(x, rowvar=False), {"source": "test"})
    return path


def _make(weights, reference, **kw):
    from bench.metrics.image_sets import InceptionMetrics

    settings = {"metrics": ("fid", "sfid", "isc"), "num_fake": N, "bootstrap": 2, "keep_fake_features": True,
                "batch_size": B, **kw}
    return InceptionMetrics(settings.pop("metrics"), inception_weights=weights, reference=reference, **settings)


def _arrays(state: dict) -> dict:
    return {k: np.asarray(v) for k, v in state.items() if k not in ("settings",)}


def test_a_state_saved_part_way_continues_to_the_straight_run(standin_inception, reference, tmp_path):
    images = builtin_images("procedural", 32, N, seed=2)
    straight = _make(standin_inception, reference)
    for s in range(0, N, B):
        straight.add_fake(images[s:s + B])
    first = _make(standin_inception, reference)
    first.add_fake(images[:B])
    np.savez(tmp_path / "state.npz", **first.state_dict())
    resumed = _make(standin_inception, reference)
    with np.load(tmp_path / "state.npz", allow_pickle=False) as z:
        resumed.load_state_dict(z)
    for s in range(B, N, B):
        resumed.add_fake(images[s:s + B])  # positions continue after the saved ones
    want, got = _arrays(straight.state_dict()), _arrays(resumed.state_dict())
    assert sorted(got) == sorted(want) and int(got["fake.n"]) == N and int(got["isc.seen"]) == N
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)  # bitwise: the same sums in the same order
    assert got["fake.store.indices"].tolist() == list(range(N))


def test_positions_out_of_order_give_the_in_order_sums(standin_inception, reference):
    images = builtin_images("procedural", 32, N, seed=2)
    in_order, shuffled = _make(standin_inception, reference), _make(standin_inception, reference)
    for s in range(0, N, B):
        in_order.add_fake(images[s:s + B])
    for s in reversed(range(0, N, B)):
        shuffled.add_fake(images[s:s + B], range(s, s + B))
    a, b = _arrays(in_order.state_dict()), _arrays(shuffled.state_dict())
    np.testing.assert_array_equal(b["isc.count"], a["isc.count"])
    np.testing.assert_allclose(b["isc.plogp"], a["isc.plogp"], rtol=1e-13)  # per split: the same images
    np.testing.assert_allclose(b["isc.psum"], a["isc.psum"], rtol=1e-13, atol=1e-300)
    np.testing.assert_array_equal(b["fake.bootstrap.weight"], a["fake.bootstrap.weight"])
    np.testing.assert_allclose(b["fake.bootstrap.mean"], a["fake.bootstrap.mean"], rtol=1e-12)
    np.testing.assert_array_equal(b["fake.store.features"], a["fake.store.features"])  # position order


def test_a_state_of_other_settings_is_refused_naming_the_difference(standin_inception, reference):
    from bench.metrics.base import MetricError
    from titok.errors import InputError

    state = _make(standin_inception, reference).state_dict()
    for kw, says in (({"num_fake": N + 2}, "num_fake: state 12, here 14"), ({"bootstrap": 3}, "bootstrap: state 2"),
                     ({"metrics": ("fid", "isc")}, "metrics: state ['fid', 'isc', 'sfid']"),
                     ({"reference": None}, "reference: state '")):
        other = _make(standin_inception, **{"reference": reference, **kw})
        with pytest.raises(MetricError, match=says.replace("[", r"\[").replace("]", r"\]")) as caught:
            other.load_state_dict(state)
        assert isinstance(caught.value, InputError)
    broken = {k: v for k, v in state.items() if k != "fake.gaussian.m2"}
    target = _make(standin_inception, reference)
    with pytest.raises(MetricError, match="lacks fake.gaussian.m2"):
        target.load_state_dict(broken)
    assert target.fake.n == 0 and target.isc.seen == 0  # all or nothing


def test_the_real_images_running_digest_cannot_be_saved_part_way(standin_inception):
    from bench.metrics.base import MetricError
    from bench.metrics.image_sets import InceptionMetrics

    m = InceptionMetrics(("fid",), inception_weights=standin_inception)
    m.state_dict()  # nothing hashed yet: fine
    m.add_real(builtin_images("procedural", 32, 2, seed=3))
    with pytest.raises(MetricError, match="running sha256"):
        m.state_dict()


def test_positions_must_be_one_per_image(standin_inception, reference):
    from bench.metrics.base import MetricError

    m = _make(standin_inception, reference)
    images = builtin_images("procedural", 32, 2, seed=3)
    with pytest.raises(MetricError, match="2 non-negative integer positions"):
        m.add_fake(images, [0])
    with pytest.raises(MetricError, match="announced"):
        m.add_fake(images, [11, 12])
    assert m.fake.n == 0 and m.isc.seen == 0
