"""Edges of the streamed Inception Score that the torch-fidelity comparison does not reach: the split assignment's
defaults and seed, a class no image gives any probability to (0 log 0 = 0), and an empty split. Expected values are
written here: torch-fidelity's split rule (a permutation seeded 2020, cut into 10 consecutive chunks) and the
score's definition, exp(mean over a split of KL(p(y|x) || p_split(y))). These killed mutmut survivors of
isc_split_of_index and RunningInceptionScore (see the mutation report of 2026-12-06)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.metrics.streaming import RunningInceptionScore, isc_split_of_index


def _split_rule(n: int, splits: int, seed: int) -> np.ndarray:
    """Image perm[j] at shuffled position j belongs to chunk j * splits // n ... written as chunk boundaries."""
    perm = np.random.RandomState(seed).permutation(n)
    split_of = np.empty(n, np.int64)
    for s in range(splits):
        split_of[perm[s * n // splits : (s + 1) * n // splits]] = s
    return split_of


def test_the_split_of_each_image_defaults_to_torch_fidelitys_ten_splits_seeded_2020():
    assert np.array_equal(isc_split_of_index(103), _split_rule(103, 10, 2020))
    assert np.array_equal(isc_split_of_index(103, 4, 7), _split_rule(103, 4, 7))
    assert isc_split_of_index(103).dtype == np.int64


def _score(p: np.ndarray, split_of: np.ndarray, splits: int) -> tuple[float, float]:
    scores = []
    for s in range(splits):
        ps = p[split_of == s]
        q = ps.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(ps > 0, ps * (np.log(ps) - np.log(q)), 0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def test_a_class_with_zero_probability_counts_as_zero_and_a_seed_is_passed_on():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (40, 6))
    logits[:, 5] = -1e4  # softmax gives exactly 0 for this class in float64
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert (p[:, 5] == 0).all()
    acc = RunningInceptionScore(40, 6, splits=4, rng_seed=7)
    acc.update(torch.from_numpy(logits[:25]))
    acc.update(torch.from_numpy(logits[25:]))
    want = _score(p, _split_rule(40, 4, 7), 4)
    assert acc.result() == pytest.approx(want, rel=1e-12)
    assert want[0] > 1.5 and want[1] > 0  # far from the trivial score of 1


def test_an_empty_split_is_an_error_that_says_so():
    acc = RunningInceptionScore(5, 3)
    acc.update(torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"an Inception Score split is empty \(\[0, 1, 0, 1, 0, 1, 0, 1, 0, 1\]"):
        acc.result()
