"""Precision/recall, KID, IS and sFID pinned to references that share no code with bench.metrics.image_sets.

- Precision/recall against a k-NN computation written here (torch.cdist on a full matrix), on sets where the two
  differ widely, and against torch-fidelity's `prc` on images through the same (stand-in) Inception weights.
- KID and IS against torch-fidelity on two pairs of image sets of different sizes and resolutions, each far from
  its trivial value (KID 0, IS 1) so that agreement means something.
- sFID: the layer (ADM's `mixed_6/conv`, first 7 channels, 17x17) taken here by a hook on torch-fidelity's own
  module, and the value against a Frechet distance written here with scipy.linalg.sqrtm.

Tests marked `metrics` need torch-fidelity (tox -e metrics); the k-NN ones run on the core stack.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.metrics.image_sets import precision_recall
from tests.conftest import write_pngs
from titok.data.images import ImageFolder, builtin_images


# ------------------------------------------------------------------ precision/recall against k-NN written here
def _knn_precision_recall(fake: torch.Tensor, real: torch.Tensor, k: int) -> tuple[float, float]:
    """Improved precision/recall from full distance matrices (float64): a ball per point with the radius of its
    k-th nearest neighbour in its own set (the point itself, at distance 0, is the first of the sorted row)."""
    fake, real = fake.double(), real.double()
    radius_real = torch.cdist(real, real).sort(dim=1).values[:, k]
    radius_fake = torch.cdist(fake, fake).sort(dim=1).values[:, k]
    fake_to_real = torch.cdist(fake, real)  # (F, R)
    precision = (fake_to_real <= radius_real[None, :]).any(dim=1).double().mean()  # fake inside a real ball
    recall = (fake_to_real.T <= radius_fake[None, :]).any(dim=1).double().mean()  # real inside a fake ball
    return float(precision), float(recall)


def _narrow_fake(seed: int = 0):
    """Real: 600 points of a 16-d Gaussian. Fake: 200 points near the real points of one small corner (first
    coordinate > 1.2), jittered so no point repeats: nearly all fake points look real (precision ~ 1), and they
    cover a small part of the real set (recall small)."""
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(600, 16, generator=g)
    corner = real[real[:, 0] > 1.2]
    fake = corner[torch.randint(len(corner), (200,), generator=g)] + 0.05 * torch.randn(200, 16, generator=g)
    return fake.float(), real.float()


def test_precision_recall_equal_a_knn_computation_written_here():
    fake, real = _narrow_fake()
    want = _knn_precision_recall(fake, real, k=3)
    assert want[0] > 0.9 and want[1] < 0.3  # informative: a swap of precision and recall cannot pass
    assert _knn_precision_recall(fake, real, k=4) != want  # and neither can another k
    got = precision_recall(fake, real)
    assert got[0] * len(fake) == pytest.approx(want[0] * len(fake), abs=1e-6)  # the same count of points
    assert got[1] * len(real) == pytest.approx(want[1] * len(real), abs=1e-6)


def test_precision_recall_is_the_same_in_small_blocks_of_rows():
    """Bounded memory: rows are compared in blocks of `block_bytes`; blocks of one row give the same counts."""
    fake, real = _narrow_fake(seed=1)
    whole = precision_recall(fake, real)
    assert precision_recall(fake, real, block_bytes=1) == whole  # one row of distances at a time
    assert precision_recall(fake, real, block_bytes=7 * 600 * 4) == whole  # uneven blocks of 7 rows


def test_precision_recall_hand_made_case_counts_the_ball_boundary_and_k():
    """1-d points where every distance is exact: real 0..4, so with k=3 real point 0's ball reaches 3 and point 2's
    ball reaches 2 away (0 and 4). Fake: 7 (outside every real ball: 4's radius is 3), 6.5, -3 (on 0's boundary)."""
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    fake = torch.tensor([[7.0], [6.5], [-3.0], [10.0]])
    # Real radii (k=3): 3, 2, 2, 2, 3 -> covered [-3, 7]: fake 7 and -3 on a boundary count, 10 does not; 6.5 does.
    # Fake radii (k=3): sorted 3rd neighbours of {7, 6.5, -3, 10}: 7 -> 10 (|-3-7|), 6.5 -> 9.5, -3 -> 13, 10 -> 13;
    # every real point lies within 13 of -3.
    assert precision_recall(fake, real) == (0.75, 1.0)
    assert _knn_precision_recall(fake, real, 3) == (0.75, 1.0)
    # With k = 1 every real ball has radius 1, covering [-1, 5]: none of the fake points.
    assert precision_recall(fake, real, k=1)[0] == _knn_precision_recall(fake, real, 1)[0] == 0.0


# ------------------------------------------------------------------ torch-fidelity on images
@pytest.fixture(scope="module")
def informative_inception(tmp_path_factory):
    """A stand-in Inception whose logits are spread wide enough that the Inception Score of mixed images is far
    from 1 (the default stand-in's are not, and its IS is ~1.0 on any small set)."""
    pytest.importorskip("torch_fidelity")
    from bench.metrics.inception import make_standin_inception_weights

    return make_standin_inception_weights(tmp_path_factory.mktemp("inception") / "wide.pth", seed=0, logit_scale=64.0)


def _mixed_images(kinds: dict[str, int], size: int, seed: int) -> torch.Tensor:
    """Photographs, drawings, flat grey levels, noise of rising amplitude and full-range uniform noise: kinds an
    Inception (even a random-weight one) tells apart, so two sets mixed differently have different features."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for kind, n in kinds.items():
        if kind in ("skimage", "procedural"):
            parts.append(builtin_images(kind, size, n, seed=seed))
        elif kind == "flat":
            parts.append((torch.linspace(0, 255, n)[:, None, None, None] * torch.ones(n, 3, size, size)).byte())
        elif kind == "uniform":
            parts.append(torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8))
        elif kind == "noise":
            amplitude = torch.linspace(10, 255, n)[:, None, None, None]
            noise = 128 + (torch.rand(n, 3, size, size, generator=g) - 0.5) * amplitude
            parts.append(noise.clamp(0, 255).byte())
    images = torch.cat(parts)
    return images[torch.randperm(len(images), generator=g)]  # interleaved, so every IS split sees several kinds


# (fake kinds, fake size), (real kinds, real size): different counts and resolutions in each pair; and how far
# apart precision and recall are at least (measured: 0.90/1.00 and 0.60/1.00). KID measured 0.0163 +- 0.0050 and
# 0.0266 +- 0.0055, IS 1.33 and 1.27.
CASES = {
    "30@64-vs-20@48": (({"skimage": 10, "flat": 10, "noise": 10}, 64), ({"skimage": 10, "uniform": 10}, 48), 0.05),
    "20@40-vs-30@96": (({"flat": 10, "noise": 10}, 40), ({"skimage": 10, "procedural": 10, "uniform": 10}, 96), 0.3),
}


@pytest.mark.metrics
@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_precision_recall_kid_and_is_equal_torch_fidelity(case, informative_inception, tmp_path):
    import torch_fidelity

    from bench.metrics.image_sets import compute_image_metrics

    (fake_kinds, fake_size), (real_kinds, real_size), apart = CASES[case]
    write_pngs(tmp_path / "fake", _mixed_images(fake_kinds, fake_size, seed=1))
    write_pngs(tmp_path / "real", _mixed_images(real_kinds, real_size, seed=2))
    fake, real = ImageFolder(tmp_path / "fake"), ImageFolder(tmp_path / "real")
    subset = min(len(fake), len(real))
    result = compute_image_metrics(fake, real, inception_weights=informative_inception,
                                   metrics=("isc", "kid", "prc"), kid_subset_size=subset, batch_size=7)
    ours, conventions = result.values, result.protocol["conventions"]
    assert conventions["prc"]["k"] == 3 and conventions["prc"]["features"] == "inception pool3 2048"
    assert conventions["kid"]["subset_size"] == subset and conventions["isc"]["splits"] == 10
    ref = torch_fidelity.calculate_metrics(
        input1=str(tmp_path / "fake"), input2=str(tmp_path / "real"), isc=True, kid=True, prc=True, cuda=False,
        verbose=False, cache=False, feature_extractor="inception-v3-compat", feature_layer_prc="2048",
        feature_extractor_weights_path=str(informative_inception), kid_subset_size=subset)
    # Precision and recall are shares of points: the same points counted (torch-fidelity averages in float32).
    assert round(ours["standin_precision"] * len(fake)) == round(ref["precision"] * len(fake))
    assert round(ours["standin_recall"] * len(real)) == round(ref["recall"] * len(real))
    assert ours["standin_precision"] == pytest.approx(ref["precision"], abs=1e-6)
    assert ours["standin_recall"] == pytest.approx(ref["recall"], abs=1e-6)
    assert ours["standin_kid_mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["standin_kid_std"] == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-3, abs=1e-9)
    assert ours["standin_isc_mean"] == pytest.approx(ref["inception_score_mean"], rel=1e-6)
    assert ours["standin_isc_std"] == pytest.approx(ref["inception_score_std"], rel=1e-5)
    # Far from the trivial values, so the equalities above are informative.
    # KID's std is the spread of the 100 subsets' estimates, not the uncertainty of their mean (about a tenth of it):
    # a mean above twice that spread is far from 0.
    assert ours["standin_kid_mean"] > 0.005 and ours["standin_kid_mean"] > 2 * ours["standin_kid_std"]
    assert ours["standin_isc_mean"] > 1.2
    assert abs(ours["standin_precision"] - ours["standin_recall"]) > apart  # a swap would show


# ------------------------------------------------------------------ sFID
# The TF graph's inception blocks in order (mixed, mixed_1, ..., mixed_10) under torch-fidelity's module names:
# three 35x35 blocks, the 17x17 reduction, four 17x17 blocks, the 8x8 reduction, two 8x8 blocks.
TF_BLOCK_ORDER = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                  "Mixed_7a", "Mixed_7b", "Mixed_7c"]


def _frechet_written_here(x: np.ndarray, y: np.ndarray) -> float:
    """||mu_x - mu_y||^2 + tr(S_x + S_y - 2 sqrtm(S_x S_y)), sample covariances (N - 1), scipy's sqrtm."""
    import scipy.linalg

    mu_x, mu_y = x.mean(0), y.mean(0)
    s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s_x @ s_y)
    return float((mu_x - mu_y) @ (mu_x - mu_y) + np.trace(s_x) + np.trace(s_y) - 2 * np.trace(root).real)


