"""The sampler's randomness checked as statistics, through the public sampler (`sample_tokens`): the drawn tokens
against softmax(logits / T) (chi-square, every token-sampling mode and noise scheme, several temperatures), the
choice noise against the Gumbel distribution at its annealed temperature (Kolmogorov-Smirnov, and the positions it
keeps against the Gumbel-max law), and the guidance ramp and mask schedules against closed forms written here.

The network is a stand-in returning a fixed logits table, so every expected distribution is a formula of that
table. Seeds are fixed (the tests are deterministic); a test fails at p < 1e-6, and each case draws enough tokens
that a distribution a few percent off fails (checked on the same counts in `_assert_draws`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from titok.generators import sampler
from titok.generators.config import SamplingConfig
from titok.generators.noise import HASH_NOISE_SCHEME, NOISE_SCHEME, seed_tensor, token_uniforms
from titok.generators.sampler import choice_noise, guidance_scale_at, masked_count, sample_tokens

SCHEMES = [NOISE_SCHEME, HASH_NOISE_SCHEME]
P_FAIL = 1e-6
BASE = torch.tensor([1.2, -0.3, 0.5, 2.0, -1.0, 0.0, 0.9, -2.2])  # (K,) the codes' logits: no two equal
UNCOND = torch.tensor([0.4, 0.3, -0.5, 1.5, 0.2, -0.8, 1.1, 0.0])  # (K,) the unconditional branch's
N_POS = 12
OFFSET = 100.0  # per position: softmax is shift-invariant, but the confidence ranks positions by it (see below)


class TableLogits(nn.Module):
    """A generator stand-in whose logits are fixed tables, whatever the tokens: `cond` (N, K) for every class,
    `uncond` (N, K) for the null class."""

    has_null_class = True

    def __init__(self, cond: torch.Tensor, uncond: torch.Tensor | None = None):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # the sampler finds the device from the parameters
        self.cond, self.uncond = cond.float(), (cond if uncond is None else uncond).float()
        self.num_tokens, self.codebook_size = cond.shape
        self.mask_token_id = self.codebook_size

    def logits(self, ids: torch.Tensor, labels: torch.Tensor, unconditional=False) -> torch.Tensor:
        rows = torch.as_tensor(unconditional).reshape(-1).expand(ids.shape[0])[:, None, None]  # (B, 1, 1)
        return torch.where(rows, self.uncond, self.cond).expand(ids.shape[0], -1, -1).clone()  # (B, N, K)


def _softmax(x: torch.Tensor) -> np.ndarray:
    x = x.double().numpy()
    e = np.exp(x - x.max())
    return e / e.sum()


def _table(logits: torch.Tensor) -> torch.Tensor:
    """(K,) logits at every position, plus OFFSET * position: the draw's law is the same at every position, but
    position p's confidence exceeds position p-1's by ~OFFSET / anneal, far beyond any choice noise used here
    (a Gumbel difference over 40 has probability e**-40), so the positions kept at a step are known in advance
    and their tokens are unselected draws."""
    return logits[None, :] + OFFSET * torch.arange(N_POS, dtype=torch.float32)[:, None]  # (N, K)


def _assert_draws(tokens: torch.Tensor, probs: np.ndarray, what: str) -> None:
    """Chi-square of the drawn codes against `probs`; the same counts must reject a law 4% off."""
    counts = np.bincount(tokens.flatten().numpy(), minlength=len(probs))
    n = counts.sum()
    assert n >= 20_000, what
    assert (counts[probs == 0] == 0).all(), f"{what}: drew a code of probability 0: {counts.tolist()}"
    counts, probs = counts[probs > 0], probs[probs > 0]
    p = stats.chisquare(counts, n * probs).pvalue
    assert p > P_FAIL, f"{what}: p = {p:.3g}, counts {counts.tolist()}, expected {np.round(n * probs).tolist()}"
    off = probs * (1 + 0.04 * (-1.0) ** np.arange(len(probs)))  # every code's probability 4% up or down
    off /= off.sum()
    assert stats.chisquare(counts, n * off).pvalue < P_FAIL, f"{what}: the test cannot see a law 4% off"


# ------------------------------------------------------------------------------------- the token draw
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
@pytest.mark.parametrize("annealing", [True, False], ids=["annealed-softmax", "plain-softmax"])
def test_annealed_gumbel_tokens_follow_softmax_at_the_temperature(scheme, temperature, annealing):
    """TiTok's mode: at step 0 of 2 the token is a draw from softmax(logits / (anneal * T)), T the choice
    temperature randomize_temperature * (1 - 1/2), anneal 0.5 + 0.8 * (1 - 1/2) = 0.9 (1 when off). The 4
    positions kept after step 0 are 8..11 (arccos schedule: floor(12 * acos(1/2) / (pi/2)) = 8 stay masked); the
    last step (temperature 0) takes the argmax, code 3, everywhere else."""
    b = 15_000
    s = SamplingConfig(num_steps=2, randomize_temperature=2 * temperature, guidance_scale=0.0,
                       guidance_decay="constant", softmax_temperature_annealing=annealing, noise_scheme=scheme)
    tokens = sample_tokens(TableLogits(_table(BASE)), torch.zeros(b, dtype=torch.long), s,
                           seeds=range(10_000, 10_000 + b)).tokens
    assert (tokens[:, :8] == int(BASE.argmax())).all()
    anneal = 0.9 if annealing else 1.0
    _assert_draws(tokens[:, 8:], _softmax(BASE / (anneal * temperature)), f"{scheme} T={temperature}")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_categorical_tokens_follow_softmax_at_each_steps_annealing(scheme):
    """MaskGIT's mode draws at temperature 1 whatever the choice temperature: with softmax annealing on, the
    tokens kept at step 0 of 2 follow softmax(logits / 0.9), those of the last step softmax(logits / 0.5)."""
    b = 15_000
    s = SamplingConfig(num_steps=2, randomize_temperature=3.0, guidance_scale=0.0, guidance_decay="constant",
                       softmax_temperature_annealing=True, token_sampling="categorical", confidence="logit",
                       noise_scheme=scheme)
    tokens = sample_tokens(TableLogits(_table(BASE)), torch.zeros(b, dtype=torch.long), s,
                           seeds=range(b)).tokens
    _assert_draws(tokens[:, 8:], _softmax(BASE / 0.9), f"{scheme} step 0")
    _assert_draws(tokens[:, :8], _softmax(BASE / 0.5), f"{scheme} last step")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_maskgit_sampling_draws_softmax_of_the_logits(scheme):
    """The MaskGIT preset's settings (categorical, log-prob confidence, no annealing), one step: every token a
    draw from softmax(logits)."""
    b = 5_000
    s = SamplingConfig(num_steps=1, randomize_temperature=4.5, guidance_scale=0.0, guidance_decay="constant",
                       softmax_temperature_annealing=False, mask_schedule="cosine", token_sampling="categorical",
                       confidence="log-prob", noise_scheme=scheme)
    tokens = sample_tokens(TableLogits(_table(BASE)), torch.zeros(b, dtype=torch.long), s, seeds=range(b)).tokens
    _assert_draws(tokens, _softmax(BASE), scheme)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("decay,guided", [("constant", 3 * BASE - 2 * UNCOND), ("power-cosine", BASE)])
def test_guided_tokens_follow_softmax_of_the_guided_logits(scheme, decay, guided):
    """Guidance 2 at step 0 of 2 (T = 1, anneal 0.9). constant: cond + 2 * (cond - uncond) = 3 cond - 2 uncond;
    power-cosine (MDT) starts at scale 1 from the unconditional logits: uncond + 1 * (cond - uncond) = cond."""
    b = 15_000
    s = SamplingConfig(num_steps=2, randomize_temperature=2.0, guidance_scale=2.0, guidance_decay=decay,
                       softmax_temperature_annealing=True, noise_scheme=scheme)
    model = TableLogits(_table(BASE), _table(UNCOND))
    tokens = sample_tokens(model, torch.zeros(b, dtype=torch.long), s, seeds=range(b)).tokens
    _assert_draws(tokens[:, 8:], _softmax(guided / 0.9), f"{scheme} {decay}")


# ------------------------------------------------------------------------------------- the choice noise
def test_choice_noise_is_gumbel_at_its_temperature():
    """Kolmogorov-Smirnov of the confidence noise against Gumbel(0, T), at two temperatures; a 2% wrong scale
    fails on the same draws."""
    seeds = seed_tensor(range(8_192), "cpu")
    for step, temperature in ((0, 8.3125), (3, 4.75)):  # 9.5 * (1 - 1/8) and 9.5 * (1 - 4/8)
        g = choice_noise(seeds, step, 32, temperature).flatten().double().numpy()  # 262,144 values
        assert stats.kstest(g, stats.gumbel_r(scale=temperature).cdf).pvalue > P_FAIL
        assert stats.kstest(g, stats.gumbel_r(scale=1.02 * temperature).cdf).pvalue < P_FAIL
        assert stats.kstest(g, stats.logistic(scale=temperature).cdf).pvalue < P_FAIL


class StepTagged(nn.Module):
    """A stand-in that makes the step visible in the tokens: at the step where `u` tokens are already unmasked,
    every position's only drawable code is min(u, K-1) (the others sit 1e4 below), with logit `level[p]` at
    position p. So a position's final token says at which step it was kept, and its confidence is `level[p]` plus
    the choice noise, whatever was drawn."""

    has_null_class = True

    def __init__(self, level: torch.Tensor, codes: int = 4):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.level = level.float()
        self.num_tokens, self.codebook_size, self.mask_token_id = len(level), codes, codes

    def logits(self, ids: torch.Tensor, labels: torch.Tensor, unconditional=False) -> torch.Tensor:
        tag = (ids != self.mask_token_id).sum(dim=1).clamp(max=self.codebook_size - 1)  # (B,)
        hot = torch.arange(self.codebook_size)[None, :] == tag[:, None]  # (B, K)
        out = self.level[None, :, None] - 1e4 * (~hot)[:, None, :].float()  # (B, N, K)
        return out


@pytest.mark.parametrize("scheme", SCHEMES)
def test_kept_positions_follow_the_gumbel_max_law_at_the_annealed_temperature(scheme):
    """With one position kept per step (8 positions, 8 steps: arccos keeps 1 at step 0 and 1 at step 1), the
    position kept is argmax(level + T_step * Gumbel): a draw from softmax(level / T_step), T_step = R * (1 -
    (step + 1) / 8), and at step 1 among the positions left. Logistic noise, or an unannealed T, fails."""
    b, r = 40_000, 2.0
    level = torch.tensor([0.0, 0.4, 0.9, 1.3, 1.8, 2.4, 2.9, 3.5])
    s = SamplingConfig(num_steps=8, randomize_temperature=r, guidance_scale=0.0, guidance_decay="constant",
                       softmax_temperature_annealing=False, noise_scheme=scheme)
    tokens = sample_tokens(StepTagged(level), torch.zeros(b, dtype=torch.long), s, seeds=range(b)).tokens
    assert ((tokens == 0).sum(1) == 1).all() and ((tokens == 1).sum(1) == 1).all()
    first = (tokens == 0).long().argmax(1)  # (B,) the position kept at step 0
    _assert_draws(first, _softmax(level / (r * 7 / 8)), f"{scheme} step 0")
    # Step 1, given the first: P(q) = exp(level_q / T1) / sum over the 7 positions left. Pool over `first` by
    # counting second picks per (first, second) cell against those conditional laws.
    second = (tokens == 1).long().argmax(1)
    t1 = r * 6 / 8
    observed, expected = [], []
    for f in range(8):
        rows = second[first == f]
        left = [q for q in range(8) if q != f]
        p = _softmax(level[left] / t1)
        counts = np.bincount(rows.numpy(), minlength=8)[left]
        observed += counts.tolist()
        expected += (len(rows) * p).tolist()
    observed, expected = np.array(observed), np.array(expected)
    keep = expected >= 5  # the chi-square approximation's usual condition
    chi2 = float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    dof = int(keep.sum()) - 8  # one constraint per conditioning cell
    assert stats.chi2.sf(chi2, dof) > P_FAIL, (scheme, chi2, dof)


# ------------------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("num_steps,scale,power", [(7, 4.5, 2.5), (12, 2.0, 3.0)])
def test_guidance_ramps_equal_their_closed_forms(num_steps, scale, power):
    """constant: g; linear (release): g * t / T; power-cosine (MDT): 1 + (g - 1) * (1 - cos(pi * (t / T)**p)) / 2."""
    for decay, formula in (("constant", lambda t: scale),
                           ("linear", lambda t: scale * t / num_steps),
                           ("power-cosine", lambda t: 1 + (scale - 1) * (1 - math.cos(math.pi * (t / num_steps)
                                                                                     ** power)) / 2)):
        s = SamplingConfig(num_steps=num_steps, guidance_scale=scale, guidance_decay=decay, guidance_scale_pow=power)
        for t in range(num_steps):
            assert guidance_scale_at(t, s) == pytest.approx(formula(t), rel=1e-12, abs=1e-12), (decay, t)
    s = SamplingConfig(num_steps=num_steps, guidance_scale=scale, guidance_decay="power-cosine",
                       guidance_scale_pow=power)
    assert guidance_scale_at(0, s) == 1.0  # starts unguided (scale 1 = the conditional logits)


@pytest.mark.parametrize("num_tokens,num_steps", [(32, 8), (256, 8), (1024, 12), (5, 9), (64, 4)])
def test_mask_schedules_equal_their_closed_forms(num_tokens, num_steps):
    """Tokens left masked after step t (0-based) of T: arccos floor(N * acos((t+1)/T) / (pi/2)), cosine (MaskGIT)
    floor(N * max(1e-6, cos(pi/2 * (t+1)/T))); each clipped to [1, masked before - 1], and 0 after the last step."""
    closed = {"arccos": lambda r: math.acos(r) / (math.pi / 2),
              "cosine": lambda r: max(1e-6, math.cos(math.pi / 2 * r))}
    for schedule, fraction in closed.items():
        left = num_tokens
        for t in range(num_steps):
            want = 0 if t == num_steps - 1 else max(1, min(left - 1, math.floor(num_tokens * fraction((t + 1) /
                                                                                                    num_steps))))
            got = masked_count(t, num_steps, num_tokens, left, schedule)
            assert got == want, (schedule, t)
            left = got


# ------------------------------------------------------------------------------------- counter-icdf-v1 itself
def test_zero_probability_codes_are_never_drawn():
    """Codes whose weight exp((logit - max) / T) underflows to 0 sit at both ends of the CDF and in the middle;
    none may be drawn, at any temperature, in 60,000 draws (their intervals of the CDF are empty)."""
    logits = torch.tensor([-1e4, 0.3, -1e4, 0.0, 1.0, -1e4, -0.5, -1e4])
    allowed = {1, 3, 4, 6}
    for temperature in (0.5, 2.5):
        s = SamplingConfig(num_steps=2, randomize_temperature=2 * temperature, guidance_scale=0.0,
                           guidance_decay="constant", softmax_temperature_annealing=False)
        tokens = sample_tokens(TableLogits(_table(logits)), torch.zeros(15_000, dtype=torch.long), s,
                               seeds=range(15_000)).tokens
        assert set(tokens.unique().tolist()) <= allowed
        _assert_draws(tokens[:, 8:], _softmax(logits / temperature), f"T={temperature}")


def test_a_sample_drawn_alone_equals_the_same_sample_in_a_batch_of_64():
    """Per (seed, step, position): the row's CDF reads its own logits only, its uniform its own seed."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(1000, 16, 512, generator=g) * 2  # per class: rows differ

    class PerClass(TableLogits):
        def logits(self, ids, labels, unconditional=False):
            return table[labels].clone()

    model = PerClass(table[0])
    s = SamplingConfig(num_steps=4, randomize_temperature=3.0, guidance_scale=0.0, guidance_decay="constant")
    labels, seeds = torch.arange(64) * 7 % 1000, [2**40 + 3 * i for i in range(64)]
    batch = sample_tokens(model, labels, s, seeds=seeds).tokens
    for row in (0, 17, 63):
        alone = sample_tokens(model, labels[row : row + 1], s, seeds=seeds[row : row + 1]).tokens
        assert torch.equal(alone[0], batch[row])
    assert len(batch.unique()) > 100  # the draws are random, not an argmax


