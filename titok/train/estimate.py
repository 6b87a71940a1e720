"""`titok-train --estimate`: the FLOPs of one training step of a config, and the GPU-hours its schedule needs.

The step is counted, not guessed: the task's forward and backward (and the discriminator's step once it has
joined) run once on a small micro-batch under `torch.utils.flop_counter` with every tensor on the "meta" device, so
no memory is allocated and no weights files are needed, even for TiTok-L-32. The counter adds up matrix multiplies,
convolutions and attention at 2 FLOPs per multiply-add (elementwise work is not counted, as usual for model FLOPs
utilisation); the per-sample count times the global batch is one optimizer step. Frozen parts (a teacher, the
perceptual networks, the tokenizer that encodes a generator's images) count for their forward work, as they run.
GPU-hours = total FLOPs / (peak x utilisation), with the vendors' dense peaks (no sparsity) below: a planning figure,
not a measurement; the utilisation is stated with every number.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch

from titok.errors import ConfigError
from titok.train.config import TrainConfig

# (GPU, precision) -> dense peak FLOP/s (NVIDIA data sheets; fp32 without TF32, which PyTorch's matmuls default to).
PEAK_FLOPS: dict[tuple[str, str], float] = {
    ("H100", "bf16"): 989e12, ("H100", "fp16"): 989e12, ("H100", "fp32"): 67e12,  # H100 SXM
    ("H100-PCIe", "bf16"): 756e12, ("H100-PCIe", "fp16"): 756e12, ("H100-PCIe", "fp32"): 51e12,
    ("H200", "bf16"): 989e12, ("H200", "fp16"): 989e12, ("H200", "fp32"): 67e12,
    ("A100", "bf16"): 312e12, ("A100", "fp16"): 312e12, ("A100", "fp32"): 19.5e12,
}
GPUS = sorted({g for g, _ in PEAK_FLOPS})
MICRO_BATCH = 2  # samples per counted pass; counts are linear in the batch


@dataclass(frozen=True)
class Estimate:
    flops_per_sample: float  # forward + backward before the discriminator joins
    flops_per_sample_adversarial: float  # after it joins (its forward on the generator side + its own step)
    steps_before_disc: int
    steps_with_disc: int
    batch_size: int
    precision: str
    note: str = ""  # what the count includes that a user might not expect

    @property
    def flops_per_step(self) -> float:
        return self.flops_per_sample * self.batch_size

    @property
    def total_flops(self) -> float:
        return self.batch_size * (self.steps_before_disc * self.flops_per_sample
                                  + self.steps_with_disc * self.flops_per_sample_adversarial)

    def gpu_hours(self, gpu: str, utilisation: float) -> float:
        return self.total_flops / (peak_flops(gpu, self.precision) * utilisation) / 3600


def peak_flops(gpu: str, precision: str) -> float:
    if (gpu, precision) not in PEAK_FLOPS:
        raise ConfigError(f"--gpu {gpu!r}: no peak listed for {precision}; known GPUs: {', '.join(GPUS)}")
    return PEAK_FLOPS[(gpu, precision)]


def step_precision(config: TrainConfig) -> str:
    """The precision the step computes in on a GPU ("auto" trains in bf16 on CUDA)."""
    return "bf16" if config.run.precision == "auto" else config.run.precision


def _without_files(config: TrainConfig) -> TrainConfig:
    """The same run with no weights files: the networks' shapes are all a FLOP count needs."""
    model = dataclasses.replace(config.model, init_weights="", teacher_weights="", tokenizer_weights="")
    return dataclasses.replace(config, model=model)


def _count(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def train_step(task, batch: dict[str, torch.Tensor], disc=None) -> None:
    """The work of one micro-batch as the loop does it: the task's forward and backward, then (with `disc`) the
    discriminator's forward on real and fake images and its backward."""
    from titok.train.discriminator import hinge_d_loss

    if disc is not None:
        disc.requires_grad_(False)  # as the loop: the adversarial term does not train the discriminator
    result = task(batch, disc)
    result.loss.backward()
    if disc is not None:
        disc.requires_grad_(True)
        real, fake = disc(torch.cat([result.real, result.fake.detach()])).chunk(2)
        hinge_d_loss(real, fake).backward()


def estimate(config: TrainConfig) -> Estimate:
    """Count one micro-batch's FLOPs on the meta device and scale them to the config's schedule."""
    from titok.train.discriminator import NLayerDiscriminator
    from titok.train.tasks import build_task

    lc, sc = config.loss, config.schedule
    quiet = logging.getLogger("titok.train.tasks")
    level, quiet.level = quiet.level, logging.ERROR  # no "random weights" warnings: no weights are meant here
    try:
        with torch.device("meta"):
            task = build_task(_without_files(config), architecture_only=True)
            disc = NLayerDiscriminator(lc.disc_channels, lc.disc_layers) if (
                task.uses_discriminator and lc.adversarial_weight > 0 and lc.disc_start >= 0) else None
    finally:
        quiet.level = level
    task.train()
    b, size = MICRO_BATCH, task.image_size
    batch = {"seeds": torch.arange(b), "labels": torch.zeros(b, dtype=torch.long, device="meta"),
             "images": torch.zeros(b, 3, size, size, device="meta")}
    if task.inputs == "tokens":
        batch["tokens"] = torch.zeros(b, task.model.num_tokens, dtype=torch.long, device="meta")

    plain = _count(lambda: train_step(task, batch)) / b
    adversarial = _count(lambda: train_step(task, batch, disc)) / b if disc is not None else plain
    start = min(max(lc.disc_start, 0), sc.steps) if disc is not None else sc.steps
    note = ""
    if task.kind == "generator" and task.inputs == "images":
        note = ("counted with the frozen tokenizer encoding every batch; a token cache (--data.tokens) "
                "takes that work out of the step")
    return Estimate(plain, adversarial, start, sc.steps - start, config.optim.batch_size, step_precision(config), note)


def report(est: Estimate, gpu: str, utilisation: float, num_gpus: int, name: str) -> str:
    """The lines `titok-train --estimate` prints."""
    hours = est.gpu_hours(gpu, utilisation)
    peak = peak_flops(gpu, est.precision)
    lines = [f"{name}: global batch {est.batch_size}, {est.steps_before_disc + est.steps_with_disc:,} steps, "
             f"{est.precision}",
             f"  FLOPs per sample (forward + backward): {est.flops_per_sample / 1e9:,.1f} GFLOP"]
    if est.steps_with_disc:
        lines.append(f"  ... with the discriminator (from step {est.steps_before_disc:,}): "
                     f"{est.flops_per_sample_adversarial / 1e9:,.1f} GFLOP")
    lines += [f"  FLOPs per step: {est.flops_per_step / 1e15:,.2f} PFLOP",
              f"  total: {est.total_flops / 1e18:,.1f} EFLOP",
              f"  {gpu} at {utilisation:.0%} of its dense {est.precision} peak ({peak / 1e12:,.0f} TFLOP/s): "
              f"{hours:,.0f} GPU-hours = {hours / num_gpus:,.1f} hours ({hours / num_gpus / 24:,.1f} days) "
              f"on {num_gpus} GPUs"]
    if est.note:
        lines.append(f"  note: {est.note}")
    return "\n".join(lines)
