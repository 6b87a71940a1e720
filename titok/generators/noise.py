"""Sampling noise as a pure function of counters, computed on the model's device.

Why: MaskGIT sampling needs a uniform number for every (sample, step, position, code), 33.5M per step for
TiTok-L-32 at batch 256. Drawing them from one host `torch.Generator` per sample (the previous scheme,
`LEGACY_NOISE_SCHEME`) cost about a second of CPU time per step plus a host-to-device copy, against milliseconds
for the forward pass on a GPU. Here each number is a hash of its counters instead, so

  * a sample's noise depends only on its own seed: not on the batch it is in, its row in that batch, or how the
    work is sharded across processes (no generator state is advanced by the other samples or earlier steps);
  * the whole batch is a handful of elementwise tensor ops on the device the logits live on; the only transfer is
    the (B, 2) seed tensor, once per sampling call;
  * CPU and CUDA draw bit-identical numbers: everything is int64 arithmetic on values below 2**32 (no product can
    overflow, so nothing relies on wrap-around behaviour) until a final exact conversion to float32.

The hash: "lowbias32", the 32-bit integer mix found by Chris Wellons' hash-prospector (2018, public domain;
https://nullprogram.com/blog/2018/07/31/): x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b;
x ^= x >> 16 (mod 2**32). It is a bijection of 32-bit words. A 64-bit state of two such words absorbs the seed
(low and high halves), the stream (token or confidence noise), the step and the position; each absorption is a
bijection of the state for fixed counters, so distinct seeds never share a state. Per code, two more mixes keyed by
the two words give a 32-bit value whose top 24 bits become the uniform.

Two schemes use these counters (`SamplingConfig.noise_scheme` picks one; sample folders and records name it, and
any change to the numbers drawn must get a new name):

  * `counter-icdf-v1` (`NOISE_SCHEME`, the default): ONE uniform per (sample, step, position) for the token
    (`token_uniforms`, its own stream), turned into a code by the inverse CDF of softmax(logits / T)
    (`titok.generators.sampler`): B*N hashed numbers a step, 262k at B = 256, N = 32;
  * `counter-hash-v1` (`HASH_NOISE_SCHEME`): a uniform per (sample, step, position, code) (`token_noise`), its
    Gumbel transform added to the logits and the argmax taken: B*N*K numbers a step, 33.5M at K = 4096. Kept so
    that folders and records made with it reproduce.

Both draw the confidence noise (`confidence_noise`, (B, N)) the same way. `legacy_noise` keeps the scheme before
either, for the benchmark that compares them only; sampling cannot select it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

NOISE_SCHEME = "counter-icdf-v1"  # the default
HASH_NOISE_SCHEME = "counter-hash-v1"
NOISE_SCHEMES = (NOISE_SCHEME, HASH_NOISE_SCHEME)  # what sampling can select
LEGACY_NOISE_SCHEME = "torch-generator-per-sample-v0"

TOKEN_STREAM = 0  # counter-hash-v1: noise added to the logits before picking a token: (B, N, K)
CONFIDENCE_STREAM = 1  # noise added to the confidence that decides what is re-masked: (B, N)
# Stream 2 is bench.metrics.streaming's bootstrap weights.
TOKEN_UNIFORM_STREAM = 3  # counter-icdf-v1: the one uniform that picks a token by inverse CDF: (B, N)

_MASK32 = 0xFFFFFFFF
_MUL1 = 0x7FEB352D  # < 2**31: x * _MUL1 < 2**63 for x < 2**32
# 0x846ca68b >= 2**31 would overflow int64; it is congruent to this negative factor mod 2**32, whose product with
# x < 2**32 stays above -2**63, and masking a negative int64 keeps exactly its low 32 bits (two's complement).
_MUL2 = 0x846CA68B - 2**32
_SEED_SALT = 0x9E3779B9  # golden-ratio constant: keeps seed 0 away from lowbias32's fixed point at 0
_CODE_SALT = 0x85EBCA6B


def _mix(x: torch.Tensor, tmp: torch.Tensor | None = None) -> torch.Tensor:
    """lowbias32 in place on an int64 tensor of values in [0, 2**32); `tmp` (same shape) avoids allocations."""
    if tmp is None:
        tmp = torch.empty_like(x)
    for shift, mul in ((16, _MUL1), (15, _MUL2)):
        torch.bitwise_right_shift(x, shift, out=tmp)
        x.bitwise_xor_(tmp).mul_(mul).bitwise_and_(_MASK32)
    torch.bitwise_right_shift(x, 16, out=tmp)
    return x.bitwise_xor_(tmp)


def seed_tensor(seeds: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """Per-sample seeds as a (B, 2) int64 tensor of their low and high 32-bit halves, on `device`.

    Seeds are integers in [-2**63, 2**64), negative ones taken mod 2**64 as `torch.Generator.manual_seed` does.
    """
    halves = []
    for s in seeds:
        s = int(s)
        if not -(2**63) <= s < 2**64:
            raise ValueError(f"a sampling seed must be in [-2**63, 2**64), got {s}")
        s %= 2**64
        halves.append((s & _MASK32, s >> 32))
    return torch.tensor(halves, dtype=torch.long, device=device).reshape(-1, 2)


def _row_keys(seeds: torch.Tensor, stream: int, step: int, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 64-bit state (two 32-bit words, each (B, P) int64) after absorbing seed, stream, step and position."""
    a = _mix(seeds[:, 0] ^ _SEED_SALT)  # (B,)
    b = _mix(seeds[:, 1] ^ a)  # (B,): (lo, hi) -> (a, b) is a bijection
    for counter in (stream, step):
        if not 0 <= counter <= _MASK32:
            raise ValueError(f"noise counters must be in [0, 2**32), got {counter}")
        a = _mix(a ^ counter)
        b = _mix(b ^ a)
    pos = torch.arange(positions, dtype=torch.long, device=seeds.device)  # (P,)
    a = _mix(a[:, None] ^ pos)  # (B, P)
    b = _mix(b[:, None] ^ a)  # (B, P)
    return a, b


