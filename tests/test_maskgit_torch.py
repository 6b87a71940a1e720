"""The MaskGIT baseline with hmorimitsu/maskgit-torch's weights: key mapping, MaskGIT's sampling, and generation
from the tokenizer/generator pair through `titok-bench generate`, on tiny random weights saved as maskgit-torch's
`.ckpt` files are (`torch.save({"state_dict": ...})`, no key prefix). Numerical parity with maskgit-torch itself is
tests/test_parity.py's (the vectors in ../shared/parity/vectors-maskgit-torch)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import baselines
from baselines.maskgit_generator import MASKGIT_TORCH_SAMPLING
from baselines.maskgit_torch_keys import maskgit_torch_name
from bench.cli import main
from bench.run.tasks.gen import sample_seed
from titok.configs import VQGANConfig
from titok.contract import to_uint8
from titok.errors import ConfigError
from titok.generators.noise import confidence_noise, seed_tensor, token_noise
from titok.generators.sampler import sample_tokens
from titok.weights import WeightsError


def maskgit_torch_state_dict(tok) -> dict[str, torch.Tensor]:
    """A tokenizer's weights under maskgit-torch's names, as its release files hold them."""
    return {maskgit_torch_name(k, tok.config.vqgan): v.clone() for k, v in tok.state_dict().items()}


def save_ckpt(path, state_dict) -> str:
    torch.save({"state_dict": state_dict}, path)
    return str(path)


# ------------------------------------------------------------------------------------------- key mapping
def test_tiny_names_follow_maskgit_torch_layout():
    # Spelled out by hand from maskgit-torch's vqgan_tokenizer.py for 3 levels of 1 block: encoder levels 0-2 and
    # the middle blocks as level 3; decoder middle blocks first, then levels from the top; Upsample at index 1.
    tok = baselines.load_tokenizer("maskgit_torch_vqgan_tiny")
    names = set(maskgit_torch_state_dict(tok))
    for key in ("quantizer.codebook.weight", "encoder.conv_in.weight", "encoder.res_blocks.2.0.conv_res.weight",
                "encoder.res_blocks.3.0.conv1.weight", "encoder.norm_out.bias", "decoder.res_blocks.0.0.norm0.weight",
                "decoder.res_blocks.2.0.conv_res.weight", "decoder.res_blocks.1.2.weight",
                "decoder.res_blocks.2.2.bias", "decoder.res_blocks.3.0.norm1.bias", "decoder.conv_out.weight"):
        assert key in names, key
    assert not any(".down." in k or ".up." in k or ".mid." in k or "nin_shortcut" in k for k in names)
    assert "decoder.res_blocks.1.0.conv_res.weight" not in names  # the top level keeps its width
    assert "decoder.res_blocks.3.2.weight" not in names  # the bottom level does not upsample


def test_full_size_names_equal_the_recorded_manifest():
    """Our names mapped for the 256/512 network are exactly the keys and shapes maskgit-torch's model holds."""
    from tests.parity_paths import parity_dir

    try:
        manifest_path = parity_dir() / "vectors-maskgit-torch" / "manifest_maskgit_torch_vqgan_256.json"
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    manifest = {name: tuple(shape) for name, shape in json.loads(manifest_path.read_text())["parameters"]}
    with torch.device("meta"):
        tok = baselines.load_tokenizer("maskgit_torch_vqgan_256")
    ours = {maskgit_torch_name(k, tok.config.vqgan): tuple(v.shape) for k, v in tok.state_dict().items()}
    assert ours == manifest


