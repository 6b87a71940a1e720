"""TiTok tokenizer behaviour on the tiny presets: the parity contract, invariants, batching, errors."""

from __future__ import annotations

import pytest
import torch

import titok
from titok.errors import ConfigError
from titok.quantizer import VectorQuantizer
from titok.registry import UnknownPresetError

TINY = ["titok_tiny_2stage", "titok_tiny_vq", "titok_tiny_vae"]


def images(n=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


@pytest.fixture(params=TINY)
def tok(request):
    torch.manual_seed(0)
    return titok.load_tokenizer(request.param).eval()


def test_encode_decode_shapes(tok):
    x = images()
    with torch.no_grad():
        codes = tok.encode(x)
        out = tok.decode(codes)
    if tok.is_vq:
        assert codes.dtype == torch.long and codes.shape == (3, tok.num_tokens)
        assert int(codes.min()) >= 0 and int(codes.max()) < tok.codebook_size
    else:
        assert codes.dtype == torch.float32 and codes.shape == (3, tok.num_tokens, tok.token_channels)
    assert out.shape == x.shape and out.dtype == torch.float32


def test_decode_is_not_clamped():
    # Random weights decode far outside [0,1]; the contract says decode leaves values alone.
    torch.manual_seed(0)
    tok = titok.load_tokenizer("titok_tiny_vq").eval()
    with torch.no_grad():
        out = tok.decode(tok.encode(images()))
    assert out.min() < 0 or out.max() > 1


def test_vq_decodes_through_codebook_entries():
    torch.manual_seed(0)
    tok = titok.load_tokenizer("titok_tiny_2stage").eval()
    with torch.no_grad():
        z = tok.encode_features(images())
        codes = tok.quantize.nearest(z)
        latents = tok.tokens_to_latents(codes)
    book = torch.nn.functional.normalize(tok.quantize.embedding.weight, dim=-1)
    # Every latent the decoder sees is exactly one (l2-normalised) codebook row.
    assert torch.equal(latents, book[codes])
    # And it is the nearest one in cosine terms.
    zn = torch.nn.functional.normalize(z, dim=-1)
    assert torch.equal((zn @ book.t()).argmax(-1), codes)


def test_quantizer_straight_through_and_losses():
    vq = VectorQuantizer(16, 4)
    z = torch.randn(2, 5, 4, requires_grad=True)
    out = vq(z)
    assert torch.allclose(out.quantized, vq.lookup(out.codes))
    out.quantized.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))  # straight-through
    assert out.loss.item() > 0


def test_lookup_rejects_out_of_range():
    vq = VectorQuantizer(16, 4)
    with pytest.raises(ValueError, match="out of range"):
        vq.lookup(torch.tensor([[0, 16]]))


def test_vae_encode_is_posterior_mean():
    torch.manual_seed(0)
    tok = titok.load_tokenizer("titok_tiny_vae").eval()
    x = images()
    with torch.no_grad():
        post = tok.posterior(x)
        assert torch.equal(tok.encode(x), post.mean)
        assert (post.kl() >= 0).all()
        s1 = post.sample(torch.Generator().manual_seed(1))
        s2 = post.sample(torch.Generator().manual_seed(1))
    assert torch.equal(s1, s2) and not torch.equal(s1, post.mean)


def test_batching_does_not_change_results(tok):
    x = images(5)
    whole = tok.reconstruct(x)
    split = tok.reconstruct(x, batch_size=2)
    assert whole.dtype == torch.uint8 and whole.shape == (5, 3, 32, 32)
    assert (whole.int() - split.int()).abs().max() <= 1  # float reassociation may move a value across a rounding edge


def test_reconstruct_accepts_uint8(tok):
    x = (images(2) * 255).round().to(torch.uint8)
    assert tok.reconstruct(x).shape == (2, 3, 32, 32)


def test_wrong_image_size_is_a_clear_error(tok):
    with pytest.raises(ValueError, match="32x32"):
        tok.encode(torch.rand(1, 3, 64, 64))


def test_legacy_layout_is_not_a_transpose():
    # The release's legacy encoder reshape scrambles tokens; the flag must change the output for the same weights.
    torch.manual_seed(0)
    legacy = titok.load_tokenizer("titok_tiny_2stage").eval()
    fixed = titok.load_tokenizer("titok_tiny_2stage", legacy_layout=False, pixel_decoder=None).eval()
    sd = {k: v for k, v in legacy.state_dict().items() if k.startswith(("encoder.", "latent_tokens"))}
    fixed.load_state_dict(sd, strict=False)
    x = images(1)
    with torch.no_grad():
        assert not torch.allclose(legacy.encode_features(x), fixed.encode_features(x))


def test_unknown_preset_lists_known():
    with pytest.raises(UnknownPresetError, match="titok_l32"):
        titok.load_tokenizer("titok_xl1")


def test_unknown_override_is_rejected():
    with pytest.raises(ValueError, match="unknown config key"):
        titok.load_tokenizer("titok_tiny_vq", num_layers=3)
    with pytest.raises(ConfigError, match="num_tokens"):
        titok.load_tokenizer("titok_tiny_vq", num_tokens="8")


def test_proxy_code_logits_two_stage_only():
    torch.manual_seed(0)
    tok = titok.load_tokenizer("titok_tiny_2stage").eval()
    with torch.no_grad():
        logits = tok.proxy_code_logits(tok.encode(images(1)))
    assert logits.shape == (1, 64, 2, 2)
    single = titok.load_tokenizer("titok_tiny_vq")
    with pytest.raises(TypeError):
        single.proxy_code_logits(torch.zeros(1, 8, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_autocast_bf16_close_to_fp32():
    tok = titok.load_tokenizer("titok_tiny_vq").cuda().eval()
    x = images(4).cuda()
    a = tok.reconstruct(x)
    b = tok.reconstruct(x, dtype=torch.bfloat16)
    assert (a.int() - b.int()).abs().float().mean() < 8
