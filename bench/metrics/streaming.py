"""Streaming accumulators: metrics over 50,000 images in memory that does not grow with the image count.

Each accumulator takes one batch at a time and keeps only sums and counts; the image set is never held.
- `RunningGaussian`: mean and covariance of Inception pool features (FID's statistics), merged batch by batch
  with Chan et al.'s pairwise update in float64, equal to numpy's `np.cov` (torch-fidelity's estimator) to
  float64 rounding, without keeping the (N, 2048) features.
- `RunningInceptionScore`: torch-fidelity's Inception Score (10 splits of a seeded permutation, seed 2020)
  from per-split sums: for a split s, mean_x KL(p(y|x) || q_s) = mean_x sum_y p log p - sum_y q_s log q_s,
  so the split needs sum_x sum_y p log p, sum_x p (1008 numbers) and its count. The permutation of the N
  indices is drawn as torch-fidelity draws it, which needs N up front (known for generated sets and folders).
- `FeatureStore`: KID and precision/recall compare every feature with every other, so they cannot stream;
  with those metrics the pool features are kept as float32 (8 KB per image, 400 MB at 50,000): the one
  documented exception, paid only when KID or precision/recall is asked for.
- `BootstrapGaussians`: R Poisson-bootstrap replicates of `RunningGaussian`, streamed, for an uncertainty of
  FID (opt-in: R times the covariance work and R x 32 MB).
- `RunningPixelMetrics`: PSNR and SSIM sums over image pairs.
- `CodebookUsage`: code counts of a VQ tokenizer, reported as the TiTok release's evaluator does
  (bytedance/1d-tokenizer `evaluator/evaluator.py`: usage = distinct codes / codebook size, entropy in bits
  of the code frequencies with its 1e-8), plus the perplexity 2**entropy.

Under torchrun each rank streams its own images (bench.metrics.distributed.rank_batches) and every accumulator's
`reduce()` combines the ranks' sums into the whole set's: a COLLECTIVE, called once by every rank after its last
update, and the identity (no change at all) in one process. Where an image's place in the set matters (the
Inception Score's split, the bootstrap's weights, the order of kept features) the updates take `indices`, the
images' positions in the whole set, so a rank's batch lands where it lands in one process.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.metrics import distributed
from bench.metrics.pixel import psnr_per_image, ssim_per_image


class RunningGaussian:
    """Mean and sample covariance of (B, D) feature batches, streamed (float64)."""

    def __init__(self, dim: int):
        self.n = 0
        self.mean = np.zeros(dim, np.float64)
        self.m2 = np.zeros((dim, dim), np.float64)  # sum of outer products of deviations from the mean

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        nb = x.shape[0]
        if nb == 0:
            return
        mean_b = x.mean(axis=0)
        xc = x - mean_b
        m2_b = xc.T @ xc  # (D, D)
        delta = mean_b - self.mean
        n = self.n + nb
        self.m2 += m2_b + np.outer(delta, delta) * (self.n * nb / n)
        self.mean += delta * (nb / n)
        self.n = n

    def reduce(self) -> None:
        """Collective: every rank's (n, mean, m2) become the whole set's, on every rank (Chan's parallel merge
        written as sums: n and n x mean add up; with the whole set's mean mu, each rank's m2 + n (mean - mu)
        (mean - mu)^T adds up to the whole m2, with no cancellation). One process: unchanged."""
        if distributed.current().world_size == 1:
            return
        self.n, self.mean, self.m2 = _merge_weighted(np.float64(self.n), self.mean, self.m2)
        self.n = int(self.n)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu (D,), sigma (D, D)) with the N-1 normalisation of `np.cov`."""
        if self.n < 2:
            raise ValueError(f"covariance needs at least 2 samples, got {self.n}")
        return self.mean.copy(), self.m2 / (self.n - 1)


