"""The fast inference path computes what the reference path computes (titok/inference.py).

Every option is checked on its own and all together against `InferenceOptions.reference()`, on every family's
tiny preset, within the parity tolerances (decoded images 2e-3, logits 1e-3, tokens equal); the fused upsampling
is also checked against the plain one on odd sizes and real widths.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import baselines
import titok
from titok.errors import ConfigError, NotSupportedError
from titok.inference import InferenceOptions, apply_inference_options, describe, options_of, upsample_conv

SINGLE = [{"attention": "sdpa"}, {"cfg_batched": True}, {"channels_last": True}, {"fused_upsample": True}]
TOKENIZERS = [(titok, "titok_tiny_2stage"), (titok, "titok_tiny_vq"), (titok, "titok_tiny_vae"),
              (baselines, "maskgit_vqgan_tiny"), (baselines, "maskgit_torch_vqgan_tiny"),
              (baselines, "taming_vqgan_tiny")]


def with_options(model: nn.Module, **changes) -> nn.Module:
    ref = InferenceOptions.reference().to_dict()
    return apply_inference_options(copy.deepcopy(model), {**ref, **changes})


@pytest.mark.parametrize("h,w", [(1, 1), (2, 3), (5, 4), (16, 16)])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_upsample_equals_interpolate_then_conv(h, w, bias):
    torch.manual_seed(h * 10 + w)
    conv = nn.Conv2d(8, 6, 3, padding=1, bias=bias)
    x = torch.randn(2, 8, h, w)
    plain = upsample_conv(x, conv, fused=False)
    fused = upsample_conv(x, conv, fused=True)
    assert fused.shape == plain.shape == (2, 6, 2 * h, 2 * w)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)


def test_fused_upsample_refuses_other_convolutions():
    with pytest.raises(ValueError, match="3x3"):
        upsample_conv(torch.randn(1, 4, 4, 4), nn.Conv2d(4, 4, 1), fused=True)


@pytest.mark.parametrize("module,preset", TOKENIZERS, ids=[p for _, p in TOKENIZERS])
def test_tokenizer_options_match_reference(module, preset):
    torch.manual_seed(0)
    tok = module.load_tokenizer(preset).eval()
    x = torch.rand(2, 3, tok.image_size, tok.image_size)
    ref = with_options(tok)
    with torch.no_grad():
        codes = ref.encode(x)
        images = ref.decode(codes)
        for changes in [*SINGLE, InferenceOptions().to_dict()]:
            fast = with_options(tok, **changes)
            got = fast.encode(x)
            if tok.is_vq:
                assert torch.equal(got, codes), changes
            else:
                torch.testing.assert_close(got, codes, atol=1e-4, rtol=0)
            decoded = fast.decode(codes)
            assert decoded.is_contiguous()  # users get NCHW back whatever the layout inside
            torch.testing.assert_close(decoded, images, atol=2e-3, rtol=0, msg=str(changes))


@pytest.mark.parametrize("module,preset", [(titok, "titok_tiny_bert"), (titok, "titok_tiny_uvit"),
                                           (baselines, "maskgit_tiny")], ids=["titok_tiny_bert", "titok_tiny_uvit",
                                                                              "maskgit_tiny"])
def test_generator_options_match_reference(module, preset):
    torch.manual_seed(0)
    gen = module.load_generator(preset).eval()
    ids = torch.randint(0, gen.codebook_size + 1, (3, gen.num_tokens))
    labels = torch.tensor([1, 5, 9])
    ref = with_options(gen)
    with torch.no_grad():
        logits = ref.logits(ids, labels)
        tokens = ref.generate(labels, seeds=[1, 2, 3])
        for changes in [*SINGLE, InferenceOptions().to_dict()]:
            fast = with_options(gen, **changes)
            torch.testing.assert_close(fast.logits(ids, labels), logits, atol=1e-3, rtol=0)
            assert torch.equal(fast.generate(labels, seeds=[1, 2, 3]), tokens), changes


def test_options_reach_every_submodule_and_convolution_weights():
    tok = apply_inference_options(titok.load_tokenizer("titok_tiny_2stage"), {"channels_last": True})
    assert all(options_of(m).channels_last for m in tok.modules())
    conv = tok.pixel_decoder.conv_in
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    apply_inference_options(tok, InferenceOptions.reference())
    assert conv.weight.is_contiguous() and not options_of(tok.pixel_decoder).fused_upsample


def test_options_are_validated():
    with pytest.raises(ValueError, match="unknown config key 'flash'"):
        InferenceOptions.parse({"flash": True})
    with pytest.raises(ConfigError, match="channels_last"):
        InferenceOptions.parse({"channels_last": "yes"})
    with pytest.raises(ValueError, match="attention"):
        InferenceOptions(attention="xformers")
    with pytest.raises(NotSupportedError, match="not supported: cuda_graphs"):
        apply_inference_options(titok.load_tokenizer("titok_tiny_vq"), {"cuda_graphs": True})


def test_labels_name_what_differs_from_reference():
    assert describe(InferenceOptions.reference()) == "reference"
    assert describe(InferenceOptions()) == "default"
    assert describe(InferenceOptions(channels_last=False)) == "attention=sdpa+cfg_batched+fused_upsample"
    assert describe(InferenceOptions(compile=True)) == "default+compile"
    label = describe(InferenceOptions(channels_last=False, compile=True))
    assert label == "attention=sdpa+cfg_batched+fused_upsample+compile"


@pytest.mark.slow
def test_compiled_decode_matches_eager():
    torch.manual_seed(0)
    tok = titok.load_tokenizer("titok_tiny_2stage").eval()
    codes = torch.randint(0, tok.codebook_size, (2, tok.num_tokens))
    with torch.no_grad():
        eager = tok.decode(codes)
        compiled = apply_inference_options(copy.deepcopy(tok), {"compile": True})
        assert "decode" in vars(compiled)  # the method is wrapped on the instance
        torch.testing.assert_close(compiled.decode(codes), eager, atol=2e-3, rtol=0)
        apply_inference_options(compiled, {})
        assert "decode" not in vars(compiled)  # and unwrapped when options are applied afresh


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
@pytest.mark.parametrize("changes", [{"compile": True}, {"cuda_graphs": True}], ids=["compile", "cuda_graphs"])
def test_compiled_sampling_on_cuda_matches_eager(changes):
    torch.manual_seed(0)
    gen = titok.load_generator("titok_tiny_bert").cuda().eval()
    labels = torch.arange(4, device="cuda")
    with torch.no_grad():
        eager = gen.generate(labels, seeds=[0, 1, 2, 3])
        fast = apply_inference_options(copy.deepcopy(gen), changes)
        for _ in range(2):  # the second call replays what the first recorded
            assert torch.equal(fast.generate(labels, seeds=[0, 1, 2, 3]), eager)
