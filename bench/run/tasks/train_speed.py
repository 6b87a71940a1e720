"""Training throughput: images/sec of one training step's forward + backward, per training stage, recorded like
an inference speed (records of task "train" with `images_per_sec` and per-iteration `spreads.sec_per_batch`), so
`titok-bench compare` judges a training slowdown by the same noise rule as an inference one.

Ops, one record each (the training task names of titok/train/tasks.py):
  proxy_codes       two-stage stage 1: encoder + quantizer + proxy-code decoder, the frozen MaskGIT-VQGAN teacher
                    encoding the batch (no gradient), cross-entropy + VQ loss, backward
  decoder_finetune  two-stage stage 2 with the discriminator on: frozen encoder, decoder + pixel decoder, the
                    recipe's perceptual network, the generator-side adversarial term; then the discriminator's own
                    forward + backward (hinge, and LeCam where the recipe has it) on real and reconstructed images
  single_stage      VQ / VAE tokenizers that decode pixels, with the discriminator on, as decoder_finetune
  generator         the masked-token objective on cached codes (as the release trains from pre-tokenized codes)

What one timed iteration is: zero the gradients, then the micro-step of titok/train/loop.py (`task(batch, disc)`,
backward of its loss; for the pixel stages the discriminator's forward and backward after it). The optimizer
step, clipping and EMA are not timed: they cost a fixed amount per parameter, not per image. Loss settings come
from the release's recipe for the preset and stage where there is one (titok/train/recipes; the protocol names
it), the discriminator is forced on from step 0, and perceptual networks and the stage-1 teacher have random
weights (speed does not depend on them; no external file is needed).

Batch: the release trains tokenizers at 32 images per GPU and generators at 64 (README_TiTok.md and the recipes,
titok/train/recipes/titok_*_stage1.toml, *_generator.toml); a suite scales that down for a CPU, and each record
states the release's per-GPU batch and the scale (`release_per_gpu_batch`, `batch_scale`).
"""

from __future__ import annotations

import functools
import logging

import torch

from bench.run.machine import machine_state, warn_if_loaded, worst_of
from bench.run.suite import RunSpec
from bench.run.tasks.common import PRECISIONS, RunContext, free
from bench.run.timing import measure_with_backoff
from titok.contract import autocast_context
from titok.progress import Progress
from titok.registry import get_spec
from titok.train import recipes
from titok.train.config import TrainConfig, apply_overrides
from titok.train.discriminator import LeCamEMA, NLayerDiscriminator, hinge_d_loss
from titok.train.tasks import build_task

log = logging.getLogger(__name__)
TOKENIZER_OPS = ("proxy_codes", "decoder_finetune", "single_stage")
GENERATOR_OPS = ("generator",)
RELEASE_PER_GPU_BATCH = {"tokenizer": 32, "generator": 64}  # README_TiTok.md: per_gpu_batch_size 32; generators 64
RECIPE_SUFFIX = {"proxy_codes": "_stage1", "decoder_finetune": "_stage2", "single_stage": "", "generator": "_generator"}


def default_ops(kind: str, preset: str) -> list[str]:
    """Every training stage of a preset: a two-stage tokenizer's two, a single-stage one's, a generator's."""
    if kind == "generator":
        return list(GENERATOR_OPS)
    two_stage = get_spec("tokenizer", preset).config.two_stage
    return ["proxy_codes", "decoder_finetune"] if two_stage else ["single_stage"]


def _config(preset: str, op: str):
    """(TrainConfig, recipe name or None): the release's recipe for this preset and stage where there is one."""
    name = preset + RECIPE_SUFFIX[op]
    config = recipes.load_recipe(name) if name in recipes.list_recipes() else TrainConfig()
    return apply_overrides(config, [f"model.task={op}", f"model.preset={preset}", "loss.disc_start=0"]), (
        name if name in recipes.list_recipes() else None)


def _step(task, disc, lecam, lecam_weight: float, batch_of, device, dtype):
    """make(bs) -> one timed training micro-step at batch bs (forward + backward, discriminator after)."""
    def make(bs: int):
        batch = batch_of(bs)

        def step():
            task.zero_grad(set_to_none=True)
            if disc is not None:
                disc.zero_grad(set_to_none=True)
                disc.requires_grad_(False)  # as the loop: the generator-side term does not train the discriminator
            with autocast_context(device, dtype):
                result = task(batch, disc)
            result.loss.backward()
            if disc is not None:
                disc.requires_grad_(True)
                real, fake = disc(torch.cat([result.real, result.fake.detach()])).chunk(2)
                d_loss = hinge_d_loss(real, fake)
                if lecam is not None:
                    d_loss = d_loss + lecam_weight * lecam.loss(real.float().mean(), fake.float().mean())
                d_loss.backward()
            return result.loss.detach()

        return step
    return make


