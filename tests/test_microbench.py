"""Micro-benchmarks (pytest-benchmark) of the kernels the fast path changes, each beside its reference.

In the default test run the benchmarks are disabled (`--benchmark-disable` in pyproject.toml): every function runs
once and its result is checked, so they stay correct. `tox -e microbench` times them and writes JSON; compare two
saved runs with `tox -e microbench -- --benchmark-compare`. Groups pair a fast kernel with its reference, so the
ratio is read off one table from one run. Sizes are a real model's layer at a small spatial size.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import titok
from titok.blocks import multi_head_attention
from titok.generators import sampler
from titok.generators.config import SamplingConfig
from titok.generators.noise import confidence_noise, legacy_generators, legacy_noise, seed_tensor, token_noise
from titok.inference import InferenceOptions, apply_inference_options, upsample_conv
from titok.quantizer import VectorQuantizer


@pytest.fixture(autouse=True)
def _inference_only():
    with torch.no_grad():  # scoped to each test: grad mode is global state other test files rely on
        yield


@pytest.fixture(scope="module")
def upsample_case():
    torch.manual_seed(0)
    conv = nn.Conv2d(256, 256, 3, padding=1)  # MaskGIT-VQGAN's 256-wide upsampling level
    return conv, torch.randn(1, 256, 32, 32)


@pytest.mark.benchmark(group="upsample 256ch 32->64")
@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
def test_upsample_conv(benchmark, upsample_case, fused):
    conv, x = upsample_case
    out = benchmark(upsample_conv, x, conv, fused)
    torch.testing.assert_close(out, upsample_conv(x, conv, not fused), atol=1e-4, rtol=1e-4)


@pytest.mark.benchmark(group="attention ViT-L 289 tokens")
@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_attention(benchmark, impl):
    qkv = torch.randn(2, 289, 3 * 1024, generator=torch.Generator().manual_seed(0))
    out = benchmark(multi_head_attention, qkv, 16, impl)
    torch.testing.assert_close(out, multi_head_attention(qkv, 16, "math" if impl == "sdpa" else "sdpa"),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.benchmark(group="vq nearest 4096x12")
def test_vq_nearest(benchmark):
    torch.manual_seed(0)
    vq = VectorQuantizer(4096, 12, use_l2_norm=True)
    z = torch.randn(32, 32, 12)
    codes = benchmark(vq.nearest, z)
    assert codes.shape == (32, 32) and int(codes.max()) < 4096


@pytest.mark.benchmark(group="tiny generator sampling")
@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
def test_tiny_sampling(benchmark, fast):
    torch.manual_seed(0)
    gen = titok.load_generator("titok_tiny_bert").eval()
    apply_inference_options(gen, InferenceOptions() if fast else InferenceOptions.reference())
    labels = torch.arange(8)
    tokens = benchmark(gen.generate, labels, seeds=list(range(8)))
    assert tokens.shape == (8, gen.num_tokens) and int(tokens.max()) < gen.codebook_size


# One sampling step of TiTok-L-32 at batch 256: N=32 tokens, K=4096 codes, 33.5M uniforms for the tokens.
NOISE_B, NOISE_N, NOISE_K = 256, 32, 4096


def _counter_step(seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return token_noise(seeds, 1, NOISE_N, NOISE_K), confidence_noise(seeds, 1, NOISE_N)


@pytest.mark.benchmark(group="sampling noise B256 N32 K4096")
@pytest.mark.parametrize("scheme", ["legacy", "counter"], ids=["legacy-cpu-generators", "counter-hash"])
def test_sampling_noise_step(benchmark, scheme):
    """One step's noise: the previous per-sample CPU generators (then a copy to the device) beside the counter
    hash made where the seeds are. Timed on CPU here; on a GPU only the counter path moves to the device."""
    seeds = list(range(NOISE_B))
    if scheme == "legacy":
        u_tok, u_conf = benchmark(legacy_noise, legacy_generators(seeds), NOISE_N, NOISE_K)
    else:
        u_tok, u_conf = benchmark(_counter_step, seed_tensor(seeds, "cpu"))
    assert u_tok.shape == (NOISE_B, NOISE_N, NOISE_K) and u_conf.shape == (NOISE_B, NOISE_N)
    # torch.rand can return exactly 0 (it does here, at 33.5M draws; `_gumbel` clamps it); the counter hash never.
    assert (0 < float(u_tok.min()) or scheme == "legacy") and float(u_tok.max()) < 1


class ConstantLogits(nn.Module):
    """A generator stand-in whose network costs nothing: fixed logits, so a sampling step times the rest."""

    num_tokens, codebook_size, mask_token_id = NOISE_N, NOISE_K, NOISE_K

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # the sampler finds the device from the parameters
        self.table = torch.randn(NOISE_B, NOISE_N, NOISE_K, generator=torch.Generator().manual_seed(0))

    def logits(self, input_ids: torch.Tensor, class_labels: torch.Tensor, unconditional=False) -> torch.Tensor:
        return self.table[: input_ids.shape[0]]  # (B, N, K)


@pytest.mark.benchmark(group="sample_tokens step B256 N32 K4096, constant logits")
@pytest.mark.parametrize("scheme", ["legacy", "counter-hash-v1", "counter-icdf-v1"],
                         ids=["legacy-cpu-generators", "counter-hash", "counter-icdf"])
def test_sampling_step(benchmark, monkeypatch, scheme):
    """`sample_tokens` with 2 steps and no guidance: the first step draws noise, the last (temperature 0) none.
    The legacy variant swaps the previous scheme's draws into counter-hash-v1's loop (a uniform per code)."""
    if scheme == "legacy":
        state = {}

        def legacy_token_noise(seeds, step, n, k):
            if "gens" not in state or step == 0:  # a new sampling call: the generators start afresh
                state["gens"] = legacy_generators(range(NOISE_B))
            state["tok"], state["conf"] = legacy_noise(state["gens"], n, k, seeds.device)
            return state["tok"]

        monkeypatch.setattr(sampler, "token_noise", legacy_token_noise)
        monkeypatch.setattr(sampler, "confidence_noise", lambda seeds, step, n: state["conf"])
    model = ConstantLogits()
    s = SamplingConfig(num_steps=2, randomize_temperature=9.5, guidance_scale=0.0,
                       noise_scheme="counter-hash-v1" if scheme == "legacy" else scheme)
    labels = torch.zeros(NOISE_B, dtype=torch.long)
    res = benchmark(sampler.sample_tokens, model, labels, s, seeds=list(range(NOISE_B)))
    assert res.tokens.shape == (NOISE_B, NOISE_N) and int(res.tokens.max()) < NOISE_K
    assert res.masked_after_step == [sampler.masked_count(0, 2, NOISE_N, NOISE_N), 0]


@pytest.mark.benchmark(group="machine ceiling")
def test_fp32_matmul_ceiling(benchmark):
    """The machine's practical fp32 rate (a large matrix multiply): the roof any fp32 model path runs under."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = benchmark(torch.matmul, a, b)
    assert out.shape == (n, n)
    if benchmark.stats:  # timed runs only (tox -e microbench); the default test run just checks the call
        benchmark.extra_info["gflop_per_s"] = 2 * n**3 / benchmark.stats.stats.min / 1e9
