"""Image-set metrics for reconstruction (rFID, PSNR, SSIM) and generation (gFID, IS, KID, precision/recall).

Staged like torch-fidelity: images -> Inception features -> statistics -> number. Features come from
torch-fidelity's Inception, and every number from torch-fidelity's own metric functions, so our values are
torch-fidelity's on the same inputs (tests check it, and clean-fid's Frechet distance agrees). Result keys are
constant; a number computed with a stand-in Inception carries the prefix `standin_` and is never called FID.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.inception import load_inception, require_torch_fidelity, sha256_of
from titok.data.images import RESIZE_MODE, iter_image_batches
from titok.errors import InputError

log = logging.getLogger(__name__)
FEATURE_DIM = 2048
METRICS = ("fid", "isc", "kid", "prc")


class MetricError(InputError, ValueError):
    """Inputs a metric can't be computed from (non-finite features, wrong statistics shape, too few samples)."""


@dataclass
class MetricsResult:
    values: dict[str, float]
    protocol: dict = field(default_factory=dict)


def extract_features(images, extractor, batch_size: int = 64, device="cpu", progress: bool = False
                     ) -> dict[str, np.ndarray]:
    """uint8 images (tensor or Dataset) -> {"pool": (N,2048) float64, "logits_unbiased": (N,1008) float64}."""
    pools, logits = [], []
    with torch.no_grad():
        for batch, _ in iter_image_batches(images, batch_size, progress, desc="inception"):
            pool, logit = extractor(batch.to(device))
            pools.append(pool.double().cpu())
            logits.append(logit.double().cpu())
    if not pools:
        raise MetricError("no images to compute features from")
    out = {"pool": torch.cat(pools).numpy(), "logits_unbiased": torch.cat(logits).numpy()}
    for k, v in out.items():
        if not np.isfinite(v).all():
            raise MetricError(f"non-finite Inception {k} features ({int((~np.isfinite(v)).sum())} values)")
    return out


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> (mu (D,), sigma (D, D)), torch-fidelity's estimator."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    if features.shape[0] < 2:
        raise MetricError(f"FID statistics need at least 2 samples, got {features.shape[0]}")
    s = fid_features_to_statistics(torch.from_numpy(np.asarray(features, dtype=np.float64)))
    return s["mu"], s["sigma"]


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    return float(fid_statistics_to_metric({"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2},
                                          verbose=False)[KEY_METRIC_FID])


def load_reference_stats(path) -> tuple[np.ndarray, np.ndarray]:
    """mu/sigma from a statistics .npz: ours, torch-fidelity's and clean-fid's, or ADM's reference batch
    (VIRTUAL_imagenet256_labeled.npz, keys mu, sigma beside the images arr_0).

    Read as data only (no pickled objects), and checked: both keys, shapes for the 2048-d pool features, finite.
    """
    path = Path(path)
    if not path.is_file():
        raise MetricError(f"statistics file not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise MetricError(f"{path}: not a readable .npz statistics file: {exc}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise MetricError(f"{path}: a statistics file must be an .npz archive (np.savez) holding 'mu' and 'sigma', "
                          f"found a single array of shape {getattr(z, 'shape', '?')}")
    try:
        with z:
            if "mu" not in z or "sigma" not in z:
                raise MetricError(f"{path}: a statistics file needs arrays 'mu' and 'sigma', found {list(z.keys())}")
            mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        if isinstance(exc, MetricError):
            raise
        raise MetricError(f"{path}: not a readable .npz statistics file: {exc}") from None
    if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM):
        raise MetricError(f"{path}: expected mu ({FEATURE_DIM},) and sigma ({FEATURE_DIM}, {FEATURE_DIM}) for the "
                          f"{FEATURE_DIM}-d Inception pool features, got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise MetricError(f"{path}: statistics hold non-finite values (NaN/inf)")
    return mu, sigma


def save_reference_stats(path, mu, sigma, info: dict) -> None:
    import json

    np.savez(path, mu=mu, sigma=sigma, info=np.array(json.dumps(info)))


def _prefixed(values: dict[str, float], standin: bool) -> dict[str, float]:
    return {("standin_" + k if standin else k): v for k, v in values.items()}


def compute_image_metrics(fake, real=None, *, inception_weights=None, metrics=("fid", "isc"), batch_size: int = 64,
                          device="cpu", progress: bool = False, kid_subset_size: int = 1000) -> MetricsResult:
    """Metrics of `fake` images (uint8 tensor or Dataset) against `real` (images, or a statistics .npz).

    Keys: fid, isc_mean, isc_std, kid_mean, kid_std, precision, recall (each `standin_`-prefixed with a stand-in
    Inception). The protocol records the extractor and its weights hash, the resize mode, the reference and the
    sample counts, so two numbers are only compared when they were measured the same way.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise MetricError(f"unknown metrics {sorted(unknown)}; known: {', '.join(METRICS)}")
    require_torch_fidelity()
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    reference = load_reference_stats(real) if isinstance(real, (str, Path)) and "fid" in metrics else None
    extractor, info = load_inception(inception_weights, device)
    f_fake = extract_features(fake, extractor, batch_size, device, progress)
    protocol = {"extractor": info.as_protocol(), "resize": RESIZE_MODE, "num_fake": int(f_fake["pool"].shape[0]),
                "batch_size": batch_size, "metrics": sorted(metrics)}
    values: dict[str, float] = {}
    needs_real_features = bool({"kid", "prc"} & set(metrics))
    f_real = None
    if real is not None and not (isinstance(real, (str, Path)) and not needs_real_features):
        if isinstance(real, (str, Path)):
            raise MetricError("KID and precision/recall need real images, not a statistics file")
        f_real = extract_features(real, extractor, batch_size, device, progress)
        protocol["num_real"] = int(f_real["pool"].shape[0])
    if "fid" in metrics:
        if real is None:
            raise MetricError("FID needs real images or reference statistics")
        if isinstance(real, (str, Path)):
            mu2, sigma2 = reference
            protocol["reference"] = {"path": str(real), "sha256": sha256_of(Path(real))}
        else:
            mu2, sigma2 = statistics(f_real["pool"])
            protocol["reference"] = {"images_sha256": _features_digest(f_real["pool"])}
        values["fid"] = frechet_distance(*statistics(f_fake["pool"]), mu2, sigma2)
    if "isc" in metrics:
        if len(f_fake["logits_unbiased"]) < 10:
            raise MetricError(f"the Inception Score uses 10 splits and needs at least 10 images, got "
                              f"{len(f_fake['logits_unbiased'])}")
        r = isc_features_to_metric(torch.from_numpy(f_fake["logits_unbiased"]), splits=10, shuffle=True, rng_seed=2020)
        values["isc_mean"], values["isc_std"] = r["inception_score_mean"], r["inception_score_std"]
    if "kid" in metrics:
        n = min(kid_subset_size, len(f_fake["pool"]), len(f_real["pool"]))
        r = kid_features_to_metric(torch.from_numpy(f_fake["pool"]), torch.from_numpy(f_real["pool"]),
                                   kid_subset_size=n, kid_subsets=100, verbose=False, rng_seed=2020,
                                   kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                   kid_kernel_poly_coef0=1)
        values["kid_mean"], values["kid_std"] = r["kernel_inception_distance_mean"], r["kernel_inception_distance_std"]
        protocol["kid_subset_size"] = n
    if "prc" in metrics:
        r = prc_features_to_metric(torch.from_numpy(f_fake["pool"]).float(), torch.from_numpy(f_real["pool"]).float(),
                                   prc_neighborhood=3, prc_batch_size=10000, save_cpu_ram=False, verbose=False)
        values["precision"], values["recall"] = r["precision"], r["recall"]
    bad = {k: v for k, v in values.items() if not np.isfinite(v)}
    if bad:  # never hand on a NaN or inf as if it were a measurement
        raise MetricError(f"metric values are not finite: {bad}")
    return MetricsResult(_prefixed(values, info.standin), protocol)


def _features_digest(features: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(features, dtype=np.float32).tobytes()).hexdigest()[:16]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of PSNR in dB between uint8 image batches (B,3,H,W); inf for identical images."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(255.0**2 / mse)).mean())


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of SSIM (scikit-image, Gaussian window as in Wang et al. 2004) for uint8 (B,3,H,W)."""
    from skimage.metrics import structural_similarity

    vals = [structural_similarity(x.permute(1, 2, 0).numpy(), y.permute(1, 2, 0).numpy(), channel_axis=2,
                                  data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            for x, y in zip(a, b, strict=True)]
    return float(np.mean(vals))