@pytest.mark.slow
def test_groupnorm_eps_is_what_the_recording_computed(monkeypatch):
    """check.py's 2e-3 decode tolerance also passes with the TiTok release's eps 1e-6 (1.5e-3 off on this vector);
    maskgit-torch's 1e-5 lands 40x closer. Pin it with a tolerance that tells the two apart."""
    from tests.parity_paths import parity_dir

    try:
        d = parity_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    monkeypatch.syspath_prepend(str(d))
    from synthetic_weights import load_manifest, synthetic_state_dict

    v = np.load(d / "vectors-maskgit-torch" / "maskgit_torch_vqgan_256_seed1.npz")
    sd = synthetic_state_dict(load_manifest(d / "vectors-maskgit-torch" / "manifest_maskgit_torch_vqgan_256.json"), 1)
    codes = torch.from_numpy(v["tokens"].reshape(2, -1))
    errors = {}
    for eps in (1e-5, 1e-6):
        tok = baselines.load_tokenizer("maskgit_torch_vqgan_256", weights=sd,
                                       vqgan=dataclasses.replace(VQGANConfig(), norm_eps=eps)).eval()
        with torch.no_grad():
            errors[eps] = float((tok.decode(codes) - torch.from_numpy(v["decoded_from_tokens"])).abs().max())
    assert baselines.load_tokenizer("maskgit_torch_vqgan_256").config.vqgan.norm_eps == 1e-5
    assert errors[1e-5] < 2e-4 < errors[1e-6], errors


def test_ckpt_file_loads_and_reconstructs_like_the_source(tmp_path):
    torch.manual_seed(0)
    src = baselines.load_tokenizer("maskgit_torch_vqgan_tiny").eval()
    path = save_ckpt(tmp_path / "tokenizer_imagenet256.ckpt", maskgit_torch_state_dict(src))
    dst = baselines.load_tokenizer("maskgit_torch_vqgan_tiny", weights=path).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(dst.encode(x), src.encode(x))
        torch.testing.assert_close(dst.decode(src.encode(x)), src.decode(src.encode(x)), atol=0, rtol=0)
    assert dst.decoder.norm_out.eps == 1e-5  # maskgit-torch's GroupNorm eps (the TiTok release's is 1e-6)


def test_missing_key_is_named_as_in_the_file(tmp_path):
    sd = maskgit_torch_state_dict(baselines.load_tokenizer("maskgit_torch_vqgan_tiny"))
    del sd["encoder.res_blocks.2.0.conv_res.weight"]
    path = save_ckpt(tmp_path / "tok.ckpt", sd)
    with pytest.raises(WeightsError) as err:
        baselines.load_tokenizer("maskgit_torch_vqgan_tiny", weights=path)
    msg = str(err.value)
    assert "tok.ckpt" in msg and "1 missing keys: encoder.res_blocks.2.0.conv_res.weight" in msg
    assert "unexpected" not in msg and "nin_shortcut" not in msg


def test_renamed_key_is_named_both_ways():
    sd = maskgit_torch_state_dict(baselines.load_tokenizer("maskgit_torch_vqgan_tiny"))
    sd["quantizer.embedding.weight"] = sd.pop("quantizer.codebook.weight")
    with pytest.raises(WeightsError, match=r"missing keys: quantizer\.codebook\.weight.*unexpected keys: "
                                           r"quantizer\.embedding\.weight"):
        baselines.load_tokenizer("maskgit_torch_vqgan_tiny", weights=sd)


