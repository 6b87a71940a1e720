"""Every released TiTok tokenizer preset has the original's structure and sizes, and loads a state dict in the
original key names.

The parity vectors pin three presets (one per family: two-stage, single-stage VQ, VAE) down to the numbers.
The other presets share those code paths at other sizes, so here each is checked against:
  * the key list of its family's original manifest, with the transformer stacks re-expanded to the preset's
    depth (the original's layout: same names, other layer counts);
  * the sizes published for the release (FACTS.md), written out below independently of titok/presets.py;
  * a synthetic state dict (the parity recipe) over that key list, loaded strictly through the public loader.
"""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch

import titok
from tests.parity_paths import require_parity_dir

PARITY = require_parity_dir()  # skips this module, saying how to get the vectors, where they are absent
sys.path.insert(0, str(PARITY))
from synthetic_weights import synthetic_state_dict  # noqa: E402

SIZES = {"S": (512, 8, 8), "B": (768, 12, 12), "L": (1024, 24, 16)}  # width, layers, heads
# preset: (encoder, decoder, tokens, family manifest, codebook, token channels)
RELEASED = {
    "titok_l32": ("L", "L", 32, "tokenizer_titok_s128", 4096, 12),
    "titok_b64": ("B", "B", 64, "tokenizer_titok_s128", 4096, 12),
    "titok_s128": ("S", "S", 128, "tokenizer_titok_s128", 4096, 12),
    "titok_bl64_vq8k": ("B", "L", 64, "tokenizer_titok_bl64_vq8k", 8192, 64),
    "titok_bl128_vq8k": ("B", "L", 128, "tokenizer_titok_bl64_vq8k", 8192, 64),
    "titok_sl256_vq8k": ("S", "L", 256, "tokenizer_titok_bl64_vq8k", 8192, 64),
    "titok_ll32_vae_c16": ("L", "L", 32, "tokenizer_titok_bl64_vae_c16", None, 16),
    "titok_bl64_vae_c16": ("B", "L", 64, "tokenizer_titok_bl64_vae_c16", None, 16),
    "titok_bl128_vae_c16": ("B", "L", 128, "tokenizer_titok_bl64_vae_c16", None, 16),
}
LAYER = re.compile(r"^(encoder|decoder)\.transformer\.(\d+)\.(.*)$")


def original_key_names(manifest: str, enc_layers: int, dec_layers: int) -> list[str]:
    params = json.loads((PARITY / "vectors" / f"manifest_{manifest}.json").read_text())["parameters"]
    names, seen_layer_keys = [], {}
    for name, _ in params:
        m = LAYER.match(name)
        if not m:
            names.append(name)
            continue
        part, idx, rest = m.groups()
        if idx == "0":
            seen_layer_keys.setdefault(part, []).append(rest)
        if idx == "0" and rest == "mlp.c_proj.bias":  # last key of a block: emit the whole stack here
            depth = enc_layers if part == "encoder" else dec_layers
            names += [f"{part}.transformer.{i}.{r}" for i in range(depth) for r in seen_layer_keys[part]]
    return names


@pytest.mark.parametrize("preset", sorted(RELEASED))
def test_released_preset_matches_original_layout(preset):
    enc, dec, tokens, manifest, codebook, channels = RELEASED[preset]
    (ew, el, eh), (dw, dl, dh) = SIZES[enc], SIZES[dec]
    with torch.device("meta"):
        model = titok.load_tokenizer(preset)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    expected = original_key_names(manifest, el, dl)
    assert sorted(shapes) == sorted(expected)
    # Sizes as published, not as our presets say.
    assert shapes["latent_tokens"] == (tokens, ew)
    assert shapes["encoder.transformer.0.attn.in_proj_weight"] == (3 * ew, ew)
    assert shapes["decoder.transformer.0.attn.in_proj_weight"] == (3 * dw, dw)
    assert model.encoder.transformer[0].attn.heads == eh and model.decoder.transformer[0].attn.heads == dh
    assert shapes["decoder.decoder_embed.weight"] == (dw, channels)
    if codebook is None:
        assert shapes["encoder.conv_out.weight"][0] == 2 * channels  # mean and logvar
        assert model.token_channels == channels
    else:
        assert shapes["quantize.embedding.weight"] == (codebook, channels)
        assert model.codebook_size == codebook
    assert model.num_tokens == tokens and model.image_size == 256


@pytest.mark.parametrize("preset", sorted(RELEASED))
def test_released_preset_loads_synthetic_original_state_dict(preset):
    enc, dec, tokens, manifest, _, _ = RELEASED[preset]
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in titok.load_tokenizer(preset).state_dict().items()}
    names = original_key_names(manifest, SIZES[enc][1], SIZES[dec][1])
    sd = synthetic_state_dict([(n, shapes[n]) for n in names], seed=3)
    model = titok.load_tokenizer(preset, weights=sd)
    assert torch.equal(model.latent_tokens, sd["latent_tokens"])
    del sd, model