def _batch_maker(task, kind: str, device):
    def images(bs: int) -> dict:
        g = torch.Generator().manual_seed(0)
        size = task.image_size
        return {"images": torch.rand(bs, 3, size, size, generator=g).to(device),
                "labels": torch.zeros(bs, dtype=torch.long, device=device), "seeds": torch.arange(bs)}

    def tokens(bs: int) -> dict:
        g = torch.Generator().manual_seed(0)
        m = task.model
        return {"tokens": torch.randint(0, m.codebook_size, (bs, m.num_tokens), generator=g).to(device),
                "labels": (torch.arange(bs) % m.num_classes).to(device), "seeds": torch.arange(bs)}

    return tokens if kind == "generator" else images


def _build(preset: str, op: str, device):
    config, recipe = _config(preset, op)
    if op == "generator":  # trains from cached codes, as the release does: the tokenizer is not run per step
        config = apply_overrides(config, ["data.tokens=cached"])
    task = build_task(config, architecture_only=True).to(device).train()
    lc = config.loss
    disc = lecam = None
    if task.uses_discriminator and lc.adversarial_weight > 0:
        disc = NLayerDiscriminator(lc.disc_channels, lc.disc_layers).to(device)
        lecam = LeCamEMA(lc.lecam_decay).to(device) if lc.lecam_weight > 0 else None
    return task, disc, lecam, config, recipe


def run_train_speed(spec: RunSpec, ctx: RunContext) -> None:
    s, kind = spec.settings, spec.settings["kind"]
    plan = [(preset, op) for preset in spec.models for op in (s["ops"] or default_ops(kind, preset))]
    total = len(plan) * len(s["precisions"]) * len(s["batch_sizes"])
    with Progress(total, f"training speed ({kind}s)", "measurements", ctx.progress, every=True) as progress:
        for preset, op in plan:
            _measure_preset_op(ctx, s, kind, preset, op, progress)


def _measure_preset_op(ctx: RunContext, s: dict, kind: str, preset: str, op: str, progress) -> None:
    emit = functools.partial(ctx.emit, model=preset, task="train", weights_tag="random")
    release_bs = RELEASE_PER_GPU_BATCH[kind]
    try:
        task, disc, lecam, config, recipe = _build(preset, op, ctx.device)
    except Exception as exc:  # a stage a preset cannot train (e.g. proxy_codes of a single-stage one): recorded
        log.exception("%s %s: could not build the training task", preset, op)
        for precision in s["precisions"]:
            for bs in s["batch_sizes"]:
                emit(metrics={}, protocol=_protocol(s, kind, op, bs, precision, release_bs, None, None, ctx),
                     error=f"{type(exc).__name__}: {exc}"[:500])
                progress.update(1, item=f"{preset} {op}: could not build")
        return
    trainable = sum(p.numel() for p in task.parameters() if p.requires_grad) / 1e6
    for precision in s["precisions"]:
        for bs in s["batch_sizes"]:
            protocol = _protocol(s, kind, op, bs, precision, release_bs, recipe, task, ctx)
            protocol["discriminator"] = None if disc is None else {
                "channels": config.loss.disc_channels, "stages": config.loss.disc_layers,
                "lecam": lecam is not None}
            error = None
            if precision not in PRECISIONS:
                error = f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}"
            elif precision != "fp32" and ctx.device.type != "cuda":
                error = f"not supported: {precision} autocast is measured on CUDA only"
            if error:
                emit(metrics={}, protocol=protocol, error=error)
                progress.update(1, item=f"{preset} {op} batch {bs} {precision}: {error[:60]}")
                continue
            step_of = _step(task, disc, lecam, config.loss.lecam_weight, _batch_maker(task, kind, ctx.device),
                            ctx.device, PRECISIONS[precision])
            before = machine_state()
            try:
                timing, note = measure_with_backoff(step_of, bs, ctx.device, s["warmup"], s["iters"])
            except Exception as exc:  # one broken measurement is recorded, the suite goes on
                log.exception("%s %s training step failed", preset, op)
                emit(metrics={}, protocol=protocol, error=f"{type(exc).__name__}: {exc}"[:500])
                progress.update(1, item=f"{preset} {op} batch {bs} {precision}: failed")
                continue
            machine = worst_of(before, machine_state())
            warn_if_loaded(machine, f"{preset} {op} training batch {bs}")
            metrics, spreads = {"params_m": trainable}, None  # trained parameters only
            if timing is not None:
                metrics.update(timing.as_metrics())
                protocol["batch_size_used"], protocol["memory_source"] = timing.batch_size, timing.memory_source
                spreads = {"sec_per_batch": timing.iterations()}
            emit(metrics=metrics, protocol=protocol, error=note if timing is None else None, spreads=spreads,
                 machine=machine)
            shown = f"{timing.items_per_sec:.3g} img/s" if timing is not None else note
            progress.update(1, item=f"{preset} {op} batch {bs} {precision}: {shown}")
    free(task, disc)


def _protocol(s: dict, kind: str, op: str, bs: int, precision: str, release_bs: int, recipe, task, ctx) -> dict:
    return {"op": op, "kind": kind, "what": "forward+backward of one training micro-step (no optimizer step)",
            "resolution": getattr(task, "image_size", None) if task is not None else None, "batch_size": bs,
            "release_per_gpu_batch": release_bs, "batch_scale": bs / release_bs, "precision": precision,
            "recipe": recipe, "warmup": s["warmup"], "iters": s["iters"], "device": ctx.device.type}
