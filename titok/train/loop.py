"""The one training loop of the project, for every task (titok/train/tasks.py): data order, gradient
accumulation, DistributedDataParallel, autocast (bf16/fp16 on CUDA), clipping, EMA, the release's discriminator
step (hinge + LeCam, float32, its own cosine schedule from loss.disc_start), atomic checkpoints with bit-for-bit
resume, JSON-lines logs and progress grids.

Outputs in `run.out`: config.json (the resolved config), metrics.jsonl and eval.jsonl (each step once, also
across resumes), checkpoint.pt (the newest) and checkpoints/ (kept older ones), model.safetensors and
ema.safetensors (self-describing, loadable with titok.load_tokenizer / load_generator), images/step_*.png,
tensorboard/ (when the package is installed).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed.nn as dist_nn
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from titok.contract import autocast_context
from titok.data.images import BUILTIN_SETS
from titok.data.prepare import adm_center_crop_arr
from titok.errors import DataError, MissingFileError
from titok.registry import get_spec, save_checkpoint
from titok.train import checkpoint as ckpt_io
from titok.train import distributed as dist_utils
from titok.train.config import ConfigError, TrainConfig
from titok.train.data import (
    GlobalOrder,
    ImageBatches,
    TokenBatches,
    load_size,
    micro_batch_loader,
    open_source,
    split_holdout,
)
from titok.train.discriminator import LeCamEMA, NLayerDiscriminator, hinge_d_loss
from titok.train.evaluation import TokenRows, evaluate_generator, evaluate_tokenizer, load_image_metric
from titok.train.grids import save_grid
from titok.train.param_groups import weight_decay_groups
from titok.train.pretokenize import pretokenize
from titok.train.progress import RunLog
from titok.train.sources import is_shard_source, list_source
from titok.train.tasks import Task, build_task, resolve

log = logging.getLogger(__name__)
# Settings that do not change what is computed: a resumed run may differ in them.
RESUME_IGNORES = {("run", "stop_at"), ("run", "threads"), ("run", "log_every"), ("run", "image_every"),
                  ("data", "workers"), ("ckpt", "keep_last"), ("ckpt", "keep_every"), ("watch", "eval_every"),
                  ("watch", "tensorboard"), ("watch", "raw_grid_until"), ("watch", "rfid"),
                  ("watch", "inception_weights")}


@dataclass
class TrainResult:
    out: Path
    step: int
    model: nn.Module  # the trained model (not the EMA)
    ema: dict[str, torch.Tensor] | None
    history: list[dict] = field(default_factory=list)  # the logged records


def lr_factor(step: int, total: int, warmup: int, base_lr: float, end_lr: float) -> float:
    """Linear warm-up to 1, then cosine decay to end_lr / base_lr (a multiplier of optim.lr)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    end = end_lr / base_lr if base_lr else 0.0
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("run.precision=fp16 needs CUDA (use bf16 or fp32 on CPU)")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _check_resume(config: TrainConfig, saved: dict) -> None:
    now, saved = json.loads(json.dumps(config.to_dict())), json.loads(json.dumps(saved))  # tuples -> lists
    defaults = json.loads(json.dumps(TrainConfig().to_dict()))  # a section older runs lack counts as its defaults
    saved = {s: saved.get(s, defaults[s]) for s in now}
    diffs = [f"{s}.{k}: {saved[s].get(k)!r} -> {v!r}" for s, section in now.items() for k, v in section.items()
             if (s, k) not in RESUME_IGNORES and saved[s].get(k) != v]
    if diffs:
        raise ConfigError("--resume with a different config: " + "; ".join(diffs))


