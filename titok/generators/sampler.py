"""MaskGIT iterative decoding (Chang et al. 2022) with the TiTok release's sampling recipe, or MaskGIT's own.

Start from all-masked tokens; at step t of T, predict every masked token, keep the most confident ones and
re-mask the rest, so that floor(N * arccos(t/T) / (pi/2)) tokens stay masked (MaskGIT: floor(N * cos(pi/2 * t/T)));
at least 1 until the last step, which unmasks everything. Gumbel noise scaled by an annealed temperature
randomises the confidence, and the sampled token too (MaskGIT draws the token at temperature 1 instead).
Classifier-free guidance follows `SamplingConfig.guidance_decay`; MaskGIT has none.

Two changes from the release, neither of which changes the distribution of the samples:
  * the conditional and unconditional passes run as one batch of 2B (`InferenceOptions.cfg_batched`), equal to
    two passes within float tolerance;
  * the noise is a counter-based hash (`titok.generators.noise`) of (sample seed, step, position[, code]), computed
    on the model's device for the whole batch at once: a sample's tokens depend on its seed alone, not on the batch
    it is in, its row there or the shard that draws it. No host RNG is involved. The numbers differ from the
    release's draws; their distribution does not. The token is drawn by `SamplingConfig.noise_scheme`:
    "counter-icdf-v1" (default) inverts the CDF of softmax(logits / T) at one uniform per token (`_inverse_cdf_pick`,
    B*N random numbers a step); "counter-hash-v1" takes argmax(logits + T * Gumbel) with a uniform per token and
    code (`_gumbel_max_pick`, B*N*K), as the release does with torch's generator. Both are exact draws from
    softmax(logits / T).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from titok.errors import ConfigError
from titok.generators.config import SamplingConfig
from titok.generators.noise import (
    HASH_NOISE_SCHEME,
    NOISE_SCHEME,
    confidence_noise,
    seed_tensor,
    token_noise,
    token_uniforms,
)
from titok.inference import options_of
from titok.progress import track
from titok.weights import WeightsError


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (B, N) long
    masked_after_step: list[int] = field(default_factory=list)  # masked tokens per sample after each step


def masked_count(step: int, num_steps: int, num_tokens: int, currently_masked: int, schedule: str = "arccos") -> int:
    """How many tokens stay masked after `step` (0-based), clipped as the releases do: at least one is unmasked
    and one stays masked per step, until the last step unmasks all."""
    if step == num_steps - 1:
        return 0
    ratio = (step + 1) / num_steps
    if schedule == "arccos":
        fraction = math.acos(ratio) / (math.pi / 2)
    elif schedule == "cosine":  # MaskGIT's mask_schedule: cos(pi/2 * r), clipped to [1e-6, 1]
        fraction = min(1.0, max(1e-6, math.cos(math.pi / 2 * ratio)))
    else:
        raise ValueError(f"unknown mask schedule {schedule!r}")
    return max(1, min(currently_masked - 1, math.floor(num_tokens * fraction)))


def guidance_scale_at(step: int, s: SamplingConfig) -> float:
    """The guidance scale used at `step` (0 means: no unconditional pass)."""
    if s.guidance_decay == "constant":
        return s.guidance_scale
    if s.guidance_decay == "linear":
        return s.guidance_scale * step / s.num_steps  # 0 on the first step, as in the release
    ramp = (1 - math.cos(((step / s.num_steps) ** s.guidance_scale_pow) * math.pi)) / 2  # power-cosine (MDT)
    return (s.guidance_scale - 1) * ramp + 1


def _gumbel(uniform: torch.Tensor) -> torch.Tensor:
    eps = 1e-20
    return -torch.log((-torch.log(uniform.clamp(min=eps))).clamp(min=eps))


NOISE_CHUNK_ELEMENTS = 2**25  # token noise made for at most this many (row, position, code) entries at once


def _noisy_argmax(logits: torch.Tensor, seeds: torch.Tensor, step: int, scale: float) -> torch.Tensor:
    """argmax(logits + scale * Gumbel noise) over codes, (B, N, K) -> (B, N), with the noise of (seed, step,
    position, code) made on the device a block of rows at a time.

    A row's noise depends on its own seed only, so blocks give the same numbers as one (B, N, K) draw; they bound
    the scratch memory (the int64 hash state and its temporary are 16 bytes an entry: 4.3 GB for MaskGIT-512 at
    batch 256 in one draw, 0.5 GB per block of 2**25 entries) at the cost of a few more kernel launches.
    """
    b, n, k = logits.shape
    rows = max(1, NOISE_CHUNK_ELEMENTS // (n * k))
    out = torch.empty((b, n), dtype=torch.long, device=logits.device)
    for i in range(0, b, rows):
        noise = _gumbel(token_noise(seeds[i : i + rows], step, n, k)).mul_(scale)
        out[i : i + rows] = noise.add_(logits[i : i + rows]).argmax(dim=-1)
    return out


class _Scratch:
    """A (B, N, K) float32 buffer kept across the steps of one sampling call, so that a step allocates (and
    page-faults in) no fresh tensor of that size for its own arithmetic."""

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None

    def like(self, t: torch.Tensor) -> torch.Tensor:
        if self.buffer is None or self.buffer.shape != t.shape or self.buffer.device != t.device:
            self.buffer = torch.empty(t.shape, dtype=torch.float32, device=t.device)
        return self.buffer


def _gumbel_max_pick(logits: torch.Tensor, seeds: torch.Tensor, step: int, scale: float,
                     scratch: _Scratch) -> tuple[torch.Tensor, None]:
    """`counter-hash-v1`: codes (B, N) = argmax(logits + scale * Gumbel(uniform per code)); no normaliser."""
    return _noisy_argmax(logits, seeds, step, scale), None


def _inverse_cdf_pick(logits: torch.Tensor, seeds: torch.Tensor, step: int, scale: float,
                      scratch: _Scratch) -> tuple[torch.Tensor, torch.Tensor]:
    """`counter-icdf-v1`: a draw from softmax(logits / scale) for every (row, position), (B, N, K) -> codes (B, N),
    from ONE counter uniform u per (seed, step, position) (`token_uniforms`). Also returns each position's log
    normaliser logsumexp(logits / scale) (B, N), which the log-prob confidence reads at scale 1.

    How: w = exp((logits - max) / scale) (the max entry is ~1, so the total is >= ~1 and nothing overflows); the
    float32 running sum c over K, in place in `scratch`; t = u * c[K-1]; the code is the number of entries of c
    that are <= t (`searchsorted(..., right=True)`), i.e. the first c[j] > t. Code j is drawn when t lies in
    [c[j-1], c[j]), an interval of length w[j]: a draw from softmax(logits / scale).

    Ends, ties and rounding:
      * a value of t equal to some c[j] goes to the next code (half-open intervals), so a code whose weight is 0
        (exp underflowed: log-probability below about -87 * scale) is never picked, even at the CDF's ends: at the
        start c[0] = 0 <= t always; at the end t < total, so codes after the last positive weight (where c
        equals the total) cannot be reached. The hash's largest u, 1 - 2**-24, already gives t < total (the
        float32 product is exact or rounds down); t is clamped to the float32 just below the total all the same,
        so that a uniform of exactly 1 from any source cannot pick such a code. The index is clamped to K-1 as
        well, which therefore never binds (it guards the search's contract only).
      * u has 24 random bits and the running sum is rounded once per code, so each code's probability is exact up
        to about 2**-24 of the total (6e-8): codes far rarer than that are drawn at a wrong rate, as with the
        24-bit Gumbel-max of `counter-hash-v1`.
      * a row's sum reads that row's logits alone, so a sample draws the same code alone or in any batch, on one
        device. Another device (CUDA's parallel scan) may round the running sums differently: a token can then
        differ where t falls within that rounding of a boundary (rare; the distribution is the same).
    """
    b, n, k = logits.shape
    top = logits.amax(dim=-1, keepdim=True)  # (B, N, 1)
    cdf = scratch.like(logits)  # (B, N, K), reused across steps
    if scale == 1:
        torch.sub(logits, top, out=cdf)
    else:  # logits / scale - max / scale in one pass over (B, N, K)
        torch.add(top.div(-scale), logits, alpha=1 / scale, out=cdf)
    cdf.exp_()
    torch.cumsum(cdf, dim=-1, out=cdf)  # in place: no (B, N, K) temporary
    total = cdf[..., -1:]  # (B, N, 1), >= 1 (within rounding)
    target = token_uniforms(seeds, step, n)[..., None].mul_(total)  # (B, N, 1)
    target = torch.minimum(target, torch.nextafter(total, torch.zeros_like(total)))  # t < total
    codes = torch.searchsorted(cdf, target, right=True)[..., 0].clamp_(max=k - 1)  # (B, N)
    log_normaliser = (top / scale).add_(total.log())[..., 0]  # (B, N)
    return codes, log_normaliser


TOKEN_PICKS = {NOISE_SCHEME: _inverse_cdf_pick, HASH_NOISE_SCHEME: _gumbel_max_pick}


def choice_noise(seeds: torch.Tensor, step: int, num_tokens: int, temperature: float) -> torch.Tensor:
    """The noise added to the confidence at `step`: `temperature` * Gumbel(0, 1), (B, N), from the confidence
    stream (the same in both noise schemes)."""
    return temperature * _gumbel(confidence_noise(seeds, step, num_tokens))


def _per_sample_seeds(n: int, seeds, generator: torch.Generator | None) -> list[int]:
    if seeds is None:
        return torch.randint(0, 2**62, (n,), generator=generator).tolist()
    seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds)]
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} labels")
    return seeds


@torch.no_grad()
def sample_tokens(
    model,
    class_labels: torch.Tensor,
    sampling: SamplingConfig,
    seeds: Sequence[int] | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SampleResult:
    """Sample (B, N) image tokens from a `titok.generators.base.Generator` for class labels (B,)."""
    if not getattr(model, "has_null_class", True) and any(
            guidance_scale_at(step, sampling) != 0 for step in range(sampling.num_steps)):
        raise ConfigError(f"{getattr(model, 'preset', '') or type(model).__name__} has no null class, so no "
                          "classifier-free guidance: sample with guidance_scale = 0 and guidance_decay = 'constant'")
    device = next(model.parameters()).device
    labels = torch.as_tensor(class_labels, device=device).long().reshape(-1)
    b, n = labels.shape[0], model.num_tokens
    noise_seeds = seed_tensor(_per_sample_seeds(b, seeds, generator), device)  # (B, 2): the only copy to the device
    ids = torch.full((b, n), model.mask_token_id, dtype=torch.long, device=device)
    masked_after: list[int] = []
    pick, work, cdf = TOKEN_PICKS[sampling.noise_scheme], _Scratch(), _Scratch()
    steps = range(sampling.num_steps)
    for step in track(steps, "sampling steps", progress, unit="step", leave=False):
        ratio = (step + 1) / sampling.num_steps
        temperature = sampling.randomize_temperature * (1.0 - ratio)
        is_mask = ids == model.mask_token_id
        cfg = guidance_scale_at(step, sampling)
        if cfg != 0:
            if options_of(model).cfg_batched:  # one pass of 2B rows: the weights are read once
                both = model.logits(torch.cat([ids, ids]), torch.cat([labels, labels]),
                                    unconditional=torch.arange(2 * b, device=device) >= b)
                cond, uncond = both[:b], both[b:]
            else:  # the reference path: two passes
                cond, uncond = model.logits(ids, labels), model.logits(ids, labels, unconditional=True)
            base = uncond if sampling.guidance_decay == "power-cosine" else cond
            logits = (cond - uncond).mul_(cfg).add_(base)  # base + (cond - uncond) * cfg, one temporary
        else:
            logits = model.logits(ids, labels)
        logits = logits.float()
        lo, hi = torch.aminmax(logits)  # NaN propagates to both: no (B, N, K) mask needed
        if not (torch.isfinite(lo) and torch.isfinite(hi)):  # NaN/inf would still give valid-looking ids via argmax
            raise WeightsError(f"non-finite generator logits (NaN/inf) at sampling step {step + 1}/"
                               f"{sampling.num_steps}; check the generator's weights and precision")
        if sampling.softmax_temperature_annealing:  # into a kept buffer: the network's output may be its own
            logits = torch.div(logits, 0.5 + 0.8 * (1 - ratio), out=work.like(logits))
        # A draw from softmax(logits / token_scale); MaskGIT's categorical draw is token_scale 1.
        token_scale = 1.0 if sampling.token_sampling == "categorical" else temperature
        # Steps are independent counters, so skipping the noise where it is scaled by 0 changes nothing else.
        log_normaliser = None
        if token_scale != 0:
            sampled, log_normaliser = pick(logits, noise_seeds, step, token_scale, cdf)
        else:
            sampled = logits.argmax(-1)
        sampled_logits = logits.gather(-1, sampled[..., None])[..., 0]  # (B, N)
        if sampling.confidence == "log-prob":  # log softmax at the sampled code
            if log_normaliser is None or token_scale != 1:  # the pick's normaliser is at its own scale
                log_normaliser = torch.logsumexp(logits, dim=-1)
            sampled_logits = sampled_logits - log_normaliser
        sampled = torch.where(is_mask, sampled, ids)
        confidence = torch.where(is_mask, sampled_logits, torch.full_like(sampled_logits, math.inf))
        if temperature != 0:
            confidence = confidence + choice_noise(noise_seeds, step, n, temperature)
        keep_masked = masked_count(step, sampling.num_steps, n, int(is_mask[0].sum()), sampling.mask_schedule)
        if keep_masked == 0:
            ids = sampled
        else:
            # Re-mask the `keep_masked` least confident positions (already-fixed ones have +inf confidence).
            cutoff = confidence.sort(dim=-1).values[:, keep_masked - 1 : keep_masked]
            ids = torch.where(confidence <= cutoff, torch.full_like(sampled, model.mask_token_id), sampled)
        masked_after.append(int((ids == model.mask_token_id).sum(dim=1).max()))
    return SampleResult(ids, masked_after)
