"""The release's recipes as data (titok/train/recipes), `--recipe`/`--list-recipes`/`--print-config`, `--estimate`
(FLOPs counted on the meta device equal a real CPU count), and the loop's discriminator, LeCam, its schedule and the
weight-decay groups in a tiny run. CPU, tiny presets, a few seconds per test."""

from __future__ import annotations

import json
import re

import pytest
import torch

import titok.blocks
import titok.generators.bert
from bench.run.flops import count_flops  # the harness's counter, as the independent reference for --estimate
from titok.data.images import builtin_images
from titok.train import checkpoint as ckpt_io
from titok.train import cli
from titok.train.config import ConfigError, TrainConfig, apply_overrides
from titok.train.discriminator import NLayerDiscriminator
from titok.train.estimate import estimate, peak_flops, train_step
from titok.train.loop import lr_factor, train
from titok.train.perceptual import LPIPS_CHANNELS, VGG16Features
from titok.train.recipes import is_release, list_recipes, load_recipe, read_recipe
from titok.train.tasks import build_task

# What each recipe must hold, as read in bytedance/1d-tokenizer@942a96f (file named beside each group).
TOKENIZER_STAGE1 = {  # configs/training/TiTok/stage1/titok_*.yaml (+ README_TiTok.md: 8 processes x 32)
    "model.task": "proxy_codes", "optim.batch_size": 256, "optim.lr": 1e-4, "optim.betas": (0.9, 0.99),
    "optim.weight_decay": 1e-4, "optim.grad_clip": 1.0, "optim.ema_decay": 0.999, "schedule.steps": 1_000_000,
    "schedule.warmup_steps": 10_000, "schedule.end_lr": 1e-5, "run.precision": "fp16", "loss.quantizer_weight": 1.0,
}
TOKENIZER_STAGE2 = {  # configs/training/TiTok/stage2/titok_*.yaml, modeling/modules/{losses,discriminator}.py
    "model.task": "decoder_finetune", "optim.batch_size": 256, "optim.lr": 1e-4, "optim.disc_lr": 1e-4,
    "optim.betas": (0.9, 0.999), "optim.weight_decay": 1e-4, "schedule.steps": 500_000,
    "schedule.warmup_steps": 5_000, "run.precision": "fp16", "loss.recon": "l2", "loss.perceptual_weight": 0.1,
    "loss.perceptual_mix": (0.0, 1.0), "loss.adversarial_weight": 0.01, "loss.disc_start": 20_000,
    "loss.lecam_weight": 0.001, "loss.lecam_decay": 0.999, "loss.disc_channels": 128, "loss.disc_layers": 3,
}
SINGLE_STAGE = {  # configs/training/TA-TiTok/tatitok_*.yaml
    "model.task": "single_stage", "optim.batch_size": 256, "optim.lr": 1e-4, "optim.disc_lr": 1e-4,
    "optim.betas": (0.9, 0.999), "optim.weight_decay": 1e-4, "schedule.steps": 650_000,
    "schedule.warmup_steps": 10_000, "run.precision": "fp16", "loss.perceptual_weight": 1.1,
    "loss.perceptual_mix": (1.0, 0.1), "loss.adversarial_weight": 0.1, "loss.disc_start": 200_000,
    "loss.lecam_weight": 0.001,
}
GENERATOR = {  # configs/training/generator/maskgit.yaml
    "model.task": "generator", "optim.batch_size": 2048, "optim.lr": 2e-4, "optim.betas": (0.9, 0.96),
    "optim.weight_decay": 0.03, "schedule.steps": 500_000, "schedule.warmup_steps": 10_000, "run.precision": "bf16",
    "loss.label_smoothing": 0.1, "loss.unmasked_weight": 0.1, "loss.label_dropout": 0.1, "data.random_crop": False,
}
EXPECTED = {
    **{f"titok_{m}_stage1": TOKENIZER_STAGE1 | {"model.preset": f"titok_{m}"} for m in ("l32", "b64", "s128")},
    **{f"titok_{m}_stage2": TOKENIZER_STAGE2 | {"model.preset": f"titok_{m}"} for m in ("l32", "b64", "s128")},
    **{f"titok_{m}": SINGLE_STAGE | {"model.preset": f"titok_{m}", "loss.quantizer_weight": 1.0}
       for m in ("bl64_vq8k", "bl128_vq8k", "sl256_vq8k")},
    **{f"titok_{m}": SINGLE_STAGE | {"model.preset": f"titok_{m}", "loss.kl_weight": 1e-6}
       for m in ("ll32_vae_c16", "bl64_vae_c16", "bl128_vae_c16")},
    **{f"titok_{m}_generator": GENERATOR | {"model.preset": f"titok_{m}"} for m in ("l32", "b64", "s128")},
}


