"""The training run's config: frozen dataclass sections, and the one `--section.key=value` override mechanism.

Defaults are the TiTok release's training hyper-parameters (arXiv 2406.07550, configs/training/TiTok):
AdamW with betas (0.9, 0.99) and weight decay 1e-4, cosine decay to `end_lr` after a linear warm-up, EMA of
the weights, gradient clipping at 1.0, bf16 autocast on CUDA. `optim.batch_size` is the GLOBAL batch of one
optimizer step (summed over processes and accumulation steps), so a run means the same thing at any scale.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from titok.configs import ConfigMixin, parse_value
from titok.errors import ConfigError
from titok.registry import config_with_overrides
from titok.train.scale_config import CheckpointSection, WatchSection

TASKS = ("proxy_codes", "decoder_finetune", "single_stage", "generator")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ModelSection(ConfigMixin):
    task: str = "single_stage"  # one of TASKS
    preset: str = "titok_tiny_vq"  # tokenizer preset (tokenizer tasks) or generator preset (generator task)
    init_weights: str = ""  # start from these weights; decoder_finetune: the proxy_codes stage's output
    teacher: str = ""  # proxy_codes: frozen MaskGIT-VQGAN preset ("" = the one matching the pixel decoder)
    teacher_weights: str = ""  # its weights (the release's maskgit-vqgan-imagenet-f16-256.bin)
    tokenizer: str = ""  # generator: tokenizer preset ("" = the generator preset's paired tokenizer)
    tokenizer_weights: str = ""
    # a new tokenizer's init: "release" (the release's init pass, the default) or "torch" (PyTorch's module
    # defaults, ours: the tiny unnormalised VQ of the learning tests collapses its codebook from the release's)
    init: str = "release"


@dataclass(frozen=True)
class DataSection(ConfigMixin):
    source: str = "builtin:skimage"  # "builtin:skimage" | "builtin:procedural" | an image folder (ImageNet train/)
    limit: int = 0  # images used, 0 = all of the folder or shards (built-in sets: 0 draws 64); logged either way
    random_crop: bool = True  # shorter side to image_size * (1 + crop_margin), then a random image_size crop
    crop_margin: float = 0.0  # 0 = the release's Resize(S) + RandomCrop(S) (the crop moves along the longer side)
    hflip: bool = True  # random horizontal flip; generator token caches store both orientations
    tokens: str = ""  # generator: pretokenized cache (.safetensors); written from `source` first if missing
    strict: bool = False  # an unreadable image is an error instead of being replaced by the next one
    workers: int = 0  # DataLoader worker processes building batches ahead (0 = in the training process)


@dataclass(frozen=True)
class OptimSection(ConfigMixin):
    batch_size: int = 8  # global: over all processes and accumulation steps
    grad_accum: int = 1
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-4
    grad_clip: float = 1.0  # 0 = off
    ema_decay: float = 0.999  # the EMA's decay once warmed up; 0 = no EMA
    ema_warmup: bool = True  # the release's decay warm-up min((1 + s) / (10 + s), ema_decay); false = constant
    ema_update_every: int = 1  # fold the weights in every this many optimizer steps
    ema_update_after: int = 0  # optimizer steps before the warm-up starts (the EMA copies the weights until then)
    disc_lr: float = 1e-4


@dataclass(frozen=True)
class ScheduleSection(ConfigMixin):
    steps: int = 1000  # optimizer steps
    warmup_steps: int = 0
    end_lr: float = 1e-5  # cosine decay from optim.lr to this


@dataclass(frozen=True)
class LossSection(ConfigMixin):
    recon: str = "l2"  # "l1" | "l2" pixel reconstruction
    recon_weight: float = 1.0
    # Perceptual term (perceptual.py): perceptual_weight * the weighted mean of LPIPS and ConvNeXt-S with weights
    # perceptual_mix = (lpips, convnext). Off (0) unless set, e.g. by a recipe; when on, the files it needs are
    # required (an error names the missing key or file).
    perceptual_weight: float = 0.0
    perceptual_mix: tuple[float, float] = (0.0, 1.0)  # stage 2 "convnext_s"; single stage (1.0, 0.1)
    convnext_weights: str = ""  # torchvision convnext_small-0c510722.pth
    lpips_vgg_weights: str = ""  # torchvision vgg16-397923af.pth (LPIPS backbone)
    lpips_heads_weights: str = ""  # the lpips package's weights/v0.1/vgg.pth (LPIPS linear heads)
    adversarial_weight: float = 0.1  # hinge GAN generator term (stage 2: 0.01)
    disc_start: int = 20000  # the discriminator and the adversarial term join at this step; -1 = never
    disc_layers: int = 3  # discriminator stages (discriminator.py, the release's NLayerDiscriminator)
    disc_channels: int = 128  # its widths c, c, 2c, 4c, ... (the release's), c a multiple of 32
    lecam_weight: float = 0.001  # LeCam regularisation of the discriminator; 0 = off
    lecam_decay: float = 0.999  # EMA decay of the mean logits LeCam compares against
    quantizer_weight: float = 1.0  # VQ commitment + codebook loss
    kl_weight: float = 1e-6  # VAE tokenizers
    label_dropout: float = 0.1  # generator: rows trained with the null class (classifier-free guidance)
    label_smoothing: float = 0.1  # generator: cross-entropy label smoothing
    unmasked_weight: float = 0.1  # generator: loss weight of the unmasked tokens (masked ones weigh 1)
    # generator: "batch" = the release (weighted sum over the per-process batch / sum of weights); "sample" = ours,
    # per image then averaged (every image weighs the same; independent of how the batch is split)
    token_loss_norm: str = "batch"


@dataclass(frozen=True)
class RunSection(ConfigMixin):
    out: str = "runs/train"
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    precision: str = "auto"  # auto = bf16 on CUDA, fp32 on CPU
    log_every: int = 10
    ckpt_every: int = 500
    image_every: int = 500  # reconstruction / sample grids as PNG; 0 = off
    stop_at: int = 0  # stop (with a checkpoint) after this step although schedule.steps is larger; 0 = off
    threads: int = 0  # torch CPU threads; 0 = leave as is
    tf32: bool = True  # TF32 matmuls and cuDNN convolutions on CUDA, as the release trains (no effect on CPU)


@dataclass(frozen=True)
class TrainConfig(ConfigMixin):
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    optim: OptimSection = OptimSection()
    schedule: ScheduleSection = ScheduleSection()
    loss: LossSection = LossSection()
    run: RunSection = RunSection()
    ckpt: CheckpointSection = CheckpointSection()
    watch: WatchSection = WatchSection()

    def __post_init__(self) -> None:
        checks = [
            (self.model.task in TASKS, f"model.task must be one of {', '.join(TASKS)}, got {self.model.task!r}"),
            (self.loss.recon in ("l1", "l2"), f"loss.recon must be 'l1' or 'l2', got {self.loss.recon!r}"),
            (self.loss.token_loss_norm in ("batch", "sample"),
             f"loss.token_loss_norm must be 'batch' or 'sample', got {self.loss.token_loss_norm!r}"),
            (self.run.precision in PRECISIONS,
             f"run.precision must be one of {', '.join(PRECISIONS)}, got {self.run.precision!r}"),
            (self.run.device in ("auto", "cpu", "cuda"),
             f"run.device must be auto, cpu or cuda, got {self.run.device!r}"),
            (self.optim.batch_size > 0 and self.optim.grad_accum > 0, "optim.batch_size and grad_accum must be > 0"),
            (self.optim.batch_size % self.optim.grad_accum == 0,
             f"optim.batch_size {self.optim.batch_size} is not a multiple of grad_accum {self.optim.grad_accum}"),
            (self.schedule.steps > 0, "schedule.steps must be > 0"),
            (0 <= self.optim.ema_decay < 1, f"optim.ema_decay must be in [0, 1), got {self.optim.ema_decay}"),
            (self.optim.ema_update_every >= 1 and self.optim.ema_update_after >= 0,
             f"optim.ema_update_every must be >= 1 and optim.ema_update_after >= 0, got "
             f"{self.optim.ema_update_every} and {self.optim.ema_update_after}"),
            (len(self.optim.betas) == 2, "optim.betas needs two numbers"),
            (len(self.loss.perceptual_mix) == 2 and min(self.loss.perceptual_mix) >= 0
             and sum(self.loss.perceptual_mix) > 0,
             f"loss.perceptual_mix needs two weights >= 0, not both 0 (lpips, convnext), "
             f"got {self.loss.perceptual_mix}"),
            (self.loss.disc_channels > 0 and self.loss.disc_channels % 32 == 0,
             f"loss.disc_channels must be a positive multiple of 32 (GroupNorm(32)), got {self.loss.disc_channels}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


SECTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def _coerce(key: str, value: Any, current: Any) -> Any:
    # Shapes TOML gives that the dataclass holds differently; anything else is checked by config_with_overrides.
    if isinstance(current, str) and not isinstance(value, str):
        return str(value)  # `--model.preset=123` means the string
    if isinstance(current, tuple) and isinstance(value, list):
        pairs = zip(value, current, strict=False)
        return tuple(float(v) if isinstance(v, int) and isinstance(c, float) else v for v, c in pairs)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, (int, float)) and isinstance(current, bool) != isinstance(value, bool):  # bool is an int
        raise ConfigError(f"{key}: expected {type(current).__name__}, got {type(value).__name__} ({value!r})")
    return value


def apply_overrides(config: TrainConfig, overrides: Iterable[str]) -> TrainConfig:
    """Apply 'section.key=value' strings; unknown sections/keys and wrong types are errors listing the known ones."""
    values: dict[str, dict[str, Any]] = {}
    for text in overrides:
        text = text.removeprefix("--")
        if "=" not in text:
            raise ConfigError(f"override {text!r}: expected section.key=value")
        key, raw = text.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"override {key!r}: expected section.key with section one of {', '.join(SECTIONS)}")
        values.setdefault(parts[0], {})[parts[1]] = parse_value(raw)
    return apply_values(config, values)


def apply_values(config: TrainConfig, values: dict[str, dict[str, Any]], origin: str = "override") -> TrainConfig:
    """Apply {section: {key: value}} (parsed overrides, a recipe file's tables) with the same checks."""
    replaced = {}
    for section, items in values.items():
        if section not in SECTIONS or not isinstance(items, dict):
            raise ConfigError(f"{origin}: unknown section {section!r}: expected section.key with section one of "
                              f"{', '.join(SECTIONS)}")
        current_section = getattr(config, section)
        known = [f.name for f in dataclasses.fields(current_section)]
        coerced = {}
        for name, value in items.items():
            if name not in known:
                raise ConfigError(f"{origin}: unknown key '{section}.{name}'; known keys of [{section}]: "
                                  f"{', '.join(known)}")
            coerced[name] = _coerce(f"{section}.{name}", value, getattr(current_section, name))
        try:
            replaced[section] = config_with_overrides(current_section, coerced)
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {section}.{exc}") from None
    return dataclasses.replace(config, **replaced)


def load_config(path: str | Path) -> TrainConfig:
    """A config.json written by a run (or by hand); unknown keys are errors."""
    try:
        return TrainConfig.from_dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
