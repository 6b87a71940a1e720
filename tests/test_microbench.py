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


@pytest.mark.benchmark(group="machine ceiling")
def test_fp32_matmul_ceiling(benchmark):
    """The machine's practical fp32 rate (a large matrix multiply): the roof any fp32 model path runs under."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = benchmark(torch.matmul, a, b)
    assert out.shape == (n, n)
    if benchmark.stats:  # timed runs only (tox -e microbench); the default test run just checks the call
        benchmark.extra_info["gflop_per_s"] = 2 * n**3 / benchmark.stats.stats.min / 1e9