@pytest.mark.parametrize("u,code", [(2.0**-25, 1), (1 - 2.0**-24, 6), (1.0, 6)])
def test_the_cdf_ends_pick_the_outermost_codes_of_positive_probability(monkeypatch, u, code):
    """The smallest uniform picks the first code of positive weight, the largest the last, never a code of weight 0
    beyond them; a uniform of exactly 1 (not drawn by the hash, whose largest is 1 - 2**-24) too."""
    monkeypatch.setattr(sampler, "token_uniforms", lambda seeds, step, n: torch.full((len(seeds), n), u))
    logits = torch.tensor([-1e4, 0.3, -1e4, 0.0, 1.0, -1e4, -0.5, -1e4])
    s = SamplingConfig(num_steps=1, randomize_temperature=2.0, guidance_scale=0.0, guidance_decay="constant",
                       token_sampling="categorical", softmax_temperature_annealing=False)
    tokens = sample_tokens(TableLogits(_table(logits)), torch.zeros(3, dtype=torch.long), s, seeds=range(3)).tokens
    assert (tokens == code).all()


def test_inverse_cdf_against_a_float64_cdf_written_here():
    """Each drawn code c satisfies C[c-1] <= t <= C[c] for the float64 CDF C of softmax(logits / T) and
    t = u * C[K-1], u the token's uniform (stream 3), up to float32 rounding of the running sum."""
    b, n, k, temperature = 64, 16, 4096, 1.7
    logits = torch.randn(b, n, k, generator=torch.Generator().manual_seed(3)) * 3
    s = SamplingConfig(num_steps=1, randomize_temperature=2.0, guidance_scale=0.0, guidance_decay="constant",
                       token_sampling="categorical", softmax_temperature_annealing=False)

    class PerClass(TableLogits):
        def logits(self, ids, labels, unconditional=False):
            return logits[labels] / temperature  # the categorical mode draws at scale 1

    seeds = list(range(500, 500 + b))
    codes = sample_tokens(PerClass(logits[0]), torch.arange(b), s, seeds=seeds).tokens  # (B, N)
    w = torch.exp((logits.double() - logits.double().amax(-1, keepdim=True)) / temperature)
    cdf = w.cumsum(-1)  # (B, N, K)
    t = token_uniforms(seed_tensor(seeds, "cpu"), 0, n).double() * cdf[..., -1]  # (B, N)
    upper = cdf.gather(-1, codes[..., None])[..., 0]
    lower = torch.where(codes > 0, cdf.gather(-1, (codes - 1).clamp(min=0)[..., None])[..., 0], 0.0)
    tol = 1e-5 * cdf[..., -1]
    assert bool(((lower - tol <= t) & (t <= upper + tol)).all())
    assert len(codes.unique()) > 200