def _open_data(config: TrainConfig, task: Task, ctx: dist_utils.DistContext):
    """(training batches, held-out items or None). Folders and shards are listed by rank 0 and broadcast."""
    dc, seed, holdout = config.data, config.run.seed, config.watch.holdout
    if task.inputs == "tokens":
        path = Path(dc.tokens)
        if not path.exists():  # every rank encodes its share (titok-train pretokenize does the same, separately)
            listing = None if dc.source.startswith("builtin:") else dist_utils.broadcast_object(
                ctx, list_source(dc.source) if ctx.is_main else None)
            images = open_source(dc.source, task.image_size, seed, dc.strict, listing, prepare=adm_center_crop_arr,
                                 builtin_count=(dc.limit or 64) + holdout)
            pretokenize(task.tokenizer.to(ctx.device), images, path, ctx, "flip" if dc.hflip else "none",
                        strict=dc.strict)
        data = TokenBatches(path)
        data_all_tokens, data_all_labels = data.tokens, data.labels
        made_by = data.meta.get("titok_train.tokens.tokenizer")
        if made_by and made_by != task.tokenizer.preset:
            raise ConfigError(f"{path} holds codes of {made_by}, not of {task.tokenizer.preset}")
        # Rows of one image (its mirror, its crops) stay together, so no view of a held-out image is trained on.
        views = int(data.meta.get("titok_train.tokens.views", "2" if data.meta.get("titok_train.tokens.flips") == "True"
                                  else "1"))  # caches written before views were recorded: flips or none
        images = range(len(data) // views)
        train_imgs, held_imgs = split_holdout(images, dc.limit, holdout, seed, "cached images")
        rows = torch.tensor(list(train_imgs.indices))[:, None] * views + torch.arange(views)
        data.tokens, data.labels = data.tokens[rows.flatten()], data.labels[rows.flatten()]
        if held_imgs is None:
            return data, None
        held_rows = (torch.tensor(list(held_imgs.indices))[:, None] * views + torch.arange(views)).flatten()
        return data, TokenRows(data_all_tokens[held_rows], data_all_labels[held_rows])
    size = load_size(task.image_size, dc.random_crop, dc.crop_margin)
    listing = None if dc.source.startswith("builtin:") else dist_utils.broadcast_object(
        ctx, list_source(dc.source) if ctx.is_main else None)
    images = open_source(dc.source, size, seed, dc.strict, listing, builtin_count=(dc.limit or 64) + holdout)
    train_images, held = split_holdout(images, dc.limit, holdout, seed)
    return ImageBatches(train_images, task.image_size, dc.random_crop, dc.hflip, dc.strict), held


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v if k == "seeds" else v.to(device, non_blocking=True) for k, v in batch.items()}


def preflight(config: TrainConfig, resume: bool = False) -> None:
    """Cheap checks before anything is built: presets exist, given files exist, the data source exists."""
    mc, dc = config.model, config.data
    if mc.task == "generator":
        get_spec("generator", mc.preset)
    else:
        get_spec("tokenizer", mc.preset, family="titok")
    for name in (mc.teacher, mc.tokenizer):
        if name:
            get_spec("tokenizer", name)
    lc = config.loss
    for key, path in (("model.init_weights", mc.init_weights), ("model.teacher_weights", mc.teacher_weights),
                      ("model.tokenizer_weights", mc.tokenizer_weights), ("loss.convnext_weights", lc.convnext_weights),
                      ("loss.lpips_vgg_weights", lc.lpips_vgg_weights),
                      ("loss.lpips_heads_weights", lc.lpips_heads_weights)):
        if path and not Path(path).expanduser().exists():
            raise MissingFileError(f"{key}: not found: {path} (nothing is downloaded; give a local file)")
    if config.watch.rfid:
        load_image_metric("rfid")  # the harness's plug-in must be there before hours of training, not after
    if mc.task == "generator" and dc.tokens and Path(dc.tokens).is_file():
        return  # trains from the token cache; the images are not read
    if dc.source.startswith("builtin:"):
        if dc.source.removeprefix("builtin:") not in BUILTIN_SETS:
            raise DataError(f"unknown built-in image set {dc.source!r}; known: "
                            + ", ".join(f"builtin:{s}" for s in BUILTIN_SETS))
    elif not Path(dc.source).expanduser().is_dir() and not is_shard_source(dc.source):
        raise DataError(f"data folder not found: {dc.source}")
    if resume and ckpt_io.newest(config.run.out) is None:
        raise MissingFileError(f"--resume: no checkpoint in {config.run.out}")