def test_mis_shaped_key_is_named():
    sd = maskgit_torch_state_dict(baselines.load_tokenizer("maskgit_torch_vqgan_tiny"))
    sd["decoder.res_blocks.1.2.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"decoder\.res_blocks\.1\.2\.weight: checkpoint \(1,\)"):
        baselines.load_tokenizer("maskgit_torch_vqgan_tiny", weights=sd)


def test_titok_release_preset_refuses_a_maskgit_torch_file():
    sd = maskgit_torch_state_dict(baselines.load_tokenizer("maskgit_torch_vqgan_tiny"))
    with pytest.raises(WeightsError, match="maskgit_torch_vqgan_256"):
        baselines.load_tokenizer("maskgit_vqgan_tiny", weights=sd)


def test_own_checkpoint_round_trips(tmp_path):
    from titok.registry import save_checkpoint

    torch.manual_seed(0)
    src = baselines.load_tokenizer("maskgit_torch_vqgan_tiny")
    path = save_checkpoint(src, tmp_path / "tok.safetensors", "tokenizer")
    dst = baselines.load_tokenizer(None, weights=path)
    assert dst.preset == "maskgit_torch_vqgan_tiny"
    assert torch.equal(dst.quantize.embedding.weight, src.quantize.embedding.weight)


def test_generator_file_with_a_missing_key_is_named(tmp_path):
    sd = dict(baselines.load_generator("maskgit_tiny").state_dict())
    assert {"tok_emb.weight", "pos_emb", "bias", "emb_ln.weight", "Token_Prediction.2.bias",
            "blocks.1.MultiHeadAttention.in_proj_weight", "blocks.0.MLP.2.weight"} <= set(sd)  # maskgit-torch's names
    del sd["Token_Prediction.2.bias"]
    with pytest.raises(WeightsError, match=r"gen\.ckpt.*1 missing keys: Token_Prediction\.2\.bias"):
        baselines.load_generator("maskgit_tiny", weights=save_ckpt(tmp_path / "gen.ckpt", sd))


def test_full_size_generators_have_the_published_sizes():
    # FACTS.md: the MaskGIT transformer has 172.5M parameters at 256 and 173.0M at 512 (position embeddings).
    for preset, params, tokens in (("maskgit_256", 172.5e6, 256), ("maskgit_512", 173.0e6, 1024)):
        with torch.device("meta"):
            gen = baselines.load_generator(preset)
        assert gen.num_tokens == tokens and gen.codebook_size == 1024 and gen.config.vocab_size == 2025
        assert abs(sum(p.numel() for p in gen.parameters()) - params) < 0.05e6


# --------------------------------------------------------------------------------------------- sampling
def test_presets_sample_as_maskgit():
    from titok.registry import get_spec

    for preset, steps, tokenizer in (("maskgit_256", 8, "maskgit_torch_vqgan_256"),
                                     ("maskgit_512", 12, "maskgit_torch_vqgan_512")):
        spec = get_spec("generator", preset)
        s = spec.config.sampling
        assert (s.num_steps, s.randomize_temperature, s.guidance_scale) == (steps, 4.5, 0.0)
        assert (s.mask_schedule, s.token_sampling, s.confidence) == ("cosine", "categorical", "log-prob")
        assert not s.softmax_temperature_annealing and spec.tokenizer == tokenizer
        assert spec.extra["maskgit_torch_sampling"] == MASKGIT_TORCH_SAMPLING == {"num_steps": 16}
        assert "maskgit_imagenet" in spec.released_weights and "hmorimitsu/maskgit-torch" in spec.released_weights


def maskgit_decode(gen, labels: torch.Tensor, seeds: list[int], num_steps: int, choice_temperature: float):
    """MaskGIT's parallel decoding written out from google-research/maskgit's `decode` (as maskgit-torch ports it),
    drawing its randomness from the project's counter noise so that the tokens can be compared exactly."""
    n, k = gen.num_tokens, gen.codebook_size
    noise = seed_tensor(seeds, "cpu")
    ids = torch.full((len(labels), n), k)  # the contract's mask id
    for step in range(num_steps):
        probs = gen.logits(ids, labels).softmax(-1)  # (B, N, K)
        gumbel = -torch.log(-torch.log(token_noise(noise, step, n, k)))
        sampled = (probs.log() + gumbel).argmax(-1)  # a categorical draw at temperature 1
        unknown = ids == k
        sampled = torch.where(unknown, sampled, ids)
        if step == num_steps - 1:
            return sampled
        ratio = (step + 1) / num_steps
        selected = torch.where(unknown, probs.gather(-1, sampled[..., None])[..., 0], torch.tensor(math.inf))
        mask_len = math.floor(n * max(1e-6, math.cos(math.pi / 2 * ratio)))
        mask_len = max(1, min(int(unknown[0].sum()) - 1, mask_len))
        conf_gumbel = -torch.log(-torch.log(confidence_noise(noise, step, n)))
        confidence = selected.log() + choice_temperature * (1 - ratio) * conf_gumbel
        cutoff = confidence.sort(-1).values[:, mask_len - 1 : mask_len]
        ids = torch.where(confidence <= cutoff, k, sampled)


def test_sampler_equals_maskgit_decoding_written_out():
    torch.manual_seed(0)
    gen = baselines.load_generator("maskgit_tiny").eval()
    labels, seeds = torch.tensor([3, 141, 999]), [5, 6, 7]
    with torch.no_grad():
        want = maskgit_decode(gen, labels, seeds, num_steps=6, choice_temperature=4.5)
        # The written-out loop draws its tokens by Gumbel-max, as the counter-hash-v1 scheme does.
        got = gen.generate(labels, seeds=seeds, num_steps=6, noise_scheme="counter-hash-v1")
        # The TiTok recipe on the same network and noise picks other tokens: the settings are what decides.
        titok_recipe = gen.generate(labels, seeds=seeds, num_steps=6, mask_schedule="arccos",
                                    token_sampling="annealed-gumbel", confidence="logit",
                                    noise_scheme="counter-hash-v1")
    assert torch.equal(got, want)
    assert not torch.equal(titok_recipe, want)


def test_cosine_schedule_counts():
    gen = baselines.load_generator("maskgit_tiny").eval()
    with torch.no_grad():
        res = sample_tokens(gen, torch.tensor([1]), dataclasses.replace(gen.sampling, num_steps=8), seeds=[0])
    n = gen.num_tokens
    assert res.masked_after_step == [math.floor(n * math.cos(math.pi / 2 * t / 8)) for t in range(1, 8)] + [0]


def test_guidance_and_unconditional_logits_are_refused():
    gen = baselines.load_generator("maskgit_tiny").eval()
    with pytest.raises(ConfigError, match="no null class"):
        gen.generate(torch.tensor([1]), seeds=[0], guidance_scale=2.0)
    with pytest.raises(ValueError, match="no null class"):
        gen.logits(torch.full((1, gen.num_tokens), gen.codebook_size), torch.tensor([1]), unconditional=True)


def test_samples_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    gen = baselines.load_generator("maskgit_tiny").eval()
    labels, seeds = torch.tensor([4, 8, 15]), [16, 23, 42]
    with torch.no_grad():
        together = gen.generate(labels, seeds=seeds)
        alone = torch.cat([gen.generate(labels[i:i + 1], seeds=seeds[i:i + 1]) for i in range(3)])
    assert torch.equal(together, alone)


# ----------------------------------------------------------------------------------- generation, the pair
def test_generate_command_with_maskgit_torch_files(tmp_path, capsys):
    torch.manual_seed(0)
    tok = baselines.load_tokenizer("maskgit_torch_vqgan_tiny")
    gen = baselines.load_generator("maskgit_tiny")
    tok_path = save_ckpt(tmp_path / "tokenizer_imagenet256.ckpt", maskgit_torch_state_dict(tok))
    gen_path = save_ckpt(tmp_path / "maskgit_imagenet256.ckpt", dict(gen.state_dict()))
    common = ["generate", "--model", "maskgit_tiny", "--weights", gen_path, "--tokenizer-weights", tok_path,
              "--labels", "1,7,282", "--num", "3"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*common, "--out", str(a), "--batch-size", "2"]) == 0
    for shard in ("0/2", "1/2", "1/2"):  # two processes, the second run twice (a resume): the same bytes
        assert main([*common, "--out", str(b), "--batch-size", "2", "--shard", shard]) == 0
    assert "wrote 0 new samples" in capsys.readouterr().out.splitlines()[-1]
    names = sorted(p.name for p in a.glob("*.png"))
    assert names == ["000000.png", "000001.png", "000002.png"]
    for name in names:
        assert Image.open(a / name).size == (32, 32)
        assert (a / name).read_bytes() == (b / name).read_bytes()
    # Sample 2 is class 282 with seed sample_seed(0, 2), decoded by the tokenizer the file holds.
    with torch.no_grad():
        tokens = gen.eval().generate(torch.tensor([282]), seeds=[sample_seed(0, 2)])
        want = to_uint8(tok.eval().decode(tokens))[0].permute(1, 2, 0).numpy()
    assert (np.asarray(Image.open(a / "000002.png")) == want).all()
    meta = json.loads((a / "generation.json").read_text())
    assert "maskgit_imagenet256.ckpt" in json.dumps(meta) and "tokenizer_imagenet256.ckpt" in json.dumps(meta)
    # A broken tokenizer file is bad input: exit 2 with the key named.
    sd = maskgit_torch_state_dict(tok)
    del sd["decoder.conv_in.bias"]
    broken = save_ckpt(tmp_path / "broken.ckpt", sd)
    assert main([*common[:6], broken, *common[7:], "--out", str(tmp_path / "c")]) == 2
    assert "decoder.conv_in.bias" in capsys.readouterr().err