@pytest.mark.metrics
@pytest.mark.slow
def test_sfid_is_adm_mixed_6_conv_and_a_frechet_distance(standin_inception, tmp_path):
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    from bench.metrics.image_sets import compute_image_metrics, extract_features
    from bench.metrics.inception import load_inception
    from bench.metrics.statistics_file import write_statistics

    n = 8
    a, b = builtin_images("skimage", 64, n), builtin_images("procedural", 64, n)
    model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                           feature_extractor_weights_path=str(standin_inception))
    tensors = []
    mixed_6 = getattr(model, TF_BLOCK_ORDER[6])  # ADM's "mixed_6"; its 1x1 branch is the scope "mixed_6/conv"
    mixed_6.branch1x1.register_forward_hook(lambda module, inputs, output: tensors.append(output.clone()))
    with torch.no_grad():
        pool_b = model(b)[0].double().numpy()
        model(a)
    map_b, map_a = tensors
    assert map_a.shape == (n, 192, 17, 17)  # the 1x1 branch's 192 channels on the 17x17 grid
    # ADM: spatial[..., :7] of the NHWC tensor, reshaped to (N, -1): channels fastest.
    want_b = map_b[:, :7].permute(0, 2, 3, 1).reshape(n, -1).double().numpy()
    want_a = map_a[:, :7].permute(0, 2, 3, 1).reshape(n, -1).double().numpy()
    assert want_a.shape == (n, 2023)

    ext, _ = load_inception(standin_inception)
    got = extract_features(a[:4], ext, batch_size=3, spatial=True)["spatial"]
    np.testing.assert_allclose(got, want_a[:4], rtol=1e-5, atol=1e-6)

    want = _frechet_written_here(want_a, want_b)
    assert want > 1.0  # the two sets differ in these features
    ours = compute_image_metrics(a, b, inception_weights=standin_inception, metrics=("sfid",), batch_size=5)
    assert ours.values["standin_sfid"] == pytest.approx(want, rel=1e-4)
    assert ours.protocol["conventions"]["sfid"]["dims"] == 2023

    # Against a statistics file: mu_s/sigma_s beside mu/sigma give the same number; a file without them (made
    # before sFID) still loads, and the run says that sFID was left out.
    spatial = (want_b.mean(0), np.cov(want_b, rowvar=False))
    write_statistics(tmp_path / "new.npz", pool_b.mean(0), np.cov(pool_b, rowvar=False), {}, spatial=spatial)
    via_file = compute_image_metrics(a, str(tmp_path / "new.npz"), inception_weights=standin_inception,
                                     metrics=("sfid",))
    assert via_file.values["standin_sfid"] == pytest.approx(want, rel=1e-4)
    write_statistics(tmp_path / "old.npz", pool_b.mean(0), np.cov(pool_b, rowvar=False), {})
    old = compute_image_metrics(a[:2], str(tmp_path / "old.npz"), inception_weights=standin_inception,
                                metrics=("fid", "sfid"))
    assert "standin_sfid" not in old.values and "no mu_s" in old.protocol["sfid_skipped"]
    assert "standin_fid" in old.values and set(old.protocol["conventions"]) == {"sfid"}
