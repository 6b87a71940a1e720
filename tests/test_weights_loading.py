"""Checkpoint formats and loading errors, through the public loaders (titok/weights.py, titok/registry.py)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

import baselines
import titok
from titok.registry import UnknownPresetError, save_checkpoint
from titok.weights import WeightsError


@pytest.fixture(scope="module")
def src():
    torch.manual_seed(1)
    return titok.load_tokenizer("titok_tiny_vq").eval()


def same(a, b):
    return all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_safetensors_bin_and_directory(tmp_path, src):
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save(sd, tmp_path / "w.bin")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps({"note": "as a hub download lays it out"}))
    torch.save(sd, repo / "pytorch_model.bin")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.bin", repo):
        assert same(src, titok.load_tokenizer("titok_tiny_vq", weights=path))


def test_lightning_ckpt(tmp_path):
    torch.manual_seed(0)
    src = baselines.load_tokenizer("taming_vqgan_tiny")
    ckpt = {"state_dict": {**src.state_dict(), "loss.logvar": torch.zeros(())}, "epoch": 3, "global_step": 10}
    torch.save(ckpt, tmp_path / "last.ckpt")
    assert same(src, baselines.load_tokenizer("taming_vqgan_tiny", weights=tmp_path / "last.ckpt"))


def test_self_describing_checkpoint(tmp_path, src):
    path = save_checkpoint(src, tmp_path / "ours.safetensors", kind="tokenizer")
    back = titok.load_tokenizer(None, weights=path)
    assert back.preset == "titok_tiny_vq" and same(src, back)
    with pytest.raises(ValueError, match="checkpoint for preset 'titok_tiny_vq'"):
        titok.load_tokenizer("titok_tiny_vae", weights=path)
    with pytest.raises(ValueError, match="tokenizer checkpoint, not a generator"):
        titok.load_generator(None, weights=path)


def test_truncated_file_names_the_file(tmp_path, src):
    for name in ("w.bin", "w.safetensors"):
        path = tmp_path / name
        if name.endswith(".bin"):
            torch.save(src.state_dict(), path)
        else:
            save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(WeightsError, match=name):
            titok.load_tokenizer("titok_tiny_vq", weights=path)


def test_key_and_shape_mismatches_are_listed(src):
    sd = dict(src.state_dict())
    sd.pop("latent_tokens")
    sd["extra.weight"] = torch.zeros(1)
    sd["quantize.embedding.weight"] = torch.zeros(3, 3)
    with pytest.raises(WeightsError) as e:
        titok.load_tokenizer("titok_tiny_vq", weights=sd)
    msg = str(e.value)
    assert "missing keys: latent_tokens" in msg and "unexpected keys: extra.weight" in msg
    assert "quantize.embedding.weight: checkpoint (3, 3) vs model (64, 8)" in msg


class NotATensor:
    pass


def test_pickled_code_is_refused(tmp_path, src):
    path = tmp_path / "evil.bin"
    with open(path, "wb") as f:
        pickle.dump({"latent_tokens": NotATensor()}, f)
    with pytest.raises(WeightsError, match="weights_only"):
        titok.load_tokenizer("titok_tiny_vq", weights=path)


def test_missing_path_and_unknown_preset(tmp_path):
    with pytest.raises(WeightsError, match="weights not found"):
        titok.load_tokenizer("titok_tiny_vq", weights=tmp_path / "nope.bin")
    with pytest.raises(UnknownPresetError, match="known: .*taming_vqgan_f16_1024"):
        baselines.load_tokenizer("taming_vqgan_f8")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="no weights file"):
        titok.load_tokenizer("titok_tiny_vq", weights=empty)
