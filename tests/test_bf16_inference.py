"""bf16 inference (`InferenceOptions.precision`, titok/inference.py): what it changes and what it must not.

- the option really changes the compute dtype: the network's Linear layers compute in bf16, and what the model
  hands back is float32;
- the VQ nearest-code search stays float32 under it (a crowded codebook where bf16 distances pick other codes);
- the layer measured to carry bf16's error (the pixel decoder's conv_in, `keep_fp32`) computes in float32 under it;
- the default stays fp32 and bit-identical to a model the options were never applied to, also after a bf16 round;
- speed records say which precision they computed in, bf16 included, on CPU.
No timed assertions: the speed ratios are measured by bench/devtools/bf16_check.py, not by tests.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import titok
from bench.cli import main
from bench.records.store import read_records
from titok.errors import ConfigError
from titok.inference import InferenceOptions, apply_inference_options, cpu_bf16_flags, describe


def _linear_dtypes(model: nn.Module) -> tuple[set, list]:
    """Forward hooks on every Linear: the set of dtypes they computed in (and the handles to remove).

    A hook sees a layer's input before autocast casts it (the first layer after the fp32 VQ lookup gets float32
    and multiplies in bf16), so it reads the output: the dtype of the matrix product itself."""
    seen: set = set()
    handles = [m.register_forward_hook(lambda _m, _inputs, out: seen.add(out.dtype))
               for m in model.modules() if isinstance(m, nn.Linear)]
    return seen, handles


@torch.no_grad()
def test_bf16_option_runs_tokenizer_linears_in_bf16_and_returns_float32():
    torch.manual_seed(0)
    tok = titok.load_tokenizer("titok_tiny_2stage").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    seen, handles = _linear_dtypes(tok)
    codes = tok.encode(x)
    tok.decode(codes)
    assert seen == {torch.float32}
    apply_inference_options(tok, {"precision": "bf16"})
    seen.clear()
    codes16 = tok.encode(x)
    assert seen == {torch.bfloat16}
    seen.clear()
    images = tok.decode(codes16)
    assert seen == {torch.bfloat16}
    assert codes16.dtype == torch.int64 and images.dtype == torch.float32
    for h in handles:
        h.remove()


@torch.no_grad()
def test_bf16_option_runs_generator_in_bf16_and_hands_float32_logits_to_the_sampler():
    torch.manual_seed(0)
    gen = titok.load_generator("titok_tiny_bert").eval()
    apply_inference_options(gen, {"precision": "bf16"})
    seen, _ = _linear_dtypes(gen)
    ids = torch.randint(0, gen.codebook_size + 1, (3, gen.num_tokens), generator=torch.Generator().manual_seed(2))
    logits = gen.logits(ids, torch.tensor([1, 5, 9]))
    assert seen == {torch.bfloat16} and logits.dtype == torch.float32
    tokens = gen.generate(torch.tensor([1, 5]), seeds=[0, 1])
    assert tokens.shape == (2, gen.num_tokens) and int(tokens.min()) >= 0 and int(tokens.max()) < gen.codebook_size


@torch.no_grad()
def test_vq_search_stays_fp32_under_bf16_option():
    """A codebook of pairs of near-identical codes next to the encoder's own features: squared distances computed
    in bf16 (8 bits of mantissa) cannot tell a pair apart, float32 can. The expected codes are a float64 argmin
    written here, on the features the bf16 encoder hands the quantizer."""
    torch.manual_seed(0)
    tok = titok.load_tokenizer("titok_tiny_vq").eval()  # 64 codes of 8 dims, no l2 norm
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = tok.encode_features(x)  # what the bf16 encoder computes, (4, 8, 8)
    flat = z.reshape(-1, z.shape[-1]).double()
    near = flat[:32] + 2e-3 * torch.randn(32, flat.shape[1], generator=torch.Generator().manual_seed(4),
                                          dtype=torch.float64)
    book = torch.cat([flat[:32], near])
    tok.quantize.embedding.weight.copy_(book.float())
    book = tok.quantize.embedding.weight.double()
    want = torch.cdist(flat, book).argmin(1).view(z.shape[:-1])  # float64 nearest codes
    apply_inference_options(tok, {"precision": "bf16"})
    got = tok.encode(x)
    assert torch.equal(got, want)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the search with autocast left on: other codes
        f = flat.float()
        naive = (f.pow(2).sum(1, keepdim=True) + book.float().pow(2).sum(1) - 2 * f @ book.float().t()).argmin(1)
    assert (naive.view_as(want) != want).sum() >= 3


@torch.no_grad()
def test_default_is_fp32_and_bit_identical_to_never_applied():
    torch.manual_seed(0)
    tok = titok.load_tokenizer("titok_tiny_2stage").eval()
    torch.manual_seed(0)
    gen = titok.load_generator("titok_tiny_bert").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    ids = torch.randint(0, gen.codebook_size + 1, (2, gen.num_tokens), generator=torch.Generator().manual_seed(6))
    labels = torch.tensor([3, 4])
    before = tok.encode(x), tok.decode(tok.encode(x)), gen.logits(ids, labels)
    assert InferenceOptions().precision == "fp32"
    for options in ({}, {"precision": "bf16"}, {}):  # a bf16 round, then back: nothing of it remains
        apply_inference_options(tok, options)
        apply_inference_options(gen, options)
    after = tok.encode(x), tok.decode(before[0]), gen.logits(ids, labels)
    for a, b in zip(before, after, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    apply_inference_options(tok, {"precision": "bf16"})
    assert not torch.equal(tok.decode(before[0]), before[1])  # bf16 does change the pixels (the check can fail)


def test_precision_values_and_labels():
    with pytest.raises(ConfigError, match="precision must be one of"):
        InferenceOptions(precision="fp16")
    assert describe(InferenceOptions(precision="bf16")) == "default+bf16"
    assert describe(InferenceOptions(compile=True, precision="bf16")) == "default+compile+bf16"
    ref = InferenceOptions.reference().to_dict()
    assert describe(InferenceOptions.from_dict({**ref, "precision": "bf16"})) == "precision=bf16"


SUITE = """
[suite]
name = "bf16"
[defaults]
iters = 1
warmup = 1
batch_sizes = [2]
[[run]]
task = "speed"
models = ["titok_tiny_vq"]
ops = ["encode"]
options = [{}, { precision = "bf16" }]
[[run]]
task = "speed"
models = ["titok_tiny_vq"]
ops = ["decode"]
precisions = ["fp32", "bf16"]
"""


def test_speed_records_carry_their_precision_on_cpu(tmp_path, capsys):
    suite = tmp_path / "bf16.toml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    assert main(["run", "--suite", str(suite), "--out", str(out)]) == 0
    records = read_records(out / "results.jsonl").records
    got = sorted((r["protocol"]["op"], r["protocol"]["precision"]) for r in records)
    assert got == [("decode", "bf16"), ("decode", "fp32"), ("encode", "bf16"), ("encode", "fp32")]
    for r in records:
        assert not r.get("error") and r["metrics"]["images_per_sec"] > 0
        assert "precision" not in r["protocol"]["options"]  # the protocol's own field says it, once
        assert r["protocol"]["options_label"] == "default"
        assert r["env"]["cpu_bf16"] == cpu_bf16_flags() and r["env"]["cpu_capability"]
    encode = [r for r in records if r["protocol"]["op"] == "encode"]
    assert all(r["protocol"]["interleaved"] for r in encode)  # fp32 and bf16 timed in alternating rounds
    table = (out / "tables" / "speed.md").read_text()
    cells = [[c.strip() for c in line.split("|")] for line in table.splitlines() if "titok_tiny_vq" in line]
    assert sorted((c[2], c[5]) for c in cells) == got  # (op, precision) columns of the rendered table
    json.dumps(records)  # records stay plain JSON


def test_cpu_bf16_detection_and_doctor_line():
    """The flags come from /proc/cpuinfo (read here on its own); the doctor says whether bf16 is native."""
    from bench.checks.stack import stack_report

    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    first = next((line for line in text.splitlines() if line.startswith("flags")), "")
    flags = set(first.split(":", 1)[-1].split())
    want = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    assert cpu_bf16_flags() == want
    line = next(line for line in stack_report()[0] if line.startswith("CPU: "))
    assert (f"native bf16 ({', '.join(want)})" in line) if want else ("no native bf16" in line)


@torch.no_grad()
def test_pixel_decoders_first_conv_stays_fp32_under_bf16_option():
    """The layer measured to carry bf16's error (bench/devtools/bf16_layers.py) computes in float32 under bf16, while
    the convolutions after it still compute in bf16; applying fp32 again removes the wrapper, and a second bf16 round
    does not stack a second one."""
    torch.manual_seed(0)
    tok = titok.load_tokenizer("titok_tiny_2stage").eval()
    codes = torch.randint(0, tok.codebook_size, (2, tok.num_tokens), generator=torch.Generator().manual_seed(1))
    first, later = tok.pixel_decoder.conv_in, tok.pixel_decoder.conv_out
    seen: dict[str, torch.dtype] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, k=k: seen.__setitem__(k, out.dtype))
               for k, m in (("first", first), ("later", later))]
    for _ in range(2):
        apply_inference_options(tok, {"precision": "bf16"})
        tok.decode(codes)
        assert seen == {"first": torch.float32, "later": torch.bfloat16}
    assert "_keeps_fp32" not in getattr(first.forward, "__wrapped__", lambda: None).__dict__  # one wrapper, not two
    apply_inference_options(tok, {})
    assert "forward" not in first.__dict__
    tok.decode(codes)
    assert seen == {"first": torch.float32, "later": torch.float32}
    for h in handles:
        h.remove()