def _merge_weighted(weight, mean, m2):
    """Sums over the ranks of weighted Gaussians: (weight (...), mean (..., D), m2 (..., D, D)) of this rank ->
    the whole set's, for one Gaussian or a stack of them (bootstrap replicates). A stack whose whole weight is 0
    keeps mean 0 and m2 0."""
    weight = np.asarray(weight, np.float64)
    total = distributed.sum_arrays({"weight": np.atleast_1d(weight), "sum": mean * weight[..., None]})
    whole = total["weight"].reshape(weight.shape)
    mu = total["sum"] / np.maximum(whole, 1.0)[..., None]  # a weight is 0 (and its sum 0) or a count >= 1
    d = mean - mu
    m2 = distributed.sum_arrays({"m2": m2 + d[..., :, None] * d[..., None, :] * weight[..., None, None]})["m2"]
    return whole, mu, m2


BOOTSTRAP_STREAM = 2  # counter-hash stream of the bootstrap weights (sampling noise uses streams 0, 1 and 3)
# P(K <= k) for K ~ Poisson(1), k = 0..11; a uniform above the last entry (p < 2e-9) counts as 12.
_POISSON1_CDF = np.cumsum([math.exp(-1) / math.factorial(k) for k in range(12)])


def poisson1_weights(first_index: int, count: int, replicates: int, seed: int = 0) -> np.ndarray:
    """(replicates, count) Poisson(1) counts for the images first_index .. first_index + count - 1.

    Each count is a function of (seed, image index, replicate) only, drawn from the counter hash of the sampling
    noise (titok.generators.noise): the replicates do not depend on how the set was batched, sharded or ordered
    in time, and a rerun gives the same uncertainty. Poisson(1) counts are the streaming form of resampling with
    replacement (Hanley & MacGibbon 2006; Chamandy et al. 2012, "the Poisson bootstrap"): each image enters a
    replicate K ~ Poisson(1) times, so no replicate needs the whole set at once.
    """
    return poisson1_weights_at(range(first_index, first_index + count), replicates, seed)


def poisson1_weights_at(indices, replicates: int, seed: int) -> np.ndarray:
    """(replicates, len(indices)) Poisson(1) counts of the images at these positions (`poisson1_weights`)."""
    from titok.generators.noise import counter_uniforms, seed_tensor

    seeds = seed_tensor([(seed << 32) + int(i) for i in indices], "cpu")
    u = counter_uniforms(seeds, BOOTSTRAP_STREAM, 0, 1, replicates)[:, 0, :].double().numpy()  # (count, R)
    return np.searchsorted(_POISSON1_CDF, u, side="right").T.astype(np.float64)


