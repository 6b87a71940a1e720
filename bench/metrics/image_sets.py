"""Image-set metrics for reconstruction (rFID, PSNR, SSIM) and generation (gFID, sFID, IS, KID, precision/recall).

Staged like torch-fidelity: images -> Inception features -> statistics -> number. Features come from
torch-fidelity's Inception (its port of the TF graph FID was defined with). FID, IS and KID are torch-fidelity's own
metric functions (IS streamed, bench.metrics.streaming), so our values are torch-fidelity's on the same inputs;
precision/recall and sFID are ours, written to the conventions below and checked against torch-fidelity and against
computations written in the tests (tests/test_metric_references.py). Conventions, also written into the protocol
(`conventions`) of every result that has sFID, IS, KID or precision/recall:
- precision/recall: improved precision and recall (Kynkaanniemi et al. 2019) with k = 3 on Inception pool3
  features (2048-d), as ADM's evaluator (guided-diffusion evaluations/evaluator.py) and torch-fidelity's `prc`
  compute them: a point's ball has the radius of its 3rd nearest neighbour in its own set; precision is the share
  of generated points inside some real point's ball, recall the share of real points inside some generated
  point's ball.
- sFID: ADM's: the Frechet distance of the first 7 channels of the 17x17 map of the TF graph's `mixed_6/conv`
  (torch-fidelity's Mixed_6d.branch1x1; bench.metrics.inception says why), 2023-d, taken in the same pass as FID.
- KID: torch-fidelity's: unbiased MMD^2 with the cubic polynomial kernel (gamma 1/2048, coef0 1) on pool3
  features, 100 subsets of min(1000, N) images, seed 2020. IS: torch-fidelity's: 1008 logits, 10 splits.
Result keys are constant; a number computed with a stand-in Inception carries the prefix `standin_` and is never
called FID.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.metrics import distributed
from bench.metrics.base import FEATURE_DIM, LOGITS_DIM, MetricError
from bench.metrics.image_batches import rank_image_batches
from bench.metrics.inception import (
    SPATIAL_DIM,
    SPATIAL_LAYER,
    SPATIAL_TF_TENSOR,
    SpatialTap,
    load_inception,
    require_torch_fidelity,
    sha256_of,
)
from bench.metrics.statistics_file import load_reference_stats, reference_features, reference_spatial_stats
from bench.metrics.streaming import (
    BootstrapGaussians,
    FeatureStore,
    RunningGaussian,
    RunningInceptionScore,
    batch_positions,
)
from titok.data.images import RESIZE_MODE, iter_image_batches
from titok.train.distributed import DistContext

log = logging.getLogger(__name__)
PAPER_NUM_IMAGES = 50_000  # the paper's gFID/rFID: 50,000 samples, or the 50,000 ImageNet val images
_said: set[str] = set()


def few_images_warning(n: int, what: str) -> str | None:
    """Why FID statistics over `n` images mislead, or None when `n` is enough to mean something.

    The threshold is the feature dimension, 2048: from fewer images the 2048 x 2048 covariance estimate has rank at
    most n - 1, is singular, and the Frechet distance mostly measures n. Above it FID still falls as n grows, which
    is the most reported reason a user's FID differs from the paper's (the TiTok release's issue #65).
    """
    if n >= FEATURE_DIM:
        return None
    return (f"FID statistics over {n} {what}: fewer than {FEATURE_DIM}, the Inception feature dimension, so the "
            f"{FEATURE_DIM}x{FEATURE_DIM} covariance is singular (rank <= {max(n - 1, 0)}) and the number mostly "
            f"reflects the image count. Compare such numbers only at the same count, never with the paper's, which "
            f"use {PAPER_NUM_IMAGES:,} images.")
METRICS = ("fid", "sfid", "isc", "kid", "prc")
PRC_NEIGHBORHOOD = 3  # k of improved precision/recall: ADM's evaluator (nhood_sizes=(3,)) and torch-fidelity's default
PRC_BLOCK_BYTES = 256 * 2**20  # distances held at once by precision/recall: one block of rows against a whole set
KID_SUBSETS, KID_SEED = 100, 2020
CONVENTIONS = {
    "prc": {"method": "improved precision/recall (Kynkaanniemi et al. 2019)", "features": "inception pool3 2048",
            "k": PRC_NEIGHBORHOOD, "distance": "euclidean (torch.cdist), float32 features",
            "precision": "share of generated inside some real k-NN ball",
            "recall": "share of real inside some generated k-NN ball"},
    "kid": {"method": "torch-fidelity kid: unbiased MMD^2, polynomial kernel degree 3, gamma 1/d, coef0 1",
            "features": "inception pool3 2048", "subsets": KID_SUBSETS, "seed": KID_SEED},
    "isc": {"method": "torch-fidelity isc: exp(E KL(p(y|x) || p(y))) per split, mean and std over splits",
            "features": "inception logits_unbiased 1008", "splits": 10, "seed": 2020},
    "sfid": {"method": "ADM evaluator sFID: Frechet distance of spatial features",
             "features": f"inception {SPATIAL_TF_TENSOR}[..., :7] (torch-fidelity {SPATIAL_LAYER}), 17x17x7 "
                         f"flattened NHWC", "dims": SPATIAL_DIM},
}


@dataclass
class MetricsResult:
    values: dict[str, float]
    protocol: dict = field(default_factory=dict)
    spreads: dict = field(default_factory=dict)  # {metric: {std, n, method}}: a value's own uncertainty


@torch.no_grad()
def inception_features(extractor, images: torch.Tensor, device="cpu") -> tuple[np.ndarray, torch.Tensor]:
    """One uint8 batch (B,3,H,W) -> (pool (B,2048) float64 numpy, logits_unbiased (B,1008) float64 on CPU).

    Non-finite features (an Inception with damaged weights) are an error here, before any statistic sees them.
    """
    pool, logits = extractor(images.to(device))
    pool, logits = pool.double().cpu(), logits.double().cpu()
    for name, v in (("pool", pool), ("logits_unbiased", logits)):
        if not torch.isfinite(v).all():
            raise MetricError(f"non-finite Inception {name} features ({int((~torch.isfinite(v)).sum())} values)")
    return pool.numpy(), logits


def spatial_features(tap: SpatialTap) -> np.ndarray:
    """The batch's sFID features (B, 2023) float64 from the tap that saw its forward pass; non-finite is an error."""
    spatial = tap.take()
    if spatial is None:
        raise MetricError(f"the Inception pass did not reach {SPATIAL_LAYER}, where sFID's features are taken")
    spatial = spatial.double().cpu()
    if not torch.isfinite(spatial).all():
        raise MetricError(f"non-finite Inception spatial features ({int((~torch.isfinite(spatial)).sum())} values)")
    return spatial.numpy()


def extract_features(images, extractor, batch_size: int = 64, device="cpu", progress: bool = False,
                     spatial: bool = False) -> dict[str, np.ndarray]:
    """uint8 images (tensor or Dataset) -> all features at once: {"pool": (N,2048), "logits_unbiased": (N,1008)},
    and with `spatial` sFID's "spatial": (N, 2023), float64. Holds the whole set: for cross-checks against the
    reference libraries, not for evaluation runs."""
    pools, logits, spatials = [], [], []
    tap = SpatialTap(extractor) if spatial else None
    try:
        for batch, _ in iter_image_batches(images, batch_size, progress, desc="inception"):
            pool, logit = inception_features(extractor, batch, device)
            pools.append(pool)
            logits.append(logit.numpy())
            if tap is not None:
                spatials.append(spatial_features(tap))
    finally:
        if tap is not None:
            tap.remove()
    if not pools:
        raise MetricError("no images to compute features from")
    out = {"pool": np.concatenate(pools), "logits_unbiased": np.concatenate(logits)}
    if spatials:
        out["spatial"] = np.concatenate(spatials)
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


def _row_blocks(rows: int, cols: int, block_bytes: int, itemsize: int = 4):
    """(start, stop) of row blocks whose (block, cols) distance matrix fits in `block_bytes`."""
    step = max(1, block_bytes // max(1, cols * itemsize))
    for start in range(0, rows, step):
        yield start, min(start + step, rows)


def knn_radii(features: torch.Tensor, k: int = PRC_NEIGHBORHOOD, block_bytes: int = PRC_BLOCK_BYTES
              ) -> torch.Tensor:
    """(N,) distance from each row of `features` to its k-th nearest neighbour in the same set.

    The row's distance to itself (0) is among each row's distances, so the k-th neighbour is the (k+1)-th
    smallest, as in ADM's evaluator (the partition's index k over a row that holds the point itself) and
    torch-fidelity (`kthvalue(k + 1)`). Duplicated points count as neighbours, as there.
    """
    n = features.shape[0]
    if n <= k:
        raise MetricError(f"precision/recall with k={k} needs more than {k} images per set, got {n}")
    radii = torch.empty(n, dtype=features.dtype)
    for start, stop in _row_blocks(n, n, block_bytes, features.element_size()):
        radii[start:stop] = torch.cdist(features[start:stop], features).kthvalue(k + 1, dim=1).values
    return radii


def inside_any_ball(points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor,
                    block_bytes: int = PRC_BLOCK_BYTES) -> torch.Tensor:
    """(P,) bool: whether each of `points` lies within distance radii[j] of some centers[j] (boundary included)."""
    inside = torch.empty(points.shape[0], dtype=torch.bool)
    for start, stop in _row_blocks(points.shape[0], centers.shape[0], block_bytes, points.element_size()):
        inside[start:stop] = (torch.cdist(points[start:stop], centers) <= radii).any(dim=1)
    return inside


def precision_recall(fake, real, k: int = PRC_NEIGHBORHOOD, block_bytes: int = PRC_BLOCK_BYTES
                     ) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of generated `fake` against `real` features.

    Convention (ADM's evaluator and torch-fidelity's `prc`, with k = 3 there and here): each point of a set gets a
    ball whose radius is the distance to its k-th nearest neighbour in its own set (`knn_radii`). Precision is
    the share of FAKE points inside at least one REAL ball (how much of what is generated looks real); recall
    is the share of REAL points inside at least one FAKE ball (how much of the real variety is covered).
    We report it on Inception pool3 features (2048-d). Distances are Euclidean, computed with torch.cdist in the
    features' dtype (float32, as both references), one block of rows at a time: memory is bounded by
    `block_bytes` per block plus the features (and torch.cdist's padded copy of the other set per call), never a
    full N x N matrix. At 50,000 x 50,000 that is 4 x 50,000^2 x 2048 multiply-adds, on the CPU.
    """
    fake, real = torch.as_tensor(fake), torch.as_tensor(real)
    if fake.ndim != 2 or real.ndim != 2 or fake.shape[1] != real.shape[1]:
        raise MetricError(f"precision/recall needs (N, D) feature sets of one D, got {tuple(fake.shape)} and "
                          f"{tuple(real.shape)}")
    if real.dtype != fake.dtype:
        real = real.to(fake.dtype)
    precision = inside_any_ball(fake, real, knn_radii(real, k, block_bytes), block_bytes)
    recall = inside_any_ball(real, fake, knn_radii(fake, k, block_bytes), block_bytes)
    return float(precision.double().mean()), float(recall.double().mean())


def _prefixed(values: dict[str, float], standin: bool) -> dict[str, float]:
    return {("standin_" + k if standin else k): v for k, v in values.items()}


class InceptionMetrics:
    """Inception-based metrics fed one batch at a time: FID, sFID, IS, KID, precision/recall.

    Memory does not grow with the number of images for FID, sFID and IS (running statistics, see
    bench.metrics.streaming; sFID's 2023-d features are hooked from the same forward pass as FID's pool features);
    KID and precision/recall keep float32 pool features, since they compare all pairs (the distances themselves
    are computed in bounded blocks of rows). `num_fake` announces the
    size of the fake set, which the Inception Score's seeded split assignment needs (torch-fidelity's).
    `reference`: a statistics file (FID against it; KID and precision/recall too where it holds the features),
    or None when real images are added with `add_real`; sFID against a file needs its `mu_s`/`sigma_s` (ADM's
    reference batches and `titok-bench stats` files hold them; without them sFID is left out, and the protocol
    says why). `keep_fake_features` keeps the fake set's pool features
    (`titok-bench stats --features`). `bootstrap` R >= 2 adds FID's sampling uncertainty (the std of R Poisson-
    bootstrap replicates over images, bench.metrics.streaming.BootstrapGaussians) to the result's `spreads`, which
    `titok-bench compare` judges FID changes against; 0 (the default) skips the R-fold covariance work.

    Positions: `add_fake`/`add_real` take `indices`, the images' positions in the whole set (default: the next
    ones in order). They decide the Inception Score's split, the bootstrap weights and the order of kept features
    and of the real set's digest, so the same image counts the same whatever rank adds it, and when; one exception:
    in one process, when FID is against real images, the real set's digest is a running sha256, so real images
    must come in increasing position order there (gaps allowed; out of order is a MetricError).
    Several processes (torchrun): each rank adds its own images with their positions, then every rank calls
    `reduce()` once (a collective); `result()` is then rank 0's, and raises MetricError on the other ranks
    (`compute_image_metrics` hands rank 0's result to every rank). In one process `reduce()` changes nothing.
    Checkpoints: `state_dict()` / `load_state_dict()` save and restore everything added so far (one rank's share).
    `local=True`: the accumulator counts this process's images only, even under torchrun (training's held-out
    rFID, made on rank 0): reduce() does nothing and result() works on any rank.
    Memory under torchrun: where FID is against real images, each rank keeps its real images' float32 pool
    features (8 KB per image) until `reduce()`, which gathers them to rank 0 for the digest in position order.
    """

    def __init__(self, metrics=("fid", "isc"), *, inception_weights=None, device="cpu", reference=None,
                 num_fake: int | None = None, kid_subset_size: int = 1000, batch_size: int = 64,
                 preparation: str | None = None, keep_fake_features: bool = False, bootstrap: int = 0,
                 local: bool = False):
        unknown = set(metrics) - set(METRICS)
        if unknown:
            raise MetricError(f"unknown metrics {sorted(unknown)}; known: {', '.join(METRICS)}")
        require_torch_fidelity()
        self.metrics, self.device, self.kid_subset_size = tuple(metrics), device, kid_subset_size
        self.reference = Path(reference) if reference is not None else None
        self.reference_stats = load_reference_stats(self.reference) if self.reference is not None else None
        self.reference_features = None
        if self.reference is not None and {"kid", "prc"} & set(metrics):
            self.reference_features = reference_features(self.reference)
            if self.reference_features is None:
                raise MetricError(f"KID and precision/recall need real images or a statistics file with their "
                                  f"features (`titok-bench stats --features`); {self.reference} has none")
        if "isc" in metrics and num_fake is None:
            raise ValueError("the Inception Score needs num_fake (the size of the set) up front")
        self.reference_spatial = None
        if self.reference is not None and "sfid" in metrics:
            self.reference_spatial = reference_spatial_stats(self.reference)
            if self.reference_spatial is None:
                log.warning("%s holds no sFID statistics (mu_s, sigma_s): sFID is left out; remake the file with "
                            "`titok-bench stats` to get them", self.reference)
        self.extractor, self.info = load_inception(inception_weights, device)
        self.tap = SpatialTap(self.extractor) if "sfid" in metrics else None
        keep = bool({"kid", "prc"} & set(metrics))
        if bootstrap and (bootstrap < 2 or "fid" not in metrics):
            raise MetricError(f"an FID bootstrap needs FID among the metrics and at least 2 replicates, got "
                              f"{bootstrap} replicates for {sorted(metrics)}")
        self.bootstrap = bootstrap if "fid" in metrics else 0
        self.local = local  # this process's images alone, even inside a process group (training's rFID on rank 0)
        self.dist = DistContext(0, 1, 0, torch.device("cpu")) if local else distributed.current()
        self.fake = _FeatureSums("fid" in metrics, keep or keep_fake_features, self.bootstrap, "sfid" in metrics,
                                 digest=False)
        real_fid = "fid" in metrics and self.reference is None
        self.real = _FeatureSums(real_fid, keep and self.reference is None, self.bootstrap,
                                 "sfid" in metrics and self.reference is None,
                                 digest=real_fid and self.dist.world_size == 1,
                                 keep_for_digest=real_fid and self.dist.world_size > 1)
        self.preparation = preparation
        self.isc = RunningInceptionScore(num_fake, LOGITS_DIM) if "isc" in metrics and num_fake else None
        self.num_fake_announced = num_fake
        self.batch_size = batch_size
        self.kept_fake_features = keep_fake_features
        self.reduced = False
        self._reference_sha256 = sha256_of(self.reference) if self.reference is not None else None

    def add_fake(self, images: torch.Tensor, indices=None) -> None:
        """uint8 (B, 3, H, W) generated or reconstructed images at positions `indices` of the whole set (a range or
        B ints; None: the B positions after the last ones added)."""
        self._check_open("add_fake")
        positions = self.fake.positions(indices, images.shape[0])
        pool, logits = inception_features(self.extractor, images, self.device)
        spatial = spatial_features(self.tap) if self.tap is not None else None
        if self.isc is not None:
            try:  # refuses positions past the announced count, before any sum moves
                self.isc.update(logits, positions)
            except ValueError as exc:
                raise MetricError(str(exc)) from None
        self.fake.update(pool, spatial, positions)

    def add_real(self, images: torch.Tensor, indices=None) -> None:
        """uint8 (B, 3, H, W) real images (when FID is against images rather than a statistics file) at positions
        `indices` of the real set (as `add_fake`)."""
        self._check_open("add_real")
        positions = self.real.positions(indices, images.shape[0])
        pool = inception_features(self.extractor, images, self.device)[0]
        self.real.update(pool, spatial_features(self.tap) if self.tap is not None else None, positions)

    def _check_open(self, what: str) -> None:
        if self.reduced:
            raise MetricError(f"{what} after reduce(): the ranks' sums were already combined")

    def reduce(self) -> None:
        """COLLECTIVE: every rank calls it once, after its last add. The ranks' sums become the whole set's (FID
        and sFID statistics and the bootstrap replicates by float64 sums, the Inception Score by its per-split
        sums); kept pool features are gathered to rank 0 in position order, and the real set's digest is made
        there from them, equal to one process's. Afterwards `result()` works on rank 0 only and no image can be
        added. One process: nothing to combine, nothing changes (and adding may go on)."""
        if self.local:
            return
        if distributed.current().world_size != self.dist.world_size:
            raise MetricError(f"made in a group of {self.dist.world_size} processes, reduced in one of "
                              f"{distributed.current().world_size}")
        if self.dist.world_size == 1:
            return
        self._check_open("reduce()")
        self.fake.reduce()
        self.real.reduce()
        if self.isc is not None:
            self.isc.reduce()
        self.reduced = True

    def result(self) -> MetricsResult:
        if self.dist.world_size > 1 and not self.reduced:
            raise MetricError(f"result() before reduce(): rank {self.dist.rank} holds only its share of the images; "
                              f"every rank calls reduce() first")
        if not self.dist.is_main:
            raise MetricError(f"the whole set's metrics are on rank 0 after reduce(); this is rank {self.dist.rank} "
                              f"(compute_image_metrics hands them to every rank)")
        values: dict[str, float] = {}
        spreads: dict[str, dict] = {}
        if self.fake.n == 0:
            raise MetricError("no images to compute features from")
        protocol = {"extractor": self.info.as_protocol(), "resize": self.preparation or RESIZE_MODE,
                    "num_fake": self.fake.n, "batch_size": self.batch_size, "metrics": sorted(self.metrics),
                    "streaming": True}
        # FID's convention is the extractor's (pool3, 2048-d), already recorded; the others' are written out. A run
        # of FID alone keeps the protocol it had, so its records still match older ones (bench.records.store).
        if conventions := {m: CONVENTIONS[m] for m in self.metrics if m in CONVENTIONS}:
            protocol["conventions"] = conventions
        if self.real.n:
            protocol["num_real"] = self.real.n
        if "fid" in self.metrics:
            if self.reference is not None:
                mu2, sigma2 = self.reference_stats
                protocol["reference"] = {"path": str(self.reference), "sha256": sha256_of(self.reference)}
            elif self.real.n:
                mu2, sigma2 = self.real.statistics()
                protocol["reference"] = {"images_sha256": self.real.digest()}
            else:
                raise MetricError("FID needs real images or reference statistics")
            values["fid"] = frechet_distance(*self.fake.statistics(), mu2, sigma2)
            if self.bootstrap:
                spreads["fid"] = self._bootstrap_fid(mu2, sigma2)
            for n, what in ((self.fake.n, "images"), (self.real.n, "reference images")):
                if n and (message := few_images_warning(n, what)) and message not in _said:
                    _said.add(message)  # once per process and count: a suite scores many models on one set
                    log.warning(message)
        if "sfid" in self.metrics:
            self._sfid(values, protocol)
        if "isc" in self.metrics:
            if self.fake.n < 10:
                raise MetricError(f"the Inception Score uses 10 splits and needs at least 10 images, got {self.fake.n}")
            values["isc_mean"], values["isc_std"] = self.isc.result()
            protocol["isc_splits"] = ("torch-fidelity: 10 splits of a permutation seeded 2020" if
                                      self.fake.n == self.num_fake_announced else
                                      f"10 seeded splits over {self.num_fake_announced} announced, "
                                      f"{self.fake.n} read (unreadable images left out)")
        if {"kid", "prc"} & set(self.metrics):
            real = self.reference_features if self.reference_features is not None else (
                self.real.store.array() if self.real.n else None)
            if real is None:
                raise MetricError("KID and precision/recall need real images or reference features")
            values.update(self._pairwise(self.fake.store.array(), real, protocol))
        bad = {k: v for k, v in values.items() if not np.isfinite(v)}
        if bad:  # never hand on a NaN or inf as if it were a measurement
            raise MetricError(f"metric values are not finite: {bad}")
        return MetricsResult(_prefixed(values, self.info.standin), protocol, _prefixed(spreads, self.info.standin))

    def _sfid(self, values: dict, protocol: dict) -> None:
        """sFID against the real images' spatial statistics or the reference file's mu_s/sigma_s (when it has them)."""
        if self.reference is not None:
            if self.reference_spatial is None:
                protocol["sfid_skipped"] = f"{self.reference} holds no mu_s/sigma_s"
                return
            mu2, sigma2 = self.reference_spatial
        elif self.real.n:
            mu2, sigma2 = self.real.spatial_statistics()
        else:
            raise MetricError("sFID needs real images or reference statistics")
        values["sfid"] = frechet_distance(*self.fake.spatial_statistics(), mu2, sigma2)

    def _bootstrap_fid(self, mu2: np.ndarray, sigma2: np.ndarray) -> dict:
        """FID of each bootstrap replicate (the real set's replicate of the same images when FID is against
        images, the fixed statistics otherwise): their std is the FID's sampling uncertainty at this N."""
        fids = []
        for r in range(self.bootstrap):
            if self.real.n:
                mu2, sigma2 = self.real.bootstrap.statistics(r)
            fids.append(frechet_distance(*self.fake.bootstrap.statistics(r), mu2, sigma2))
        fids = np.asarray(fids)
        if not np.isfinite(fids).all():
            raise MetricError(f"bootstrap FIDs are not finite: {fids.tolist()}")
        return {"std": float(fids.std(ddof=1)), "n": self.bootstrap, "mean": float(fids.mean()),
                "method": "poisson-bootstrap over images"}

    def fake_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of the fake set's pool features so far (what `titok-bench stats` writes); under torchrun
        the whole set's on every rank after reduce()."""
        self._check_whole("fake_statistics()")
        return self.fake.statistics()

    def fake_spatial_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu_s, sigma_s) of the fake set's sFID features (what `titok-bench stats` writes beside mu, sigma)."""
        self._check_whole("fake_spatial_statistics()")
        return self.fake.spatial_statistics()

    def _check_whole(self, what: str) -> None:
        if self.dist.world_size > 1 and not self.reduced:
            raise MetricError(f"{what} before reduce(): rank {self.dist.rank} holds only its share of the images")

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def settings(self) -> dict:
        """What a saved state must have been made under to be continued here."""
        return {"version": STATE_VERSION, "metrics": sorted(self.metrics), "num_fake": self.num_fake_announced,
                "bootstrap": self.bootstrap,
                "dims": {"pool": FEATURE_DIM, "spatial": SPATIAL_DIM, "logits": LOGITS_DIM},
                "reference": self._reference_sha256,
                "extractor": self.info.weights_sha256, "keep_fake_features": bool(self.kept_fake_features)}

    def state_dict(self) -> dict:
        """Everything added so far (on this rank): numpy arrays and plain numbers/strings, `np.savez`-able (no
        pickle); `settings` (a JSON string) names what it was made under. Refused after reduce() under torchrun
        (the sums are then the whole set's, not this rank's) and where the real set's running sha256 digest has
        started (Python's hashlib cannot save it: checkpoint runs that score against a statistics file)."""
        if self.reduced:
            raise MetricError("state_dict() after reduce(): the state would count the other ranks' images again")
        state = {"settings": json.dumps(self.settings(), sort_keys=True), "rank": self.dist.rank,
                 "world_size": self.dist.world_size}
        state.update(self.fake.state("fake."))
        state.update(self.real.state("real."))
        if self.isc is not None:
            state.update({"isc.plogp": self.isc.plogp.copy(), "isc.psum": self.isc.psum.copy(),
                          "isc.count": self.isc.count.copy(), "isc.seen": self.isc.seen})
        return state

    def load_state_dict(self, state) -> None:
        """Continue from `state_dict()`'s dict (or the np.load of its np.savez): a state made under other settings
        is refused with an InputError naming each difference; nothing changes unless the whole state loads."""
        self._check_open("load_state_dict()")
        state = {k: (v[()] if isinstance(v, np.ndarray) and v.ndim == 0 else v) for k, v in dict(state).items()}
        if "settings" not in state:
            raise MetricError(f"not an InceptionMetrics state (no settings; keys {sorted(state)[:8]})")
        try:
            theirs = json.loads(str(state["settings"]))
        except ValueError:
            raise MetricError("an InceptionMetrics state whose settings are not JSON") from None
        ours = self.settings()
        differ = [f"{k}: state {theirs.get(k)!r}, here {ours[k]!r}" for k in ours if theirs.get(k) != ours[k]]
        if differ:
            raise MetricError("the saved metrics state was made under other settings: " + "; ".join(differ))
        fake = _FeatureSums.from_state(self.fake, state, "fake.")
        real = _FeatureSums.from_state(self.real, state, "real.")
        if self.isc is not None:
            isc = {k: _state_array(state, f"isc.{k}", getattr(self.isc, k)) for k in ("plogp", "psum", "count")}
            seen = _state_int(state, "isc.seen")
            self.isc.plogp, self.isc.psum, self.isc.count, self.isc.seen = isc["plogp"], isc["psum"], isc["count"], seen
        self.fake, self.real = fake, real

    def _pairwise(self, f_fake: np.ndarray, f_real: np.ndarray, protocol: dict) -> dict[str, float]:
        from torch_fidelity.metric_kid import kid_features_to_metric

        values = {}
        if "kid" in self.metrics:
            n = min(self.kid_subset_size, len(f_fake), len(f_real))
            r = kid_features_to_metric(torch.from_numpy(f_fake).double(), torch.from_numpy(f_real).double(),
                                       kid_subset_size=n, kid_subsets=KID_SUBSETS, verbose=False, rng_seed=KID_SEED,
                                       kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                       kid_kernel_poly_coef0=1)
            values["kid_mean"], values["kid_std"] = (r["kernel_inception_distance_mean"],
                                                     r["kernel_inception_distance_std"])
            protocol["kid_subset_size"] = n
            protocol["conventions"]["kid"] = {**CONVENTIONS["kid"], "subset_size": n}
        if "prc" in self.metrics:
            values["precision"], values["recall"] = precision_recall(torch.from_numpy(f_fake),
                                                                     torch.from_numpy(f_real))
        return values


