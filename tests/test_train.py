"""Training (titok/train): losses fall on tiny presets, resume is bit-for-bit, N processes equal one, and the
config/CLI/checkpoint contracts. CPU only, built-in images, tiny presets; about a minute in all."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import titok
from titok.train import checkpoint as ckpt_io
from titok.train import cli
from titok.train.config import ConfigError, TrainConfig, apply_overrides
from titok.train.data import GlobalOrder
from titok.train.loop import lr_factor, train
from titok.train.losses import arccos_masks


def make_config(out, *overrides: str) -> TrainConfig:
    base = [f"run.out={out}", "run.image_every=0", "run.log_every=1", "data.limit=16", "optim.lr=1e-3",
            "run.threads=1"]  # tiny models: a second thread buys little and suffers most on a shared machine
    return apply_overrides(TrainConfig(), [*base, *overrides])


def window_mean(history, key, first: bool, n: int = 3) -> float:
    rows = history[:n] if first else history[-n:]
    return sum(r[key] for r in rows) / len(rows)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------------- config and CLI
def test_override_types_and_unknown_keys():
    c = apply_overrides(TrainConfig(), ["optim.lr=3e-4", "optim.betas=[0.9, 0.95]", "schedule.steps=7",
                                        "--data.hflip=false", "model.preset=titok_tiny_vae"])
    assert (c.optim.lr, c.optim.betas, c.schedule.steps, c.data.hflip) == (3e-4, (0.9, 0.95), 7, False)
    with pytest.raises(ConfigError, match=r"unknown key 'optim.lrr'.*known keys of \[optim\]: batch_size.*lr"):
        apply_overrides(TrainConfig(), ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="section one of model, data, optim, schedule, loss, run"):
        apply_overrides(TrainConfig(), ["nosuch.key=1"])
    with pytest.raises(ConfigError, match="steps: expected int"):
        apply_overrides(TrainConfig(), ["schedule.steps=1.5"])
    with pytest.raises(ConfigError, match="model.task must be one of"):
        apply_overrides(TrainConfig(), ["model.task=stage3"])


def test_cli_bad_input_is_exit_2(tmp_path, capsys):
    cases = [
        ([f"--data.source={tmp_path / 'missing'}"], "data folder not found"),
        (["--model.preset=titok_nosuch"], "unknown titok tokenizer preset 'titok_nosuch'; known:"),
        (["--optim.nosuch=1"], "known keys of [optim]"),
        (["--loss.perceptual_weight=0.1", "--loss.convnext_weights=/nonexistent/convnext_small.pth"],
         "loss.convnext_weights: not found: /nonexistent/convnext_small.pth"),
        (["--loss.perceptual_weight=0.1"], "needs loss.convnext_weights"),
        (["positional"], "unexpected argument"),
    ]
    for args, message in cases:
        assert cli.main([f"--run.out={tmp_path / 'run'}", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err


def test_schedule_and_order():
    assert lr_factor(0, 100, 10, 1e-3, 1e-5) == 0.0  # the release's warm-up: step / W, first update at lr 0
    assert lr_factor(1, 100, 10, 1e-3, 1e-5) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, 1e-3, 1e-5) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, 1e-3, 1e-5) == pytest.approx(0.01)
    # Two ranks' shares of a global micro-batch are the single process's batch, with the same per-sample seeds.
    one = GlobalOrder(50, 8, 1, 0, seed=3)
    two = [GlobalOrder(50, 8, 2, r, seed=3) for r in range(2)]
    for g in (0, 5, 6, 13):
        idx, seeds = one.indices(g)
        assert idx == two[0].indices(g)[0] + two[1].indices(g)[0]
        assert seeds == two[0].indices(g)[1] + two[1].indices(g)[1]
    masks, drop = arccos_masks(torch.arange(200), 8, 0.1)
    assert masks.any(1).all() and 0 < drop.float().mean() < 0.25


# ------------------------------------------------------------------------------------------- losses fall
@pytest.fixture(scope="module")
def tiny_vq_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_vq")
    config = make_config(out, "data.limit=64", "schedule.steps=300", "schedule.warmup_steps=10", "optim.lr=3e-4",
                         "run.log_every=10", "run.image_every=150", "run.ckpt_every=1000")
    return train(config)


def test_tokenizer_reconstruction_loss_falls(tiny_vq_run):
    h = tiny_vq_run.history
    first, last = window_mean(h, "reconstruction_loss", first=True), window_mean(h, "reconstruction_loss", first=False)
    print(f"titok_tiny_vq recon (MSE): first 30 steps {first:.4f} -> last 30 steps {last:.4f}")
    assert last < 0.5 * first
    out = tiny_vq_run.out
    assert (out / "images" / "step_0000300.png").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "images_per_sec", "reconstruction_loss", "quantizer_loss"} <= records[-1].keys()


def test_generator_masked_ce_falls(tiny_vq_run, tmp_path):
    tokens = tmp_path / "tokens.safetensors"
    config = make_config(tmp_path / "gen", "model.task=generator", "model.preset=titok_tiny_bert",
                         "model.tokenizer=titok_tiny_vq",
                         f"model.tokenizer_weights={tiny_vq_run.out / 'model.safetensors'}",
                         f"data.tokens={tokens}", "data.limit=64", "optim.batch_size=16", "schedule.steps=300",
                         "schedule.warmup_steps=10", "run.log_every=10", "run.image_every=300", "run.ckpt_every=1000")
    result = train(config)
    cache = load_file(str(tokens))
    assert cache["tokens"].shape == (128, 8) and cache["labels"].shape == (128,)  # 64 images and their mirrors
    first, last = window_mean(result.history, "masked_ce", True), window_mean(result.history, "masked_ce", False)
    print(f"titok_tiny_bert masked CE: first 30 steps {first:.3f} -> last 30 steps {last:.3f}")
    assert last < 0.5 * first
    assert (tmp_path / "gen" / "images" / "step_0000300.png").is_file()


# ------------------------------------------------------------------------------------------- resume
RESUME_CASES = {
    # VAE noise, the discriminator joining at step 2, EMA, batches built by a DataLoader worker
    "vae+disc": ("model.preset=titok_tiny_vae", "loss.disc_start=2", "loss.disc_layers=2", "loss.disc_channels=32",
                 "optim.ema_decay=0.9",
                 "data.workers=1"),
    # generator: dropout (torch RNG), masking from per-sample seeds, tokens encoded on the fly, accumulation
    "generator": ("model.task=generator", "model.preset=titok_tiny_bert", "model.tokenizer=titok_tiny_vq",
                  "optim.grad_accum=2"),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_is_bit_for_bit(tmp_path, case):
    extra = (*RESUME_CASES[case], "schedule.steps=6", "schedule.warmup_steps=2")
    straight = train(make_config(tmp_path / "straight", *extra))
    interrupted = train(make_config(tmp_path / "resumed", *extra, "run.stop_at=3"))
    assert interrupted.step == 3
    resumed = train(make_config(tmp_path / "resumed", *extra), resume=True)
    assert resumed.step == straight.step == 6
    assert_same_tensors(straight.model.state_dict(), resumed.model.state_dict())
    assert_same_tensors(straight.ema, resumed.ema)
    a, b = (ckpt_io.load(p / "checkpoint.pt") for p in (tmp_path / "straight", tmp_path / "resumed"))
    for key in ("optimizer", "disc_optimizer"):
        if a[key] is not None:
            for s1, s2 in zip(a[key]["state"].values(), b[key]["state"].values(), strict=True):
                assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert a["scheduler"] == b["scheduler"]
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        train(make_config(tmp_path / "resumed", *extra))
    with pytest.raises(ConfigError, match="different config: optim.lr"):
        train(make_config(tmp_path / "resumed", *extra, "optim.lr=0.5"), resume=True)


# ------------------------------------------------------------------------------------------- distributed
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    args = ["--schedule.steps=4", "--optim.batch_size=8", "--data.limit=16", "--optim.lr=1e-3", "--run.log_every=2",
            "--run.image_every=0", "--run.threads=1"]
    assert cli.main([f"--run.out={tmp_path / 'one'}", *args]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "titok.train.cli", f"--run.out={tmp_path / 'two'}", *args]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("one", "two"))
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=5e-5, msg=k)
    assert ckpt_io.describe(tmp_path / "two" / "checkpoint.pt")["world_size"] == 2
    # The same global batch through gradient accumulation is the same step too.
    assert cli.main([f"--run.out={tmp_path / 'accum'}", *args, "--optim.grad_accum=4"]) == 0
    accum = load_file(str(tmp_path / "accum" / "model.safetensors"))
    for k in one:
        torch.testing.assert_close(accum[k], one[k], rtol=1e-4, atol=5e-5, msg=k)


# ------------------------------------------------------------------------------------------- checkpoints, stages
def test_checkpoint_describes_itself(tmp_path):
    result = train(make_config(tmp_path, "schedule.steps=2"))
    info = ckpt_io.describe(tmp_path / "checkpoint.pt")
    assert (info["format"], info["task"], info["preset"], info["kind"], info["step"]) == (
        ckpt_io.FORMAT, "single_stage", "titok_tiny_vq", "tokenizer", 2)
    written = json.loads((tmp_path / "config.json").read_text())
    assert TrainConfig.from_dict(info["config"]) == TrainConfig.from_dict(written)
    assert info["data"]["micro_batches_done"] == 2
    ckpt = ckpt_io.load(tmp_path / "checkpoint.pt")
    assert {"model", "ema", "optimizer", "scheduler", "scaler", "rng"} <= ckpt.keys()
    assert {"python", "numpy", "torch", "cuda"} <= ckpt["rng"][0].keys()
    tok = titok.load_tokenizer(None, weights=tmp_path / "model.safetensors")  # the path alone rebuilds it
    assert_same_tensors(tok.state_dict(), result.model.state_dict())
    assert titok.load_tokenizer(None, weights=tmp_path / "ema.safetensors").preset == "titok_tiny_vq"


def test_two_stage_recipe(tmp_path):
    stage1 = train(make_config(tmp_path / "s1", "model.task=proxy_codes", "model.preset=titok_tiny_2stage",
                               "schedule.steps=3", "run.image_every=3"))
    assert "reconstruction_loss" in stage1.history[-1] and (tmp_path / "s1" / "images" / "step_0000003.png").is_file()
    s1 = load_file(str(tmp_path / "s1" / "model.safetensors"))
    stage2 = train(make_config(tmp_path / "s2", "model.task=decoder_finetune", "model.preset=titok_tiny_2stage",
                               f"model.init_weights={tmp_path / 's1' / 'model.safetensors'}", "schedule.steps=3",
                               "loss.disc_start=1", "loss.disc_layers=2", "loss.disc_channels=32"))
    s2 = stage2.model.state_dict()
    frozen = [k for k in s1 if k.startswith(("encoder.", "quantize.", "latent_tokens"))]
    trained = [k for k in s1 if k.startswith(("decoder.", "pixel_decoder."))]
    assert all(torch.equal(s1[k], s2[k]) for k in frozen)
    assert any(not torch.equal(s1[k], s2[k]) for k in trained)
    # The release trains the pixel codebook in stage 2 too (softmax-weighted code mixing reaches it).
    assert not torch.equal(s1["pixel_quantize.embedding.weight"], s2["pixel_quantize.embedding.weight"])
    assert {"reconstruction_loss", "weighted_gan_loss", "discriminator_loss"} <= stage2.history[-1].keys()


@pytest.mark.slow
def test_vae_learns_content_beyond_the_mean_image(tmp_path):
    """The default tiny tests stop near the mean-image plateau; longer, the tiny VAE gets below it (~1 min)."""
    from titok.data.images import builtin_images

    x = builtin_images("skimage", 32, 64, 0).float() / 255
    mean_image_mse = float(((x - x.mean(0, keepdim=True)) ** 2).mean())  # about 0.066
    result = train(make_config(tmp_path, "model.preset=titok_tiny_vae", "data.limit=64", "optim.lr=2e-3",
                               "schedule.steps=2000", "schedule.warmup_steps=20", "run.log_every=50",
                               "run.ckpt_every=10000"))
    last = window_mean(result.history, "reconstruction_loss", first=False)
    print(f"titok_tiny_vae recon after 2000 steps {last:.4f}; mean-image MSE {mean_image_mse:.4f}")
    assert last < 0.8 * mean_image_mse