def test_a_uniform_on_a_cdf_boundary_picks_the_next_code(monkeypatch):
    """Half-open intervals: code j is drawn for t in [C[j-1], C[j]). Four equal logits make C = (1, 2, 3, 4)
    exactly; u = 0.5 gives t = 2 = C[1], which belongs to code 2 (not code 1)."""
    monkeypatch.setattr(sampler, "token_uniforms", lambda seeds, step, n: torch.full((len(seeds), n), 0.5))
    s = SamplingConfig(num_steps=1, randomize_temperature=2.0, guidance_scale=0.0, guidance_decay="constant",
                       token_sampling="categorical", softmax_temperature_annealing=False)
    tokens = sample_tokens(TableLogits(_table(torch.zeros(4))), torch.zeros(2, dtype=torch.long), s, seeds=[0, 1])
    assert (tokens.tokens == 2).all()


@pytest.mark.parametrize("scale", [1.0, 1.7])
def test_the_inverse_cdf_pick_returns_the_log_normaliser_at_its_scale(scale):
    """Beside the codes, the pick returns logsumexp(logits / scale) per position, which the log-prob confidence
    reads (at scale 1) instead of a second pass over (B, N, K)."""
    logits = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(4)) * 4
    _, log_normaliser = sampler._inverse_cdf_pick(logits, seed_tensor([1, 2, 3], "cpu"), 0, scale, sampler._Scratch())
    want = torch.logsumexp(logits.double() / scale, dim=-1)
    torch.testing.assert_close(log_normaliser.double(), want, rtol=1e-5, atol=1e-5)


def test_the_scratch_buffer_is_reused_and_follows_shape_and_device():
    """One (B, N, K) float32 buffer per sampling call: the same tensor while shape and device stay, a new one when
    either changes ("meta" shows the device without data)."""
    scratch = sampler._Scratch()
    a = scratch.like(torch.zeros(2, 3, dtype=torch.float64))
    assert a.shape == (2, 3) and a.dtype == torch.float32 and scratch.like(torch.ones(2, 3)) is a
    b = scratch.like(torch.zeros(4, 3))
    assert b.shape == (4, 3) and b is not a
    assert scratch.like(torch.zeros(4, 3, device="meta")).device.type == "meta"
