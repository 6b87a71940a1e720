"""Generator contract on the tiny presets: registry, logits, the null class, loading release-style state dicts."""

from __future__ import annotations

import pytest
import torch

import titok
from titok.registry import list_presets

TINY = ["titok_tiny_bert", "titok_tiny_uvit"]


def test_registry_lists_released_generators():
    names = list_presets("generator", family="titok")
    assert {"titok_l32", "titok_b64", "titok_s128"} <= set(names)
    assert "titok_tiny_bert" not in list_presets("generator", include_test=False)


@pytest.mark.parametrize("preset", ["titok_l32", "titok_b64", "titok_s128"])
def test_released_generator_sizes(preset):
    with torch.device("meta"):
        gen = titok.load_generator(preset)
    sd = gen.state_dict()
    emb = sd["model.embeddings.word_embeddings.weight" if preset != "titok_s128" else "embeddings.weight"]
    assert emb.shape[0] == 4096 + 1000 + 2  # codes + mask + classes + null class
    assert gen.tokenizer_preset == preset
    n_params = sum(p.numel() for p in gen.parameters())
    assert 150e6 < n_params < 400e6, n_params


@pytest.fixture(params=TINY)
def gen(request):
    torch.manual_seed(0)
    return titok.load_generator(request.param).eval()


def test_logits_shape_and_conditioning(gen):
    ids = torch.randint(0, gen.codebook_size + 1, (3, gen.num_tokens))
    labels = torch.tensor([0, 5, 999])
    with torch.no_grad():
        cond = gen.logits(ids, labels)
        uncond = gen.logits(ids, labels, unconditional=True)
        other = gen.logits(ids, torch.tensor([1, 6, 998]))
    assert cond.shape == (3, gen.num_tokens, gen.codebook_size)
    assert not torch.allclose(cond, uncond)
    assert not torch.allclose(cond, other)
    # The null class ignores the label.
    with torch.no_grad():
        assert torch.allclose(uncond, gen.logits(ids, torch.tensor([7, 8, 9]), unconditional=True))


def test_per_row_unconditional_mask(gen):
    ids = torch.full((2, gen.num_tokens), gen.mask_token_id)
    labels = torch.tensor([3, 3])
    with torch.no_grad():
        mixed = gen.logits(ids, labels, unconditional=torch.tensor([False, True]))
        cond = gen.logits(ids, labels)
        uncond = gen.logits(ids, labels, unconditional=True)
    assert torch.allclose(mixed[0], cond[0], atol=1e-6) and torch.allclose(mixed[1], uncond[1], atol=1e-6)


def test_bad_labels_and_shapes_are_errors(gen):
    ids = torch.zeros(1, gen.num_tokens, dtype=torch.long)
    with pytest.raises(ValueError, match="class labels"):
        gen.logits(ids, torch.tensor([1000]))
    with pytest.raises(ValueError, match="input_ids"):
        gen.logits(torch.zeros(1, gen.num_tokens + 1, dtype=torch.long), torch.tensor([1]))


def test_bert_accepts_hf_index_buffers():
    torch.manual_seed(0)
    src = titok.load_generator("titok_tiny_bert")
    sd = dict(src.state_dict())
    sd["model.embeddings.position_ids"] = torch.arange(src.num_tokens + 1)[None]
    sd["model.embeddings.token_type_ids"] = torch.zeros(1, src.num_tokens + 1, dtype=torch.long)
    dst = titok.load_generator("titok_tiny_bert", weights=sd)
    ids = torch.zeros(1, src.num_tokens, dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(dst.eval().logits(ids, torch.tensor([1])), src.eval().logits(ids, torch.tensor([1])))
