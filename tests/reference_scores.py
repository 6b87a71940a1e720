"""Inception-based scores written out from their definitions, for tests to compare the harness's numbers against.

Each is written here once, independently of bench.metrics, in the plainest form of its paper or reference
implementation, so a test's expectation never comes from the code it checks:
- the Inception Score as torch-fidelity's `isc_features_to_metric` defines it (seeded permutation, 10 chunks);
- the Fréchet distance through the symmetric form tr sqrt(S1^1/2 S2 S1^1/2) (eigh, not scipy's sqrtm, which the
  harness uses through torch-fidelity: the two agree to float noise on well-conditioned covariances);
- a bootstrap replicate's weighted mean and covariance (frequency weights, N - 1);
- KID as the unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3, for a subset size equal to both
  sets' sizes (every subset is then a permutation of the whole set, so torch-fidelity's mean is this one number);
- improved precision/recall (Kynkäänniemi et al. 2019): k-th neighbour radii, self included at distance 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def inception_score_by_definition(logits, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """(mean, std) over the splits, from (N, C) logits (a tensor or an array; computed in float64)."""
    logits = torch.as_tensor(logits).double()
    n = logits.shape[0]
    shuffled = logits[np.random.RandomState(seed).permutation(n)]
    scores = []
    for i in range(splits):
        chunk = shuffled[i * n // splits : (i + 1) * n // splits]
        p, log_p = chunk.softmax(1), chunk.log_softmax(1)
        q = p.mean(0, keepdim=True)
        scores.append(math.exp(float((p * (log_p - q.log())).sum(1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


def frechet_by_definition(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2), the last term from the eigenvalues of S1^1/2 S2 S1^1/2."""
    mu1, mu2, sigma1, sigma2 = (np.asarray(a, np.float64) for a in (mu1, mu2, sigma1, sigma2))
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    root_trace = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * root_trace)


def fid_of_features(a, b) -> float:
    """The Fréchet distance between two (N, D) feature sets (np.cov's N - 1 normalisation)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return frechet_by_definition(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def weighted_statistics(x, w) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of (N, D) points where point i counts w[i] times: np.cov's N - 1 normalisation with frequency
    weights (a bootstrap replicate's statistics)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    mu = (w[:, None] * x).sum(0) / w.sum()
    xc = x - mu
    return mu, (w[:, None] * xc).T @ xc / (w.sum() - 1)


def kid_by_definition(fake, real) -> float:
    """Unbiased MMD^2 of two equal-sized (m, d) sets with the kernel k(x, y) = (x.y / d + 1)^3."""
    x, y = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    m, d = x.shape
    if y.shape != (m, d):
        raise ValueError("written for two sets of the same size")

    def kernel(a, b):
        return (a @ b.T / d + 1) ** 3

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / (m * m))


def precision_recall_by_definition(fake, real, k: int = 3) -> tuple[float, float]:
    """(precision, recall): the share of fake points inside some real point's k-NN ball, and the reverse."""
    fake, real = np.asarray(fake, np.float64), np.asarray(real, np.float64)

    def dist(a, b):
        return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0))

    r_real, r_fake = np.sort(dist(real, real), 1)[:, k], np.sort(dist(fake, fake), 1)[:, k]
    return (float((dist(fake, real) <= r_real[None, :]).any(1).mean()),
            float((dist(real, fake) <= r_fake[None, :]).any(1).mean()))