STATE_VERSION = 1


def _state_int(state: dict, key: str) -> int:
    if key not in state:
        raise MetricError(f"the saved metrics state lacks {key}")
    return int(state[key])


def _state_array(state: dict, key: str, like: np.ndarray) -> np.ndarray:
    """state[key] as an array of `like`'s shape and dtype, or a MetricError naming what is wrong."""
    if key not in state:
        raise MetricError(f"the saved metrics state lacks {key}")
    value = np.asarray(state[key])
    if value.shape != like.shape:
        raise MetricError(f"the saved metrics state's {key} has shape {value.shape}, expected {like.shape}")
    return value.astype(like.dtype, copy=True)


class _FeatureSums:
    """One image set's pool features: running mean/covariance, a digest, and the features where pairs need them.

    The digest (a sha256 of the float32 pool features in position order) is hashed as the images come in one
    process (`digest`), or, under torchrun (`keep_for_digest`), from the features every rank keeps and rank 0
    gathers at reduce()."""

    def __init__(self, gaussian: bool, keep: bool, bootstrap: int = 0, spatial: bool = False, *, digest: bool = True,
                 keep_for_digest: bool = False):
        self.gaussian = RunningGaussian(FEATURE_DIM) if gaussian else None
        self.spatial = RunningGaussian(SPATIAL_DIM) if spatial else None
        self.bootstrap = BootstrapGaussians(FEATURE_DIM, bootstrap) if gaussian and bootstrap else None
        self.store = FeatureStore() if keep or keep_for_digest else None
        self.keep_for_digest = keep_for_digest
        self.hash = hashlib.sha256() if digest else None
        self.gathered_digest: str | None = None
        self.n = 0
        self.following = 0  # the position after the highest one added

    def positions(self, indices, count: int) -> np.ndarray:
        """The positions of a batch of `count` images (checked), `indices` or the next `count` in order."""
        try:
            return batch_positions(indices, self.following, count)
        except ValueError as exc:
            raise MetricError(str(exc)) from None

    def update(self, pool: np.ndarray, spatial: np.ndarray | None = None, positions=None) -> None:
        positions = self.positions(positions, pool.shape[0])
        if self.hash is not None and positions.size and (
                positions.min() < self.following or (np.diff(positions) <= 0).any()):
            # A running sha256 cannot be reordered afterwards: hashed as they come, features added out of order
            # would give another digest for the same set (under torchrun it is made from gathered features).
            raise MetricError(f"real images added out of position order in one process (positions {positions.min()}"
                              f"..{positions.max()} after {self.following - 1}): the real set's digest is hashed as "
                              f"they come, so add them in increasing position order (gaps are fine)")
        self.n += pool.shape[0]
        if positions.size:
            self.following = max(self.following, int(positions.max()) + 1)
        if self.spatial is not None:
            self.spatial.update(spatial)
        if self.hash is not None:
            self.hash.update(np.ascontiguousarray(pool, dtype=np.float32).tobytes())
        if self.gaussian is not None:
            self.gaussian.update(pool)
        if self.bootstrap is not None:
            self.bootstrap.update(pool, positions)
        if self.store is not None:
            self.store.update(pool, positions)

    def reduce(self) -> None:
        """Collective (bench.metrics.streaming's reduce of each part); on rank 0 the digest of the gathered features."""
        total = distributed.sum_arrays({"n": np.array([self.n], np.int64)})
        self.n = int(total["n"][0])
        for part in (self.gaussian, self.spatial, self.bootstrap, self.store):
            if part is not None:
                part.reduce()
        if self.keep_for_digest and distributed.current().is_main:
            self.gathered_digest = hashlib.sha256(np.ascontiguousarray(self.store.array()).tobytes()).hexdigest()

    def state(self, prefix: str) -> dict:
        if self.hash is not None and self.n:
            raise MetricError("the real images' digest is a running sha256 that cannot be saved part-way; "
                              "checkpoint runs that score against a statistics file")
        out = {prefix + "n": self.n, prefix + "following": self.following}
        for name in ("gaussian", "spatial"):
            g = getattr(self, name)
            if g is not None:
                out.update({f"{prefix}{name}.n": g.n, f"{prefix}{name}.mean": g.mean.copy(),
                            f"{prefix}{name}.m2": g.m2.copy()})
        if self.bootstrap is not None:
            b = self.bootstrap
            out.update({prefix + "bootstrap.weight": b.weight.copy(), prefix + "bootstrap.mean": b.mean.copy(),
                        prefix + "bootstrap.m2": b.m2.copy(), prefix + "bootstrap.seen": b.seen})
        if self.store is not None:
            out.update({prefix + "store.indices": self.store.indices(), prefix + "store.features": self.store.array()})
        return out

    @classmethod
    def from_state(cls, like: _FeatureSums, state: dict, prefix: str) -> _FeatureSums:
        """A new set like `like` (same parts) holding the state's sums."""
        out = cls.__new__(cls)
        out.__dict__.update(like.__dict__)
        out.n, out.following = _state_int(state, prefix + "n"), _state_int(state, prefix + "following")
        for name in ("gaussian", "spatial"):
            g = getattr(like, name)
            if g is not None:
                new = RunningGaussian(g.mean.shape[0])
                new.mean = _state_array(state, f"{prefix}{name}.mean", g.mean)
                new.m2 = _state_array(state, f"{prefix}{name}.m2", g.m2)
                new.n = _state_int(state, f"{prefix}{name}.n")
                setattr(out, name, new)
        if like.bootstrap is not None:
            b = BootstrapGaussians(like.bootstrap.mean.shape[1], like.bootstrap.replicates, like.bootstrap.seed)
            for key in ("weight", "mean", "m2"):
                setattr(b, key, _state_array(state, f"{prefix}bootstrap.{key}", getattr(like.bootstrap, key)))
            b.seen = _state_int(state, prefix + "bootstrap.seen")
            out.bootstrap = b
        if like.store is not None:
            for key in ("store.indices", "store.features"):
                if prefix + key not in state:
                    raise MetricError(f"the saved metrics state lacks {prefix + key}")
            indices = np.asarray(state[prefix + "store.indices"], np.int64)
            features = np.asarray(state[prefix + "store.features"], np.float32)
            if features.shape[0] != indices.shape[0] or (indices.size and features.shape[1] != FEATURE_DIM):
                raise MetricError(f"the saved metrics state's {prefix}store holds {features.shape} features for "
                                  f"{indices.shape[0]} positions")
            out.store = FeatureStore()
            if indices.size:
                out.store.update(features, indices)
        if out.hash is not None:
            out.hash = hashlib.sha256()
        return out

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise MetricError(f"FID statistics need at least 2 samples, got {self.n}")
        return self.gaussian.statistics()

    def spatial_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise MetricError(f"sFID statistics need at least 2 samples, got {self.n}")
        return self.spatial.statistics()

    def digest(self) -> str:
        return (self.gathered_digest or self.hash.hexdigest())[:16]


