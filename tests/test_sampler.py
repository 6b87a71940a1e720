"""MaskGIT sampler: schedule, guidance, reproducibility across batch splits and orders, noise made on the model's
device, and equality with a reference two-pass implementation of the release's loop."""

from __future__ import annotations

import math

import pytest
import torch

import titok
from titok.generators import sampler
from titok.generators.config import SamplingConfig
from titok.generators.noise import (
    HASH_NOISE_SCHEME,
    NOISE_SCHEME,
    confidence_noise,
    counter_uniforms,
    seed_tensor,
    token_noise,
    token_uniforms,
)
from titok.generators.sampler import guidance_scale_at, masked_count, sample_tokens


@pytest.fixture(scope="module", params=["titok_tiny_bert", "titok_tiny_uvit"])
def gen(request):
    torch.manual_seed(0)
    return titok.load_generator(request.param).eval()


def test_schedule_is_arccos_and_ends_unmasked():
    n, steps = 32, 8
    left, counts = n, []
    for s in range(steps):
        left = masked_count(s, steps, n, left)
        counts.append(left)
    expected = [max(1, math.floor(n * math.acos((s + 1) / steps) / (math.pi / 2))) for s in range(steps - 1)] + [0]
    assert counts == expected
    assert all(a > b for a, b in zip(counts, counts[1:], strict=False))


@pytest.mark.parametrize("decay", ["constant", "linear", "power-cosine"])
def test_sampling_unmasks_on_schedule(gen, decay):
    s = SamplingConfig(num_steps=5, randomize_temperature=3.0, guidance_scale=2.0, guidance_decay=decay)
    res = sample_tokens(gen, torch.tensor([1, 2, 3]), s, seeds=[0, 1, 2])
    left, expected = gen.num_tokens, []
    for step in range(s.num_steps):
        left = masked_count(step, s.num_steps, gen.num_tokens, left)
        expected.append(left)
    assert res.masked_after_step == expected
    assert res.tokens.shape == (3, gen.num_tokens)
    assert (res.tokens != gen.mask_token_id).all() and int(res.tokens.max()) < gen.codebook_size


def test_same_seed_same_tokens_across_batch_splits(gen):
    labels = torch.tensor([4, 8, 15, 16])
    seeds = [100, 101, 102, 103]
    whole = gen.generate(labels, seeds=seeds)
    assert torch.equal(whole, gen.generate(labels, seeds=seeds))
    halves = torch.cat([gen.generate(labels[:2], seeds=seeds[:2]), gen.generate(labels[2:], seeds=seeds[2:])])
    uneven = torch.cat([gen.generate(labels[:1], seeds=seeds[:1]), gen.generate(labels[1:], seeds=seeds[1:])])
    assert torch.equal(whole, halves) and torch.equal(whole, uneven)
    assert not torch.equal(whole, gen.generate(labels, seeds=[1, 2, 3, 4]))


def test_a_sample_is_the_same_alone_and_at_any_row_of_any_batch(gen):
    """Noise is a function of the sample's own seed: batch size, row and neighbours change nothing."""
    alone = {seed: gen.generate(torch.tensor([seed % 10]), seeds=[seed])[0] for seed in (3, 7, 2**40 + 1)}
    for batch in ([7, 3], [2**40 + 1, 5, 7, 6, 3], [9, 9, 9, 3, 2**40 + 1, 7]):
        tokens = gen.generate(torch.tensor([s % 10 for s in batch]), seeds=batch)
        for row, seed in enumerate(batch):
            if seed in alone:
                assert torch.equal(tokens[row], alone[seed]), (batch, row)


@pytest.mark.parametrize("scheme,token_draw", [(NOISE_SCHEME, "token_uniforms"), (HASH_NOISE_SCHEME, "token_noise")])
def test_noise_is_made_on_the_model_device_and_only_where_it_counts(gen, monkeypatch, scheme, token_draw):
    """Every draw gets the seeds as a tensor on the model's device; none where the temperature is 0."""
    calls = []

    def spy(draw):
        def wrapped(seeds, step, *sizes):
            calls.append((draw.__name__, step, seeds.device))
            out = draw(seeds, step, *sizes)
            assert out.device == seeds.device
            return out
        return wrapped

    for draw in (token_noise, token_uniforms, confidence_noise):
        monkeypatch.setattr(sampler, draw.__name__, spy(draw))
    device = next(gen.parameters()).device
    s = SamplingConfig(num_steps=4, randomize_temperature=2.0, noise_scheme=scheme)
    sample_tokens(gen, torch.tensor([1, 2]), s, seeds=[0, 1])
    # The last step's temperature is 0: its noise would be multiplied by 0, so none is made.
    assert calls == [(name, step, device) for step in range(3) for name in (token_draw, "confidence_noise")]
    calls.clear()
    sample_tokens(gen, torch.tensor([1, 2]), SamplingConfig(num_steps=4, randomize_temperature=0.0,
                                                            noise_scheme=scheme), seeds=[0, 1])
    assert calls == []


