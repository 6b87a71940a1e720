"""The Inception Score written out from its definition, for tests to compare the streamed one against.

torch-fidelity's `isc_features_to_metric`: the set is shuffled by a permutation seeded `seed` and cut into `splits`
consecutive chunks; each chunk's score is exp(mean over its images of KL(p(y|x) || p_chunk(y))). Written here once,
independently of bench.metrics.streaming, so the tests that check it share one reference."""

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
