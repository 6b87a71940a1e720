"""Counter-based sampling noise: the exact numbers (against a plain-integer reference), their distribution, their
independence from the batch and the device, and the noise scheme recorded in a sample folder's manifest."""

from __future__ import annotations

import json

import pytest
import torch

from bench.run.tasks.common import load_model, paired_tokenizer
from bench.run.tasks.gen import MANIFEST, generate_samples
from titok.errors import InputError
from titok.generators.noise import (
    HASH_NOISE_SCHEME,
    LEGACY_NOISE_SCHEME,
    NOISE_SCHEME,
    confidence_noise,
    counter_uniforms,
    legacy_generators,
    legacy_noise,
    seed_tensor,
    token_noise,
    token_uniforms,
)

M32 = 2**32 - 1


def _lowbias32(x: int) -> int:
    """The published mix with Python's unbounded ints, reduced mod 2**32 after each product."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def _reference_uniform(seed: int, stream: int, step: int, position: int, code: int) -> float:
    """One entry of `counter_uniforms`, written out scalar by scalar from the construction in the module docstring."""
    seed %= 2**64
    a = _lowbias32((seed & M32) ^ 0x9E3779B9)
    b = _lowbias32((seed >> 32) ^ a)
    for counter in (stream, step, position):
        a = _lowbias32(a ^ counter)
        b = _lowbias32(b ^ a)
    x = _lowbias32(_lowbias32(_lowbias32(code ^ 0x85EBCA6B) ^ a) ^ b)
    return max((x >> 8) * 2.0**-24, 2.0**-25)


def _corr(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.flatten().double(), y.flatten().double()
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])


EDGE_SEEDS = [0, 1, 2**32, 2**32 + 1, 2**63 - 1, 2**64 - 1, -1, 123456789012345]


def test_matches_a_plain_integer_reference():
    """The int64 tensor arithmetic (a negative stand-in for the second factor, masking) is exact mod 2**32."""
    seeds = seed_tensor(EDGE_SEEDS, "cpu")
    for stream, step in ((0, 0), (1, 7), (0, 2**32 - 1)):
        u = counter_uniforms(seeds, stream, step, 3, 5)  # (B, 3, 5)
        want = [[[_reference_uniform(s, stream, step, p, c) for c in range(5)] for p in range(3)] for s in EDGE_SEEDS]
        assert u.dtype == torch.float32 and u.tolist() == want


def test_scheme_is_pinned():
    """These numbers are what the schemes name: a change to them needs a new scheme name (and new folders)."""
    assert (NOISE_SCHEME, HASH_NOISE_SCHEME) == ("counter-icdf-v1", "counter-hash-v1")
    assert LEGACY_NOISE_SCHEME == "torch-generator-per-sample-v0"
    seeds = seed_tensor([0, 12345, 2**63 - 1], "cpu")
    assert (counter_uniforms(seeds, 0, 3, 2, 3) * 2**24).long().tolist() == [
        [[6451734, 14667783, 11843175], [6376255, 11920655, 16383355]],
        [[14009219, 6211883, 1921146], [8639209, 10397273, 1032221]],
        [[5494077, 227095, 10167834], [8330859, 12072091, 3272784]],
    ]
    assert (confidence_noise(seeds, 0, 2) * 2**24).long().tolist() == [
        [12638568, 7332242], [4118155, 8893092], [432089, 15384465]]
    # counter-icdf-v1's one uniform per token: code 0 of stream 3.
    assert (token_uniforms(seeds, 3, 4) * 2**24).long().tolist() == [
        [9614775, 7098017, 12467609, 1748070], [15014228, 11335023, 4292690, 4091422],
        [13342361, 4553963, 4519982, 9846639]]
    want = [[_reference_uniform(x, 3, 5, p, 0) for p in range(3)] for x in EDGE_SEEDS]
    assert token_uniforms(seed_tensor(EDGE_SEEDS, "cpu"), 5, 3).tolist() == want


def test_seeds_out_of_range_are_refused():
    with pytest.raises(ValueError, match="seed"):
        seed_tensor([2**64], "cpu")
    with pytest.raises(ValueError, match="seed"):
        seed_tensor([-(2**63) - 1], "cpu")
    assert seed_tensor([-1], "cpu").tolist() == [[M32, M32]]  # as torch.Generator.manual_seed reads -1
    assert seed_tensor([], "cpu").shape == (0, 2)
    # The ends of the range are accepted: -2**63 is 2**63 mod 2**64 (low half 0, high half 2**31).
    assert seed_tensor([-(2**63), -1000, 2**64 - 1], "cpu").tolist() == [[0, 2**31], [2**32 - 1000, M32], [M32, M32]]
    with pytest.raises(ValueError, match=r"noise counters must be in \[0, 2\*\*32\), got -1"):
        token_noise(seed_tensor([1], "cpu"), -1, 2, 3)


def test_uniforms_in_open_interval_exact_and_uniform():
    u = token_noise(seed_tensor([7, 8, 9, 10], "cpu"), 2, 32, 4096)  # (4, 32, 4096): 524288 values
    assert u.shape == (4, 32, 4096) and u.dtype == torch.float32
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    scaled = u.double() * 2**24  # every value is a multiple of 2**-24 (or the stand-in for 0, 2**-25)
    assert bool(((scaled == scaled.round()) | (scaled == 0.5)).all())
    assert abs(float(u.mean()) - 0.5) < 0.003 and abs(float(u.var()) - 1 / 12) < 0.002
    n = u.numel()
    # Chi-square over 256 equal buckets: 255 degrees of freedom, mean 255, sd 22.6. Fixed seeds: deterministic.
    top = torch.bincount((u.flatten() * 256).long(), minlength=256).double()
    low = torch.bincount((scaled.flatten().long() % 256), minlength=256).double()  # the lowest 8 of the 24 bits
    for counts in (top, low):
        chi2 = float(((counts - n / 256) ** 2 / (n / 256)).sum())
        assert 150 < chi2 < 400, chi2
    # Serial test: pairs of neighbouring codes on a 16 x 16 grid (255 degrees of freedom again).
    cells = (u[..., :-1:2] * 16).long() * 16 + (u[..., 1::2] * 16).long()
    counts = torch.bincount(cells.flatten(), minlength=256).double()
    expected = cells.numel() / 256
    assert 150 < float(((counts - expected) ** 2 / expected).sum()) < 400


def test_seeds_steps_streams_positions_and_codes_decorrelate():
    seeds = [5, 6, 5 + 2**32, 5 + 2**63, 2**62]  # neighbours in the low half, the high half, the top bit
    u = token_noise(seed_tensor(seeds, "cpu"), 0, 32, 4096)  # (5, 32, 4096): 131072 values a sample
    bound = 0.015  # about 5 standard deviations of a correlation over 131072 independent pairs
    for i in range(len(seeds)):
        for j in range(i + 1, len(seeds)):
            assert abs(_corr(u[i], u[j])) < bound, (seeds[i], seeds[j])
    one = seed_tensor([5], "cpu")
    assert abs(_corr(u[0], token_noise(one, 1, 32, 4096)[0])) < bound  # the next step
    as_confidence = counter_uniforms(one, 1, 0, 32, 4096)[0]  # the confidence stream's counters, same shape
    assert abs(_corr(u[0], as_confidence)) < bound
    assert abs(_corr(u[0, :-1], u[0, 1:])) < bound  # neighbouring positions
    assert abs(_corr(u[0, :, :-1], u[0, :, 1:])) < bound  # neighbouring codes
    # Argmax of the noise (as of its Gumbel transform) with equal logits picks every code equally often.
    picks = torch.bincount(token_noise(seed_tensor(seeds, "cpu"), 0, 4096, 16).argmax(dim=-1).flatten(), minlength=16)
    expected = 5 * 4096 / 16
    assert float(((picks.double() - expected) ** 2 / expected).sum()) < 50  # 15 degrees of freedom: mean 15, sd 5.5


def test_a_sample_draws_the_same_noise_in_any_batch():
    """Rows depend on their own seed only: alone, at any row of any batch size."""
    alone = token_noise(seed_tensor([42], "cpu"), 3, 8, 64)[0]  # (8, 64)
    alone_conf = confidence_noise(seed_tensor([42], "cpu"), 3, 8)[0]  # (8,)
    for batch in ([42, 1, 2], [1, 2, 3, 4, 42], [42, 42], [7] * 6 + [42]):
        seeds = seed_tensor(batch, "cpu")
        tok, conf = token_noise(seeds, 3, 8, 64), confidence_noise(seeds, 3, 8)
        for row in (i for i, s in enumerate(batch) if s == 42):
            assert torch.equal(tok[row], alone) and torch.equal(conf[row], alone_conf)
    # Fewer codes or positions are a prefix of more: a code's number does not depend on the codebook size.
    assert torch.equal(token_noise(seed_tensor([42], "cpu"), 3, 16, 128)[0, :8, :64], alone)


def test_noise_is_made_on_the_seeds_device():
    seeds = seed_tensor([1, 2], "meta")  # no data: shows where every intermediate is allocated
    assert seeds.device.type == "meta"
    assert token_noise(seeds, 0, 4, 8).device.type == "meta"
    assert confidence_noise(seeds, 0, 4).device.type == "meta"
    assert token_noise(seed_tensor([1, 2], "cpu"), 0, 4, 8).device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cpu_and_cuda_draw_identical_noise():
    for device in ("cpu", "cuda"):
        assert token_noise(seed_tensor([1], device), 0, 2, 3).device.type == device
    seeds = EDGE_SEEDS + list(range(100, 356))
    for step in (0, 5):
        cpu = token_noise(seed_tensor(seeds, "cpu"), step, 32, 4096)
        cuda = token_noise(seed_tensor(seeds, "cuda"), step, 32, 4096)
        assert cuda.device.type == "cuda" and torch.equal(cuda.cpu(), cpu)
        assert torch.equal(confidence_noise(seed_tensor(seeds, "cuda"), step, 32).cpu(),
                           confidence_noise(seed_tensor(seeds, "cpu"), step, 32))


def test_legacy_noise_is_the_previous_per_sample_generators():
    """The benchmark's reference path draws what the sampler used to: each sample's generator, step after step."""
    gens = legacy_generators([3, 4])
    steps = [legacy_noise(gens, 4, 8) for _ in range(2)]  # each (2, 4, 8) and (2, 4)
    for row, seed in enumerate([3, 4]):
        g = torch.Generator().manual_seed(seed)
        for tok, conf in steps:
            assert torch.equal(tok[row], torch.rand(4, 8, generator=g))
            assert torch.equal(conf[row], torch.rand(4, generator=g))


# --------------------------------------------------------------------------- sample folders and the scheme
@pytest.fixture(scope="module")
def tiny_pair():
    device = torch.device("cpu")
    gen, _ = load_model("generator", "titok_tiny_bert", {}, device)
    tok, _ = load_model("tokenizer", paired_tokenizer("titok_tiny_bert"), {}, device)
    return gen, tok


def test_shards_write_the_same_samples_as_one_process(tmp_path, tiny_pair):
    gen, tok = tiny_pair
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert generate_samples(gen, tok, whole, 5, run_seed=11, batch_size=2) == 5
    assert generate_samples(gen, tok, split, 5, run_seed=11, batch_size=2, shard=(1, 2)) == 2  # batch 1: samples 2, 3
    assert generate_samples(gen, tok, split, 5, run_seed=11, batch_size=2, shard=(0, 2)) == 3
    for i in range(5):
        assert (split / f"{i:06d}.png").read_bytes() == (whole / f"{i:06d}.png").read_bytes()
    assert json.loads((whole / MANIFEST).read_text())["noise"] == NOISE_SCHEME


@pytest.mark.parametrize("saved", [None, LEGACY_NOISE_SCHEME, HASH_NOISE_SCHEME, "some-other-scheme"])
def test_folder_of_another_noise_scheme_is_refused(tmp_path, tiny_pair, saved):
    gen, tok = tiny_pair
    assert generate_samples(gen, tok, tmp_path, 0, run_seed=1, batch_size=2) == 0  # claims the folder only
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    if saved is None:  # a folder made before the scheme was recorded
        del manifest["noise"]
    else:
        manifest["noise"] = saved
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="noise scheme") as err:
        generate_samples(gen, tok, tmp_path, 2, run_seed=1, batch_size=2)
    message = str(err.value)
    assert repr(saved or LEGACY_NOISE_SCHEME) in message and repr(NOISE_SCHEME) in message
    assert "another --out folder" in message
    assert not list(tmp_path.glob("*.png"))  # nothing was mixed in
    if saved == HASH_NOISE_SCHEME:  # a selectable scheme: the message says how to resume, and that works
        assert f"noise_scheme = {saved!r}" in message
        assert generate_samples(gen, tok, tmp_path, 2, run_seed=1, batch_size=2,
                                sampling={"noise_scheme": saved}) == 2


def test_token_noise_in_row_blocks_draws_what_one_block_does(monkeypatch):
    """The sampler makes the (B, N, K) token noise a block of rows at a time to bound its scratch memory; a block
    boundary must not change a single token (a row's noise is a function of its own seed)."""
    from titok.generators import sampler

    logits = torch.randn(7, 5, 11, generator=torch.Generator().manual_seed(0))
    seeds = seed_tensor(range(100, 107), "cpu")
    whole = sampler._noisy_argmax(logits, seeds, 3, 4.5)
    monkeypatch.setattr(sampler, "NOISE_CHUNK_ELEMENTS", 2 * 5 * 11)  # blocks of 2 rows: 2, 2, 2, 1
    assert torch.equal(sampler._noisy_argmax(logits, seeds, 3, 4.5), whole)
    assert (whole == (logits + 4.5 * sampler._gumbel(token_noise(seeds, 3, 5, 11))).argmax(-1)).all()


def test_legacy_noise_and_the_token_argmax_land_on_the_requested_device():
    """The "meta" device (shapes, no data) shows where results are allocated: the legacy draws are copied to the
    device asked for, and the sampler's block-wise Gumbel argmax writes its codes on the logits' device."""
    from titok.generators import sampler

    tok, conf = legacy_noise(legacy_generators([3, 4]), 2, 3, device="meta")
    assert tok.device.type == conf.device.type == "meta" and tok.shape == (2, 2, 3) and conf.shape == (2, 2)
    codes = sampler._noisy_argmax(torch.empty(2, 3, 5, device="meta"), seed_tensor([1, 2], "meta"), 0, 1.0)
    assert codes.device.type == "meta" and codes.shape == (2, 3) and codes.dtype == torch.long


def test_a_zero_hash_becomes_half_the_smallest_step():
    """The 24-bit value 0 maps to 2**-25, so no uniform is 0. Seed 0, token stream, step 2, position 1313, code 1824
    is a zero of the hash (found by search; its top 24 bits are 0 in the plain-integer reference too)."""
    raw = _reference_uniform(0, 0, 2, 1313, 1824)
    assert raw == 2.0**-25
    u = counter_uniforms(seed_tensor([0], "cpu"), 0, 2, 1314, 1825)
    assert u[0, 1313, 1824].item() == 2.0**-25 and u.min().item() == 2.0**-25