def train(config: TrainConfig, resume: bool = False, on_gradients=None) -> TrainResult:
    """Run (or, with `resume`, continue) the training `config` describes; under torchrun, on every rank.

    `on_gradients(step, named_gradients)`, if given, sees the averaged, unscaled gradients of every step before
    clipping (for tests that compare runs on the gradient itself, which clipping and AdamW would hide): the trained
    model's by parameter name and, on steps that train the discriminator, the discriminator's as "disc/NAME"."""
    config = resolve(config)
    ctx = dist_utils.setup(config.run.device)
    threads = torch.get_num_threads()
    try:
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        return _train(config, ctx, resume, on_gradients)
    finally:
        torch.set_num_threads(threads)  # a caller's setting survives an in-process run
        dist_utils.teardown(ctx)


def _train(config: TrainConfig, ctx: dist_utils.DistContext, resume: bool, on_gradients=None) -> TrainResult:
    rc, oc, lc, sc, wc = config.run, config.optim, config.loss, config.schedule, config.watch
    out = Path(rc.out)
    ckpt_path = ckpt_io.newest(out)
    saved = None
    if ckpt_path is not None:
        if not resume:
            raise ConfigError(f"{out} already holds a checkpoint; pass --resume to continue it, or another run.out")
        saved = ckpt_io.load(ckpt_path)
        _check_resume(config, saved["config"])
    device, dtype = ctx.device, amp_dtype(rc.precision, ctx.device)

    dist_utils.seed_all(rc.seed)  # same on every rank: identical initial weights
    task = build_task(config).to(device)
    data, holdout = _open_data(config, task, ctx)
    order = GlobalOrder(len(data), oc.batch_size // oc.grad_accum, ctx.world_size, ctx.rank, rc.seed)
    disc = None
    if task.uses_discriminator and lc.adversarial_weight > 0 and lc.disc_start >= 0:
        disc = NLayerDiscriminator(lc.disc_channels, lc.disc_layers).to(device)
    lecam = LeCamEMA(lc.lecam_decay).to(device) if disc is not None and lc.lecam_weight > 0 else None

    params = task.trainable_parameters()
    opt = torch.optim.AdamW(task.param_groups(oc.weight_decay), lr=oc.lr, betas=oc.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, sc.steps, sc.warmup_steps, oc.lr, sc.end_lr))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    d_opt = d_scaler = d_sched = None
    if disc is not None:
        d_opt = torch.optim.AdamW(weight_decay_groups(disc.named_parameters(), oc.weight_decay), lr=oc.disc_lr,
                                  betas=oc.betas)
        # As the release: warm-up and cosine decay of their own, counted in discriminator steps from disc_start.
        d_sched = torch.optim.lr_scheduler.LambdaLR(
            d_opt, lambda s: lr_factor(s, sc.steps - lc.disc_start, sc.warmup_steps, oc.lr, sc.end_lr))
        d_scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    ema = None
    if oc.ema_decay > 0:
        ema = ckpt_io.EMA(task.model, oc.ema_decay, oc.ema_update_every, oc.ema_update_after, oc.ema_warmup)

    step = 0
    if saved is not None:
        task.model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        if disc is not None and saved.get("disc") is not None:
            disc.load_state_dict(saved["disc"])
            d_opt.load_state_dict(saved["disc_optimizer"])
            d_sched.load_state_dict(saved["disc_scheduler"])
            d_scaler.load_state_dict(saved["disc_scaler"])
            if lecam is not None:
                lecam.load_state_dict(saved["lecam"])
        step = int(saved["step"])
        states = saved["rng"]
        if len(states) != ctx.world_size:
            log.warning("resuming %d processes from a %d-process run: RNG streams reseeded", ctx.world_size,
                        len(states))
            dist_utils.seed_all(rc.seed + 7919 * step + ctx.rank)
        else:
            ckpt_io.set_rng_state(states[ctx.rank])
        log.info("resumed %s at step %d", ckpt_path, step)
    else:
        dist_utils.seed_all(rc.seed + 1 + ctx.rank)  # per-rank streams (dropout); data randomness is per sample

    model = DDP(task, device_ids=[device.index] if device.type == "cuda" else None) if ctx.distributed else task
    d_model = DDP(disc, device_ids=[device.index] if device.type == "cuda" else None) if (
        ctx.distributed and disc is not None) else disc
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "config.json")
        n_train = sum(p.numel() for p in params)
        log.info("task %s, preset %s: %d trainable parameters, %d samples, global batch %d (%d processes x %d, "
                 "accumulation %d), %s", config.model.task, config.model.preset, n_train, len(data), oc.batch_size,
                 ctx.world_size, oc.batch_size // oc.grad_accum // ctx.world_size, oc.grad_accum, dtype or "fp32")

    def checkpoint() -> None:
        states = dist_utils.all_gather_objects(ctx, ckpt_io.rng_state())
        if ctx.is_main:
            epoch, within = order.position(step * oc.grad_accum)
            ckpt_io.save_rotating(out, {
                "task": config.model.task, "preset": config.model.preset, "kind": task.kind,
                "config": config.to_dict(), "step": step, "world_size": ctx.world_size,
                "model": task.model.state_dict(), "ema": ema.state_dict() if ema else None,
                "disc": disc.state_dict() if disc is not None else None,
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                "disc_optimizer": d_opt.state_dict() if d_opt is not None else None,
                "disc_scheduler": d_sched.state_dict() if d_sched is not None else None,
                "disc_scaler": d_scaler.state_dict() if d_scaler is not None else None,
                "lecam": lecam.state_dict() if lecam is not None else None,
                "rng": states,
                "data": {"seed": rc.seed, "dataset_size": len(data), "global_micro_batch": order.global_micro,
                         "micro_batches_done": step * oc.grad_accum, "epoch": epoch, "micro_batch_in_epoch": within},
            }, config.ckpt.keep_last, config.ckpt.keep_every)
            save_checkpoint(task.model, out / "model.safetensors", task.kind, export_meta)
            if ema is not None:
                save_checkpoint(_ema_model(), out / "ema.safetensors", task.kind, export_meta)
        dist_utils.barrier(ctx)

    ema_copy: list[nn.Module] = []
    export_meta = ckpt_io.trained_with(config, getattr(task, "tokenizer", None)) if ctx.is_main else {}

    def _ema_model() -> nn.Module:
        if ema is None:
            return task.model.eval()
        if not ema_copy:
            ema_copy.append(copy.deepcopy(task.model).requires_grad_(False))
        ema_copy[0].load_state_dict(ema.state_dict())
        return ema_copy[0].eval()

    run_log = RunLog(out, step, sc.steps, wc.tensorboard, ctx.is_main)
    image_metric = None
    if wc.rfid and task.kind == "tokenizer":
        factory = load_image_metric("rfid")  # every rank: a missing plug-in stops all of them, not rank 0 alone
        if ctx.is_main:
            image_metric = factory(wc.inception_weights or None, device, out)
    history: list[dict] = []
    sums: dict[str, float] = {}
    n_logged, t_last = 0, time.perf_counter()
    stop = min(sc.steps, rc.stop_at) if rc.stop_at else sc.steps
    batches = iter(micro_batch_loader(data, order, step * oc.grad_accum, stop * oc.grad_accum, config.data.workers,
                                      pin=device.type == "cuda"))
    task.train()
    while step < stop:
        adversarial = disc is not None and step >= lc.disc_start
        parts: dict[str, float] = {}
        logit_means = torch.zeros(2, device=device)  # mean real, fake discriminator logits over this step
        for micro in range(oc.grad_accum):
            batch = _to(next(batches), device)
            last = micro == oc.grad_accum - 1
            sync = contextlib.nullcontext() if (last or not ctx.distributed) else model.no_sync()
            if adversarial:
                disc.requires_grad_(False)  # the generator-side term must not train the discriminator
            with sync:
                with autocast_context(device, dtype):
                    result = model(batch, disc if adversarial else None)
                scaler.scale(result.loss / oc.grad_accum).backward()
            for k, v in {"loss": result.loss, **result.logs}.items():  # tensors: no device sync per step
                parts[k] = parts.get(k, 0.0) + v.detach().float() / oc.grad_accum
            if adversarial:
                disc.requires_grad_(True)
                d_sync = contextlib.nullcontext() if (last or not ctx.distributed) else d_model.no_sync()
                with d_sync:
                    # real and fake in one pass; the discriminator computes in float32 whatever the autocast
                    real_logits, fake_logits = d_model(torch.cat([result.real, result.fake.detach()])).chunk(2)
                    d_loss = hinge_d_loss(real_logits, fake_logits)
                    means = torch.stack([real_logits.float().mean(), fake_logits.float().mean()])
                    if lecam is not None:
                        if ctx.distributed:  # the global micro-batch's means: N processes compute what one does
                            means = dist_nn.all_reduce(means) / ctx.world_size
                        reg = lecam.loss(means[0], means[1])
                        d_loss = d_loss + lc.lecam_weight * reg
                        parts["lecam"] = parts.get("lecam", 0.0) + reg.detach() / oc.grad_accum
                    d_scaler.scale(d_loss / oc.grad_accum).backward()
                parts["disc"] = parts.get("disc", 0.0) + d_loss.detach() / oc.grad_accum
                logit_means += means.detach() / oc.grad_accum
        scaler.unscale_(opt)
        if adversarial:
            d_scaler.unscale_(d_opt)
        if on_gradients is not None:  # the discriminator's under "disc/": its averages are checked as the model's
            grads = {n: p.grad.detach().clone() for n, p in task.named_parameters() if p.grad is not None}
            if adversarial:
                grads.update({f"disc/{n}": p.grad.detach().clone() for n, p in disc.named_parameters()
                              if p.grad is not None})
            on_gradients(step, grads)
        norm = torch.nn.utils.clip_grad_norm_(params, oc.grad_clip if oc.grad_clip > 0 else float("inf"))
        parts["grad_norm"] = norm.detach()
        parts["lr"] = opt.param_groups[0]["lr"]
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sched.step()
        if adversarial:
            if oc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(disc.parameters(), oc.grad_clip)
            d_scaler.step(d_opt)
            d_scaler.update()
            d_opt.zero_grad(set_to_none=True)
            d_sched.step()
            parts["logits_real"], parts["logits_fake"] = logit_means[0], logit_means[1]
            if lecam is not None:  # global means: every rank's EMAs hold the same state
                lecam.update(logit_means[0], logit_means[1])
        if ema is not None:
            ema.update(task.model, step + 1)  # step + 1: the optimizer step just taken, counted from 1
        step += 1
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        n_logged += 1

        if step % rc.log_every == 0 or step == stop:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            means = {k: float(v) / n_logged for k, v in sums.items()}
            record = {"step": step, **dist_utils.mean_over_ranks(ctx, means),
                      "images_per_sec": n_logged * oc.batch_size / max(now - t_last, 1e-9)}
            history.append(record)
            run_log.train_record(record)
            sums, n_logged, t_last = {}, 0, time.perf_counter()
        if rc.image_every and step % rc.image_every == 0 and ctx.is_main:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                rows = task.preview(_ema_model(), batch)
                if ema is not None and step <= wc.raw_grid_until:  # the EMA lags while its decay warms up
                    rows += task.preview(task.model.eval(), batch)[-1:]
            save_grid(rows, out / "images" / f"step_{step:07d}.png")
            task.train()
        if wc.eval_every and step % wc.eval_every == 0 and ctx.is_main:
            run_log.eval_record({"step": step, **_evaluate(task, _ema_model(), holdout, oc, device, dtype,
                                                           image_metric)})
            task.train()
        if step % rc.ckpt_every == 0 or step == stop:
            checkpoint()
    run_log.close()
    return TrainResult(out, step, task.model, ema.state_dict() if ema else None, history)


def _evaluate(task: Task, model: nn.Module, holdout, oc, device: torch.device, dtype,
              image_metric=None) -> dict[str, float]:
    """Held-out metrics of `model` (the EMA when there is one: what the run exports)."""
    batch = max(1, oc.batch_size // oc.grad_accum)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if task.kind == "generator":
            return evaluate_generator(model, holdout, batch, device, dtype)
        return evaluate_tokenizer(model, holdout, task.image_size, batch, device, dtype,
                                  image_metric.new() if image_metric is not None else None)
