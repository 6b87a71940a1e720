"""Reference statistics files and the protocol they were made under.

FID against a statistics file is only meaningful when the file was made the way the run measures: the same
feature extractor (weights hash), the same image size, the same preparation of the real images (resize and
crop: see titok/data/prepare.py). `titok-bench stats` writes that protocol into the file (an `info` JSON
string beside `mu` and `sigma`, sFID's `mu_s` and `sigma_s` (2023-d, the names and layout of ADM's reference
batches), and optionally the pool `features` that precision/recall and KID need); a run checks it before any
image is generated, and a field that differs is an error naming it. Files without `mu_s`/`sigma_s` (written
before sFID, or by other tools) still load: runs against them leave sFID out.

Files made elsewhere carry no such record: OpenAI's ADM reference batches (`VIRTUAL_imagenet256_labeled.npz`:
`arr_0` images, `mu`, `sigma`) are known by their layout, made with guided-diffusion's `center_crop_arr` and
the FID Inception (TF graph, whose pool features torch-fidelity's `inception-v3-compat` port reproduces);
torch-fidelity's and clean-fid's caches say nothing, and are accepted with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from bench.metrics.base import FEATURE_DIM, MetricError
from bench.metrics.inception import FID_EXTRACTOR, SPATIAL_DIM
from bench.metrics.reference import IMAGES_KEY, npy_header
from titok.data.files import tmp_name
from titok.data.prepare import ADM

log = logging.getLogger(__name__)
STATS_FORMAT = "titok-bench-stats-v1"
# The fields a run and its reference must agree on, in the order an error reports them.
CHECKED_FIELDS = ("extractor", "extractor_sha256", "image_size", "preparation")


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
    return _checked_gaussian(path, mu, sigma, FEATURE_DIM, ("mu", "sigma"),
                             f"the {FEATURE_DIM}-d Inception pool features", "statistics")


def write_statistics(path: str | Path, mu: np.ndarray, sigma: np.ndarray, protocol: dict,
                     features: np.ndarray | None = None,
                     spatial: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """mu, sigma (optionally (N, 2048) float32 pool features, and sFID's (mu_s, sigma_s)) + the protocol -> an
    .npz, atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise MetricError(f"{path}: a statistics file is an .npz archive; name it *.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    arrays = {"mu": mu, "sigma": sigma, "info": np.array(json.dumps({"format": STATS_FORMAT, **protocol}))}
    if features is not None:
        arrays["features"] = np.asarray(features, np.float32)
    if spatial is not None:
        arrays["mu_s"], arrays["sigma_s"] = spatial
    try:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a temporary name
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _member_shape(z: zipfile.ZipFile, name: str) -> tuple[int, ...] | None:
    """The shape of an .npy member read from its header alone (ADM's arr_0 is GBs; never load it for this)."""
    if name + ".npy" not in z.namelist():
        return None
    with z.open(name + ".npy") as f:
        return npy_header(f)[0]


def read_protocol(path: str | Path) -> dict:
    """The protocol a statistics file was made under: its own record, ADM's known one, or {} (unknown)."""
    path = Path(path)
    load_reference_stats(path)  # keys, shapes, finite values: checked first, with clear errors
    with np.load(path, allow_pickle=False) as z:
        if "info" in z.files:
            try:
                info = json.loads(str(z["info"]))
            except ValueError as exc:
                raise MetricError(f"{path}: unreadable 'info' record: {exc}") from None
            if not isinstance(info, dict):
                raise MetricError(f"{path}: the 'info' record must be a JSON object")
            return info
    with zipfile.ZipFile(path) as z:
        shape = _member_shape(z, IMAGES_KEY)
    if shape is not None and len(shape) == 4 and shape[1] == shape[2] and shape[3] == 3:
        return {"format": "adm-reference-batch", "extractor": FID_EXTRACTOR, "image_size": int(shape[1]),
                "preparation": ADM, "num_images": int(shape[0])}
    log.warning("%s records no protocol (not made by `titok-bench stats`, not an ADM reference batch): its "
                "extractor, image size and preparation cannot be checked against this run", path)
    return {}


def check_protocol(path: str | Path, reference: dict, run: dict) -> None:
    """Refuse a reference made under another protocol than the run's; the error names each differing field."""
    diff = [f"{k}: reference {reference[k]!r}, this run {run[k]!r}" for k in CHECKED_FIELDS
            if k in reference and k in run and reference[k] != run[k]]
    if diff:
        raise MetricError(f"{path} was made under another protocol than this run (" + "; ".join(diff) + "). "
                          "FID between them would measure the difference in protocol; make the statistics with "
                          "`titok-bench stats` under this run's settings, or run under the reference's.")


def reference_features(path: str | Path) -> np.ndarray | None:
    """(N, 2048) float32 pool features stored by `titok-bench stats --features`, or None."""
    with np.load(path, allow_pickle=False) as z:
        if "features" not in z.files:
            return None
        f = z["features"]
    if f.ndim != 2 or f.shape[1] != FEATURE_DIM or not np.isfinite(f).all():
        raise MetricError(f"{path}: 'features' must be finite (N, {FEATURE_DIM}), got {f.shape}")
    return f.astype(np.float32)


def reference_spatial_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """sFID's (mu_s (2023,), sigma_s (2023, 2023)) float64 from a statistics file, or None when it has none."""
    with np.load(path, allow_pickle=False) as z:
        if "mu_s" not in z.files and "sigma_s" not in z.files:
            return None
        if "mu_s" not in z.files or "sigma_s" not in z.files:
            raise MetricError(f"{path}: sFID statistics need both 'mu_s' and 'sigma_s', found {z.files}")
        mu, sigma = z["mu_s"].astype(np.float64), z["sigma_s"].astype(np.float64)
    return _checked_gaussian(path, mu, sigma, SPATIAL_DIM, ("mu_s", "sigma_s"), "sFID's spatial features",
                             "sFID statistics")


def _checked_gaussian(path, mu: np.ndarray, sigma: np.ndarray, dim: int, names: tuple[str, str], features: str,
                      what: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of a statistics file once they have the shapes of `dim`-d features and are finite; else a
    MetricError that names the file, the arrays and what they describe."""
    if mu.shape != (dim,) or sigma.shape != (dim, dim):
        raise MetricError(f"{path}: expected {names[0]} ({dim},) and {names[1]} ({dim}, {dim}) for {features}, got "
                          f"{mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise MetricError(f"{path}: {what} hold non-finite values (NaN/inf)")
    return mu, sigma


def run_protocol(extractor_info, image_size: int | None) -> dict:
    """The protocol fields of a generation run (or a folder given to `fid`) that its reference must match (samples
    are not prepared: they are made at the tokenizer's size, so the preparation is the reference's own business).
    An image size of None (a set of mixed sizes) leaves that field unchecked."""
    protocol = {"extractor": extractor_info.name, "extractor_sha256": extractor_info.weights_sha256}
    if image_size is not None:
        protocol["image_size"] = int(image_size)
    return protocol