def counter_uniforms(seeds: torch.Tensor, stream: int, step: int, positions: int, codes: int) -> torch.Tensor:
    """Uniforms in (0, 1), float32 (B, positions, codes), on `seeds.device`: entry [i, p, c] is a function of
    (seed i, stream, step, p, c) only. `seeds` is a (B, 2) tensor from `seed_tensor`.

    The top 24 bits of the hash are the uniform's 24 significant bits, so the float32 value is exact; 0 becomes
    2**-25 (halfway to the next value), so the result is never 0 or 1 and the Gumbel transform stays finite.
    """
    a, b = _row_keys(seeds, stream, step, positions)  # (B, P) each
    code_keys = _mix(torch.arange(codes, dtype=torch.long, device=seeds.device) ^ _CODE_SALT)  # (C,)
    x = a[:, :, None] ^ code_keys  # (B, P, C) int64
    tmp = torch.empty_like(x)  # (B, P, C) int64 scratch, reused by every shift
    _mix(x, tmp).bitwise_xor_(b[:, :, None])
    _mix(x, tmp).bitwise_right_shift_(8)  # (B, P, C) in [0, 2**24)
    del tmp
    return x.to(torch.float32).mul_(2.0**-24).clamp_min_(2.0**-25)  # (B, P, C) float32


def token_noise(seeds: torch.Tensor, step: int, num_tokens: int, codebook_size: int) -> torch.Tensor:
    """Uniforms (B, N, K) for the token choice at `step`."""
    return counter_uniforms(seeds, TOKEN_STREAM, step, num_tokens, codebook_size)


def token_uniforms(seeds: torch.Tensor, step: int, num_tokens: int) -> torch.Tensor:
    """Uniforms (B, N) in (0, 1) for the inverse-CDF token choice at `step` (`counter-icdf-v1`): one per position,
    on a stream of its own, so independent of the confidence noise and of `token_noise`."""
    return counter_uniforms(seeds, TOKEN_UNIFORM_STREAM, step, num_tokens, 1)[..., 0]


def confidence_noise(seeds: torch.Tensor, step: int, num_tokens: int) -> torch.Tensor:
    """Uniforms (B, N) for the confidence ranking at `step` (a stream of its own: independent of `token_noise`)."""
    return counter_uniforms(seeds, CONFIDENCE_STREAM, step, num_tokens, 1)[..., 0]


def legacy_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample, as the previous scheme created them once per sampling call."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def legacy_noise(generators: Sequence[torch.Generator], num_tokens: int, codebook_size: int,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the previous scheme (`LEGACY_NOISE_SCHEME`), for comparison only: token uniforms (B, N, K)
    and confidence uniforms (B, N), drawn on the CPU sample by sample and copied to `device`. Advances the
    generators, so the draws of a step depend on every earlier step."""
    u_tok = torch.stack([torch.rand(num_tokens, codebook_size, generator=g) for g in generators]).to(device)
    u_conf = torch.stack([torch.rand(num_tokens, generator=g) for g in generators]).to(device)
    return u_tok, u_conf
