"""Metrics: agreement with torch-fidelity and clean-fid, invariants, stand-in labelling, and input checks.

Tests marked `metrics` need torch-fidelity / clean-fid (tox -e metrics); the rest run on the core stack.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.metrics.base import MetricError
from bench.metrics.inception import MissingArtifactError, inspect_weights, resolve_inception_weights
from bench.metrics.pixel import psnr, ssim
from bench.metrics.statistics_file import load_reference_stats
from titok.data.images import ImageFolder, builtin_images


def test_psnr_and_ssim_known_values():
    a = torch.full((2, 3, 16, 16), 100, dtype=torch.uint8)
    b = a.clone()
    b[:, :, :, ::2] += 10  # MSE = 50 -> PSNR = 10 log10(255^2 / 50)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 50), abs=1e-9)
    assert psnr(a, a) == float("inf")
    x = builtin_images("skimage", 32, 2)
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x, torch.flip(x, dims=[3])) < 0.9


def test_reference_stats_shape_is_checked(tmp_path):
    np.savez(tmp_path / "bad.npz", mu=np.zeros(10), sigma=np.eye(10))
    with pytest.raises(MetricError, match="expected mu"):
        load_reference_stats(tmp_path / "bad.npz")
    np.savez(tmp_path / "nokeys.npz", arr_0=np.zeros(3))
    with pytest.raises(MetricError, match="'mu' and 'sigma'"):
        load_reference_stats(tmp_path / "nokeys.npz")
    # ADM's reference batch: images under arr_0 beside mu/sigma.
    np.savez(tmp_path / "adm.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8), mu=np.ones(2048), sigma=np.eye(2048))
    mu, sigma = load_reference_stats(tmp_path / "adm.npz")
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048)


def test_missing_inception_weights_say_where(tmp_path, monkeypatch):
    monkeypatch.delenv("TITOK_BENCH_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(MissingArtifactError) as e:
        resolve_inception_weights(None)
    msg = str(e.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in msg and "torch-fidelity/releases" in msg
    assert str(tmp_path / "titok-bench") in msg


def test_wrong_inception_file_is_refused(tmp_path):
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="sha256"):
        inspect_weights(path)


# ------------------------------------------------------------------ against the reference libraries
@pytest.mark.metrics
def test_fid_equals_torch_fidelity(image_folders, standin_inception):
    import torch_fidelity

    from bench.metrics.image_sets import compute_image_metrics

    a, b = image_folders
    ours = compute_image_metrics(ImageFolder(a), ImageFolder(b), inception_weights=standin_inception,
                                 metrics=("fid",)).values["standin_fid"]
    ref = torch_fidelity.calculate_metrics(input1=str(a), input2=str(b), fid=True, cuda=False, verbose=False,
                                           cache=False, feature_extractor_weights_path=str(standin_inception))
    assert ours > 0.1  # different sets really differ under the stand-in
    assert ours == pytest.approx(ref["frechet_inception_distance"], abs=1e-3)


@pytest.mark.metrics
def test_fid_self_is_zero_and_batch_size_invariant(image_folders, standin_inception):
    from bench.metrics.image_sets import compute_image_metrics

    a, b = image_folders
    self_fid = compute_image_metrics(ImageFolder(a), ImageFolder(a), inception_weights=standin_inception,
                                     metrics=("fid",)).values["standin_fid"]
    assert abs(self_fid) < 1e-3
    by_batch = [compute_image_metrics(ImageFolder(a), ImageFolder(b), inception_weights=standin_inception,
                                      metrics=("fid",), batch_size=bs).values["standin_fid"] for bs in (1, 5, 64)]
    assert max(by_batch) - min(by_batch) < 1e-3


@pytest.mark.metrics
def test_frechet_distance_agrees_with_clean_fid():
    from cleanfid.fid import frechet_distance as clean_frechet

    from bench.metrics.image_sets import frechet_distance, statistics

    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(300, 64)), rng.normal(0.3, 1.2, size=(300, 64))
    (m1, s1), (m2, s2) = statistics(f1), statistics(f2)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(clean_frechet(m1, s1, m2, s2), rel=1e-6)


@pytest.mark.metrics
def test_all_metrics_run_and_stand_in_is_labelled(standin_inception, tmp_path):
    from bench.metrics.image_sets import compute_image_metrics, statistics
    from bench.metrics.statistics_file import write_statistics

    a, b = builtin_images("skimage", 64, 12), builtin_images("procedural", 64, 12)
    r = compute_image_metrics(a, b, inception_weights=standin_inception, metrics=("fid", "isc", "kid", "prc"))
    assert set(r.values) == {"standin_fid", "standin_isc_mean", "standin_isc_std", "standin_kid_mean",
                             "standin_kid_std", "standin_precision", "standin_recall"}
    assert not any(k.startswith(("fid", "isc")) for k in r.values)
    assert r.protocol["extractor"]["standin"] is True and r.protocol["num_fake"] == 12
    assert r.values["standin_isc_mean"] >= 1.0 and 0 <= r.values["standin_precision"] <= 1
    # FID against saved statistics equals FID against the images they came from.
    from bench.metrics.image_sets import extract_features
    from bench.metrics.inception import load_inception

    ext, _ = load_inception(standin_inception)
    mu, sigma = statistics(extract_features(b, ext)["pool"])
    write_statistics(tmp_path / "ref.npz", mu, sigma, {"source": "procedural"})
    via_stats = compute_image_metrics(a, str(tmp_path / "ref.npz"), inception_weights=standin_inception,
                                      metrics=("fid",))
    assert via_stats.values["standin_fid"] == pytest.approx(r.values["standin_fid"], abs=1e-6)
    assert "sha256" in via_stats.protocol["reference"]