class BootstrapGaussians:
    """R bootstrap replicates of a streamed mean and covariance: replicate r weights image i by a Poisson(1)
    count (`poisson1_weights`), and keeps the weighted Chan merge of `RunningGaussian`.

    The sets an FID compares are resampled by image index: a reconstruction and its original share their index
    and so their weight (a paired bootstrap, as rFID's two sets are paired); a set compared with a statistics file
    is resampled alone (the file is fixed). The spread of the replicates' FIDs estimates the sampling error of the
    FID from this many images; it says nothing of FID's bias at small N (see README "Regression tracking").
    Cost: per batch of B, R weighted (D, B) x (B, D) products; memory R x D x D float64 (32 MB each at D=2048).
    """

    def __init__(self, dim: int, replicates: int, seed: int = 0):
        if replicates < 2:
            raise ValueError(f"a bootstrap needs at least 2 replicates, got {replicates}")
        self.replicates, self.seed, self.seen = replicates, seed, 0
        self.weight = np.zeros(replicates, np.float64)
        self.mean = np.zeros((replicates, dim), np.float64)
        self.m2 = np.zeros((replicates, dim, dim), np.float64)

    def update(self, x: np.ndarray, indices=None) -> None:
        """x (B, D) of the images at positions `indices` (default: the B positions after the last update's)."""
        x = np.asarray(x, np.float64)
        nb = x.shape[0]
        if nb == 0:
            return
        indices = batch_positions(indices, self.seen, nb)
        weights = poisson1_weights_at(indices, self.replicates, self.seed)  # (R, B)
        self.seen = int(indices.max()) + 1
        for r, w in enumerate(weights):
            wb = w.sum()
            if wb == 0:
                continue
            mean_b = w @ x / wb
            xc = x - mean_b
            m2_b = (xc * w[:, None]).T @ xc
            delta = mean_b - self.mean[r]
            total = self.weight[r] + wb
            self.m2[r] += m2_b + np.outer(delta, delta) * (self.weight[r] * wb / total)
            self.mean[r] += delta * (wb / total)
            self.weight[r] = total

    def reduce(self) -> None:
        """Collective: each replicate's weight, mean and m2 become the whole set's (as `RunningGaussian.reduce`)."""
        if distributed.current().world_size == 1:
            return
        self.weight, self.mean, self.m2 = _merge_weighted(self.weight, self.mean, self.m2)

    def statistics(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of replicate r, with the frequency-weight form of `np.cov`'s N-1 normalisation."""
        if self.weight[r] < 2:
            raise ValueError(f"bootstrap replicate {r} drew fewer than 2 images")
        return self.mean[r].copy(), self.m2[r] / (self.weight[r] - 1)


def batch_positions(indices, following: int, count: int) -> np.ndarray:
    """(count,) int64 positions: `indices` checked (count of them, none negative), or following .. + count - 1."""
    if indices is None:
        return np.arange(following, following + count, dtype=np.int64)
    out = np.asarray(indices)
    if out.shape != (count,) or (count and (not np.issubdtype(out.dtype, np.integer) or out.min() < 0)):
        raise ValueError(f"indices must be {count} non-negative integer positions, one per image of the batch, got "
                         f"{out.dtype} of shape {out.shape}")
    return out.astype(np.int64)


def isc_split_of_index(num_images: int, splits: int = 10, rng_seed: int = 2020) -> np.ndarray:
    """(N,) split id of each image index, as torch-fidelity's `isc_features_to_metric` assigns them."""
    perm = np.random.RandomState(rng_seed).permutation(num_images)
    position_split = np.empty(num_images, np.int64)
    for i in range(splits):
        position_split[i * num_images // splits : (i + 1) * num_images // splits] = i
    split_of = np.empty(num_images, np.int64)
    split_of[perm] = position_split  # the image at shuffled position j is perm[j]
    return split_of


class RunningInceptionScore:
    """torch-fidelity's Inception Score (splits, shuffle, seed) from streamed logits of a set of known size."""

    def __init__(self, num_images: int, num_classes: int, splits: int = 10, rng_seed: int = 2020):
        self.num_images, self.splits = num_images, splits
        self.split_of = isc_split_of_index(num_images, splits, rng_seed)
        self.plogp = np.zeros(splits, np.float64)  # per split: sum over images of sum_y p log p
        self.psum = np.zeros((splits, num_classes), np.float64)  # per split: sum over images of p
        self.count = np.zeros(splits, np.int64)
        self.seen = 0

    def update(self, logits: torch.Tensor, indices=None) -> None:
        """logits (B, C) of the images at positions `indices` of the set (default: the next B, in its order)."""
        logits = logits.double().cpu()
        indices = batch_positions(indices, self.seen, logits.shape[0])
        if indices.size and indices.max() >= self.num_images:
            raise ValueError(f"more images than the {self.num_images} announced (position {int(indices.max())})")
        self.seen = max(self.seen, int(indices.max()) + 1) if indices.size else self.seen
        p, log_p = logits.softmax(dim=1), logits.log_softmax(dim=1)
        plogp = (p * log_p).sum(dim=1).numpy()  # (B,)
        split = self.split_of[indices]
        np.add.at(self.plogp, split, plogp)
        np.add.at(self.psum, split, p.numpy())
        np.add.at(self.count, split, 1)

    def reduce(self) -> None:
        """Collective: the per-split sums and counts of every rank added up (every rank gets them)."""
        if distributed.current().world_size == 1:
            return
        total = distributed.sum_arrays({"plogp": self.plogp, "psum": self.psum, "count": self.count})
        self.plogp, self.psum, self.count = total["plogp"], total["psum"], total["count"]
        self.seen = int(self.count.sum())

    def result(self) -> tuple[float, float]:
        """(mean, std) over the splits, as torch-fidelity reports them."""
        if (self.count == 0).any():
            raise ValueError(f"an Inception Score split is empty ({self.count.tolist()} images per split)")
        scores = []
        for s in range(self.splits):
            q = self.psum[s] / self.count[s]
            q_log_q = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0).sum()
            scores.append(math.exp(self.plogp[s] / self.count[s] - q_log_q))
        return float(np.mean(scores)), float(np.std(scores))


class FeatureStore:
    """Pool features kept as float32 with their images' positions, for the metrics that need all pairs (KID,
    precision/recall). `array()` is in position order, which KID's seeded subsets depend on."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.positions: list[np.ndarray] = []
        self.following = 0

    def update(self, x: np.ndarray, indices=None) -> None:
        x = np.asarray(x, np.float32)
        indices = batch_positions(indices, self.following, x.shape[0])
        self.parts.append(x)
        self.positions.append(indices)
        if indices.size:
            self.following = max(self.following, int(indices.max()) + 1)

    def indices(self) -> np.ndarray:
        """(N,) int64 positions of `array()`'s rows."""
        return np.sort(np.concatenate(self.positions)) if self.positions else np.zeros(0, np.int64)

    def array(self) -> np.ndarray:
        if not self.parts:
            return np.zeros((0, 0), np.float32)
        order = np.argsort(np.concatenate(self.positions), kind="stable")
        return np.concatenate(self.parts)[order]

    def reduce(self) -> None:
        """Collective: every rank's features gathered to rank 0 (ordered by position there); the other ranks
        keep none."""
        if distributed.current().world_size == 1:
            return
        gathered = distributed.gather_to_main((self.indices(), self.array()))
        self.parts, self.positions = [], []
        if gathered is not None:
            self.positions = [i for i, _ in gathered if len(i)]
            self.parts = [f for i, f in gathered if len(i)]


class RunningPixelMetrics:
    """Sums of per-image PSNR (dB) and SSIM between uint8 (B, 3, H, W) batches; means at the end."""

    def __init__(self, metrics: tuple[str, ...]):
        self.metrics = tuple(m for m in metrics if m in ("psnr", "ssim"))
        self.sums = dict.fromkeys(self.metrics, 0.0)
        self.n = 0

    def update(self, recon: torch.Tensor, real: torch.Tensor) -> None:
        if "psnr" in self.sums:
            self.sums["psnr"] += float(psnr_per_image(recon, real).sum())
        if "ssim" in self.sums:
            self.sums["ssim"] += float(np.sum(ssim_per_image(recon, real)))
        self.n += real.shape[0]

    def reduce(self) -> None:
        """Collective: every rank's sums and count added up (every rank gets them)."""
        if distributed.current().world_size == 1:
            return
        total = distributed.sum_arrays({"sums": np.array([self.sums[k] for k in self.metrics], np.float64),
                                        "n": np.array([self.n], np.int64)})
        self.sums = {k: float(v) for k, v in zip(self.metrics, total["sums"], strict=True)}
        self.n = int(total["n"][0])

    def result(self) -> dict[str, float]:
        return {k: v / self.n for k, v in self.sums.items()} if self.n else {}


class CodebookUsage:
    """How a VQ tokenizer uses its codebook over a data set, from streamed code batches."""

    def __init__(self, codebook_size: int):
        self.counts = torch.zeros(codebook_size, dtype=torch.float64)

    def update(self, codes: torch.Tensor) -> None:
        self.counts += torch.bincount(codes.reshape(-1).cpu(), minlength=self.counts.numel()).double()

    def reduce(self) -> None:
        """Collective: every rank's code counts added up (every rank gets them)."""
        if distributed.current().world_size == 1:
            return
        self.counts = torch.from_numpy(distributed.sum_arrays({"counts": self.counts.numpy()})["counts"])

    def result(self) -> dict[str, float]:
        total = self.counts.sum()
        if total == 0:
            return {}
        probs = self.counts / total
        entropy = float((-torch.log2(probs + 1e-8) * probs).sum())  # the release's formula, in bits
        return {"codebook_usage": float((self.counts > 0).double().mean()), "codebook_entropy_bits": entropy,
                "codebook_perplexity": 2.0**entropy}