def _get(config: TrainConfig, dotted: str):
    section, key = dotted.split(".")
    return getattr(getattr(config, section), key)


# ------------------------------------------------------------------------------------------- recipes
def test_every_released_model_and_stage_has_a_recipe():
    assert [name for name in list_recipes() if is_release(name)] == sorted(EXPECTED)


def test_our_recipes_say_they_are_not_the_release():
    """tiny_cpu (the README's CPU demonstration) is ours: marked so, citing nothing, and it still resolves."""
    assert [name for name in list_recipes() if not is_release(name)] == ["tiny_cpu"]
    meta = read_recipe("tiny_cpu")["recipe"]
    assert meta["release"] is False and meta["release_files"] == [] and "not a release recipe" in meta["description"]
    config = load_recipe("tiny_cpu")
    assert (config.model.preset, config.data.source, config.loss.disc_start) == ("titok_tiny_vq", "builtin:skimage", -1)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_holds_the_release_values(name):
    config = load_recipe(name)
    for key, want in EXPECTED[name].items():
        assert _get(config, key) == want, f"{name}: {key}"
    meta = read_recipe(name)["recipe"]
    assert meta["description"] and all(f.endswith((".yaml", ".py", ".md")) for f in meta["release_files"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_recipe_value_names_its_source(name):
    from importlib import resources

    text = resources.files("titok.train.recipes").joinpath(f"{name}.toml").read_text()
    for line in text.splitlines():
        if re.match(r"^\w+ = ", line) and not line.startswith(("description", "release_files")):
            comment = line.partition("#")[2]
            assert re.search(r"the config|\.py|\.yaml|\.md", comment), f"{name}: {line!r} cites no release file"


def test_recipe_cli(tmp_path, capsys):
    assert cli.main(["--list-recipes"]) == 0
    listing = capsys.readouterr().out
    assert "titok_l32_stage2" in listing and "titok_s128_generator" in listing
    assert cli.main(["--recipe", "titok_l32_stage2", "--optim.batch_size=64", "--print-config"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["optim"]["batch_size"] == 64  # the override on top
    assert resolved["loss"]["adversarial_weight"] == 0.01 and resolved["optim"]["betas"] == [0.9, 0.999]
    assert cli.main(["--recipe", "titok_nosuch", "--print-config"]) == 2
    assert "unknown recipe 'titok_nosuch'; known: tiny_cpu, titok_b64_generator" in capsys.readouterr().err
    assert cli.main(["--recipe", "titok_l32_stage1", "--config", str(tmp_path / "c.json")]) == 2
    # A recipe's perceptual loss needs its files: the error names the key, not a silent weight of 0.
    assert cli.main(["--recipe", "titok_bl64_vq8k", f"--run.out={tmp_path}", "--model.preset=titok_tiny_vq"]) == 2
    assert "needs loss.lpips_vgg_weights, loss.lpips_heads_weights, loss.convnext_weights" in capsys.readouterr().err


def test_a_recipe_trains_a_tiny_preset(tmp_path):
    result = train(apply_overrides(load_recipe("titok_l32_generator"), [
        "model.preset=titok_tiny_bert", "model.tokenizer=titok_tiny_vq", "optim.batch_size=4", "schedule.steps=2",
        "schedule.warmup_steps=1", "run.precision=fp32", "data.limit=8", "run.image_every=0", "run.threads=1",
        f"run.out={tmp_path}"]))
    assert result.step == 2 and {"masked_ce", "loss"} <= result.history[-1].keys()
    ckpt = ckpt_io.load(tmp_path / "checkpoint.pt")
    assert [g["weight_decay"] for g in ckpt["optimizer"]["param_groups"]] == [0.0, 0.03]
    assert ckpt["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.96)


# ------------------------------------------------------------------------------------------- the loop's GAN
def _lpips_files(folder):
    torch.manual_seed(0)
    torch.save(VGG16Features().state_dict(), folder / "vgg16.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPS_CHANNELS)},
               folder / "lpips-vgg.pth")
    return [f"loss.lpips_vgg_weights={folder / 'vgg16.pth'}", f"loss.lpips_heads_weights={folder / 'lpips-vgg.pth'}"]


def test_discriminator_lecam_and_their_schedule_in_the_loop(tmp_path):
    steps, start, warmup = 4, 1, 2
    config = apply_overrides(TrainConfig(), [
        f"run.out={tmp_path / 'run'}", "run.image_every=0", "run.log_every=1", "run.threads=1", "data.limit=8",
        "optim.batch_size=4", f"schedule.steps={steps}", f"schedule.warmup_steps={warmup}", "optim.lr=1e-3",
        "optim.disc_lr=5e-4", f"loss.disc_start={start}", "loss.disc_channels=32", "loss.disc_layers=2",
        "loss.perceptual_weight=0.1", "loss.perceptual_mix=[1.0, 0.0]", *_lpips_files(tmp_path)])
    result = train(config)
    first = result.history[0]  # before disc_start: no adversarial term, no discriminator step
    assert first["weighted_gan_loss"] == first["discriminator_factor"] == 0 and "lecam_loss" not in first
    last = result.history[-1]
    assert {"reconstruction_loss", "perceptual_loss", "weighted_gan_loss", "discriminator_loss", "lecam_loss",
            "logits_real", "logits_fake"} <= last.keys()
    assert last["perceptual_loss"] > 0 and last["discriminator_factor"] == 1
    ckpt = ckpt_io.load(tmp_path / "run" / "checkpoint.pt")
    # The discriminator's own schedule: warm-up and cosine counted from disc_start, as the release's.
    d_steps = steps - start
    want_lr = 5e-4 * lr_factor(d_steps, steps - start, warmup, 1e-3, config.schedule.end_lr)
    assert ckpt["disc_scheduler"]["last_epoch"] == d_steps
    assert ckpt["disc_optimizer"]["param_groups"][0]["lr"] == pytest.approx(want_lr)
    assert [g["weight_decay"] for g in ckpt["disc_optimizer"]["param_groups"]] == [0.0, 1e-4]
    # LeCam EMAs moved from 0 by (1 - 0.999) of the mean logits of each discriminator step.
    assert ckpt["lecam"]["ema_real"].item() != 0.0 and ckpt["lecam"]["ema_fake"].item() != 0.0
    assert abs(ckpt["lecam"]["ema_real"].item()) < 0.01 * d_steps * max(abs(r["logits_real"]) for r in
                                                                        result.history[start:]) + 1e-12


# ------------------------------------------------------------------------------------------- --estimate
def _tiny_images(n, size):
    return builtin_images("procedural", size, n, seed=0).float() / 255


@pytest.mark.parametrize("overrides", [
    ("model.preset=titok_tiny_vq", "loss.disc_start=3", "loss.disc_channels=32", "loss.disc_layers=2"),
    ("model.task=generator", "model.preset=titok_tiny_bert", "model.tokenizer=titok_tiny_vq"),
], ids=["tokenizer+disc", "generator"])
def test_estimate_counts_what_a_real_step_computes(overrides, monkeypatch):
    config = apply_overrides(TrainConfig(), ["schedule.steps=10", "optim.batch_size=6", *overrides])
    fused = estimate(config)  # meta device, no weights; attention through the counter's SDPA formulas
    # On a CPU, SDPA's flash kernel has no backward formula in torch's counter; the written-out attention (plain
    # matmuls) counts the same work on both devices, so compare through it.
    written_out = titok.blocks.multi_head_attention

    def math_attention(qkv, heads, impl="sdpa", dropout_p=0.0):
        return written_out(qkv, heads, "math", dropout_p)

    for module in (titok.blocks, titok.generators.bert):
        monkeypatch.setattr(module, "multi_head_attention", math_attention)
    est = estimate(config)
    assert est == fused  # the fused kernels' formulas count what the written-out matmuls do
    torch.manual_seed(0)
    task = build_task(config).train()  # real tensors on the CPU, counted by the harness's counter
    b = 2
    batch = {"images": _tiny_images(b, task.image_size), "seeds": torch.arange(b), "labels": torch.tensor([3, 7])}
    assert est.flops_per_sample == count_flops(lambda: train_step(task, batch)) / b > 0
    if "loss.disc_start=3" in overrides:
        disc = NLayerDiscriminator(32, 2)
        adversarial = count_flops(lambda: train_step(task, batch, disc)) / b
        assert est.flops_per_sample_adversarial == adversarial > est.flops_per_sample
        assert (est.steps_before_disc, est.steps_with_disc) == (3, 7)
    assert est.total_flops == 6 * (est.steps_before_disc * est.flops_per_sample
                                   + est.steps_with_disc * est.flops_per_sample_adversarial)
    hours = est.gpu_hours("H100", 0.5)
    assert hours == pytest.approx(est.total_flops / (989e12 * 0.5) / 3600)


def test_estimate_cli(capsys):
    args = ["--recipe", "titok_s128_generator", "--data.tokens=cache.safetensors", "--estimate", "--gpu", "A100",
            "--utilisation", "0.5", "--num-gpus", "32"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "global batch 2048, 500,000 steps, bf16" in out and "GFLOP" in out
    assert re.search(r"A100 at 50% of its dense bf16 peak \(312 TFLOP/s\): [\d,]+ GPU-hours = "
                     r"[\d.,]+ hours \([\d.,]+ days\) on 32", out)
    est = estimate(apply_overrides(load_recipe("titok_s128_generator"), ["data.tokens=cache.safetensors"]))
    assert f"{est.gpu_hours('A100', 0.5):,.0f} GPU-hours" in out
    assert cli.main([*args[:4], "--gpu", "B200"]) == 2
    assert "known GPUs: A100, H100" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        peak_flops("H100", "int8")


# ------------------------------------------------------------------------------------------- distributed GAN
@pytest.mark.slow
def test_two_processes_equal_one_with_the_discriminator_and_lecam(tmp_path):
    """The discriminator's DDP step, LeCam on the global micro-batch's means and its EMAs: 2 processes = 1 (~40 s)."""
    import os
    import socket
    import subprocess
    import sys

    from safetensors.torch import load_file

    args = ["--schedule.steps=3", "--optim.batch_size=8", "--data.limit=16", "--optim.lr=1e-3", "--run.log_every=1",
            "--run.image_every=0", "--run.threads=1", "--loss.disc_start=1", "--loss.disc_channels=32",
            "--loss.disc_layers=2", "--loss.lecam_weight=0.5", "--optim.disc_lr=1e-3"]
    assert cli.main([f"--run.out={tmp_path / 'one'}", *args]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "titok.train.cli", f"--run.out={tmp_path / 'two'}", *args]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("one", "two"))
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=5e-5, msg=k)
    a, b = (ckpt_io.load(tmp_path / d / "checkpoint.pt") for d in ("one", "two"))
    # With the release's init the tiny tokenizer's first reconstructions are near-constant, so D cannot tell real
    # from fake yet and some of its gradients cancel to ~AdamW's eps (to_logits.0.bias): there AdamW's normalised
    # step turns float-order noise into a visible part of one update (1.5e-4 of lr 1e-3 measured). Everything else
    # agrees to ~1e-7; a wrong average or LeCam on local means moves whole tensors by O(lr).
    for k in a["disc"]:
        torch.testing.assert_close(b["disc"][k], a["disc"][k], rtol=1e-4, atol=3e-4, msg=k)
    for k in ("ema_real", "ema_fake"):
        assert a["lecam"][k].item() != 0.0
        torch.testing.assert_close(b["lecam"][k], a["lecam"][k], rtol=1e-4, atol=1e-7, msg=k)