def test_torch_generator_is_reproducible(gen):
    a = gen.generate(torch.tensor([1, 2]), generator=torch.Generator().manual_seed(7))
    b = gen.generate(torch.tensor([1, 2]), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_guidance_schedules():
    lin = SamplingConfig(num_steps=4, guidance_scale=4.0, guidance_decay="linear")
    assert [guidance_scale_at(s, lin) for s in range(4)] == [0.0, 1.0, 2.0, 3.0]
    const = SamplingConfig(num_steps=4, guidance_scale=4.0, guidance_decay="constant")
    assert {guidance_scale_at(s, const) for s in range(4)} == {4.0}
    pc = SamplingConfig(num_steps=4, guidance_scale=6.9, guidance_decay="power-cosine")
    scales = [guidance_scale_at(s, pc) for s in range(4)]
    assert scales[0] == 1.0 and all(a <= b for a, b in zip(scales, scales[1:], strict=False)) and scales[-1] < 6.9
    with pytest.raises(ValueError, match="guidance_decay"):
        SamplingConfig(guidance_decay="cosine")


def _reference_sample(gen, labels, s: SamplingConfig, seeds):
    """The release's loop written plainly: two forward passes per guided step, the same noise drawn sample by
    sample (and on every step, also where its temperature is 0)."""
    one = [seed_tensor([x], "cpu") for x in seeds]  # (1, 2) each
    b, n, k = len(labels), gen.num_tokens, gen.codebook_size
    ids = torch.full((b, n), gen.mask_token_id)
    for step in range(s.num_steps):
        ratio = (step + 1) / s.num_steps
        temp = s.randomize_temperature * (1 - ratio)
        is_mask = ids == gen.mask_token_id
        cfg = guidance_scale_at(step, s)
        cond = gen.logits(ids, labels)
        if cfg != 0:
            uncond = gen.logits(ids, labels, unconditional=True)
            logits = (uncond if s.guidance_decay == "power-cosine" else cond) + (cond - uncond) * cfg
        else:
            logits = cond
        if s.softmax_temperature_annealing:
            logits = logits / (0.5 + 0.8 * (1 - ratio))
        u2 = torch.cat([confidence_noise(x, step, n) for x in one])  # (B, N)
        gumbel = lambda u: -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))  # noqa: E731
        if s.noise_scheme == HASH_NOISE_SCHEME:
            u1 = torch.cat([token_noise(x, step, n, k) for x in one])  # (B, N, K)
            sampled = (logits + temp * gumbel(u1)).argmax(-1)
        elif temp == 0:
            sampled = logits.argmax(-1)
        else:  # inverse CDF of softmax(logits / temp) at the one uniform of stream 3, row by row, in float32
            u = torch.cat([counter_uniforms(x, 3, step, n, 1)[..., 0] for x in one])  # (B, N)
            w = ((logits - logits.max(-1, keepdim=True).values) / temp).exp()
            cdf = torch.stack([torch.stack([w[i, p].cumsum(0) for p in range(n)]) for i in range(b)])
            t = torch.minimum(u * cdf[..., -1], torch.nextafter(cdf[..., -1], torch.tensor(0.0)))
            sampled = (cdf <= t[..., None]).sum(-1)  # the first code whose running sum passes t
        sl = torch.gather(logits, -1, sampled[..., None])[..., 0]
        if s.confidence == "log-prob":  # log softmax of the (annealed) logits at the sampled code
            sl = sl - torch.log(torch.exp(logits.double()).sum(-1)).float()
        sampled = torch.where(is_mask, sampled, ids)
        sl = torch.where(is_mask, sl, torch.tensor(float("inf")))
        mask_len = math.floor(n * math.acos(ratio) / (math.pi / 2))
        mask_len = max(1, min(int(is_mask[0].sum()) - 1, mask_len))
        conf = sl + temp * gumbel(u2)
        cut = torch.sort(conf, dim=-1).values[:, mask_len - 1 : mask_len]
        ids = sampled if step == s.num_steps - 1 else torch.where(conf <= cut, gen.mask_token_id, sampled)
    return ids


@pytest.mark.parametrize("scheme", [NOISE_SCHEME, HASH_NOISE_SCHEME])
@pytest.mark.parametrize("decay,confidence", [("constant", "logit"), ("linear", "logit"), ("power-cosine", "logit"),
                                              ("linear", "log-prob")])
def test_batched_guidance_equals_two_pass_reference(gen, decay, confidence, scheme):
    s = SamplingConfig(num_steps=6, randomize_temperature=2.0, guidance_scale=3.0, guidance_decay=decay,
                       confidence=confidence, noise_scheme=scheme)
    labels, seeds = torch.tensor([10, 20, 30]), [5, 6, 7]
    with torch.no_grad():
        ref = _reference_sample(gen, labels, s, seeds)
    assert torch.equal(sample_tokens(gen, labels, s, seeds=seeds).tokens, ref)


def test_sampling_overrides_are_validated(gen):
    with pytest.raises(ValueError, match="unknown config key"):
        gen.generate(torch.tensor([1]), seeds=[0], num_step=3)
    assert gen.generate(torch.tensor([1]), seeds=[0], num_steps=2).shape == (1, gen.num_tokens)


def test_schedule_and_seed_inputs_are_checked_and_random_seeds_spread():
    with pytest.raises(ValueError, match="unknown mask schedule 'linear'"):
        masked_count(0, 4, 16, 16, "linear")
    with pytest.raises(ValueError, match="got 2 seeds for 3 labels"):
        sampler._per_sample_seeds(3, [1, 2], None)
    # Without seeds, each sample gets its own from [0, 2**62): 2,000 draws never collide and reach far up.
    seeds = sampler._per_sample_seeds(2000, None, torch.Generator().manual_seed(0))
    assert len(set(seeds)) == 2000 and 0 <= min(seeds) and max(seeds) < 2**62 and max(seeds) > 2**60