def compute_image_metrics(fake, real=None, *, inception_weights=None, metrics=("fid", "isc"), batch_size: int = 64,
                          device="cpu", progress: bool = False, kid_subset_size: int = 1000,
                          num_workers: int | None = None, bootstrap: int = 0) -> MetricsResult:
    """Metrics of `fake` images (uint8 tensor or Dataset) against `real` (images, or a statistics .npz).

    Keys: fid, sfid, isc_mean, isc_std, kid_mean, kid_std, precision, recall (each `standin_`-prefixed with a
    stand-in Inception; conventions in the module docstring and the protocol's `conventions`). The protocol
    records the extractor and its weights hash, the resize mode, the reference and the sample counts, so two
    numbers are only compared when they were measured the same way. Streams: images pass through in batches
    (decoded in DataLoader workers) and only running statistics stay.

    Under torchrun every rank calls it: each reads only its global batches of each set (bench.metrics.distributed.
    rank_batches: the same batches of `batch_size` images as one process reads), the ranks' sums are combined
    (InceptionMetrics.reduce), rank 0 computes the metrics and every rank returns the same result. An error on any
    rank (an unreadable image under strict, too few images) is raised on every rank (distributed.RankFailure,
    RankInputError for bad input), naming the rank. An image's position is its index in the data set, so a file
    skipped as unreadable leaves its place empty rather than shifting the images after it.
    """
    ctx = distributed.current()
    stats_file = real if isinstance(real, (str, Path)) else None
    show = progress and ctx.is_main
    with distributed.together("Inception features"):
        acc = InceptionMetrics(metrics, inception_weights=inception_weights, device=device, reference=stats_file,
                               num_fake=len(fake), kid_subset_size=kid_subset_size, batch_size=batch_size,
                               bootstrap=bootstrap)
        for batch, positions in rank_image_batches(fake, batch_size, ctx, show, "inception (fake)", num_workers):
            acc.add_fake(batch, positions)
        if real is not None and stats_file is None:
            for batch, positions in rank_image_batches(real, batch_size, ctx, show, "inception (real)", num_workers):
                acc.add_real(batch, positions)
    acc.reduce()
    result = None
    with distributed.together("metrics"):
        if ctx.is_main:
            result = acc.result()
    return distributed.broadcast_from_main(result)
