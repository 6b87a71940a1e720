"""The pluggable training tasks of TiTok (arXiv 2406.07550, Sec. 3.3 and 4.1), one class each, one loop for all.

  proxy_codes       two-stage stage 1: the decoder predicts a frozen MaskGIT-VQGAN's codes of the image
                    (cross-entropy on the (B, K, G, G) proxy logits) + the VQ commitment/codebook loss
  decoder_finetune  two-stage stage 2: encoder and quantizer frozen; decoder + MaskGIT-VQGAN pixel decoder
                    (and its codebook) trained on pixels (reconstruction, perceptual, adversarial)
  single_stage      VQ or VAE tokenizers that decode pixels: reconstruction + perceptual + adversarial
                    + VQ loss (straight-through) or KL of the diagonal Gaussian posterior
  generator         MaskGIT objective on a tokenizer's codes: arccos masking schedule, class dropout to the
                    null class, label-smoothed cross-entropy (masked tokens weigh 1, unmasked 0.1)

A task is an nn.Module holding the model it trains (`.model`, what gets exported and EMA'd) and whatever it
needs frozen (teacher, perceptual network); `forward(batch, disc)` returns the loss and its parts. The loop
wraps the task in DistributedDataParallel; only parameters with requires_grad are trained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from titok.quantizer import DiagonalGaussian, QuantizerOutput, full_precision
from titok.registry import create, get_spec, list_presets
from titok.train.config import ConfigError, LossSection, TrainConfig
from titok.train.discriminator import hinge_g_loss
from titok.train.losses import (
    arccos_masks,
    mask_tokens,
    masked_token_accuracy,
    masked_token_loss,
    per_sample_normal,
    reconstruction_loss,
)
from titok.train.param_groups import weight_decay_groups
from titok.train.perceptual import LPIPS, ConvNeXtSmall, PerceptualLoss

log = logging.getLogger(__name__)


@dataclass
class TaskOutput:
    loss: torch.Tensor  # scalar, what is back-propagated
    logs: dict[str, torch.Tensor] = field(default_factory=dict)  # detached parts, for the log
    fake: torch.Tensor | None = None  # (B, 3, H, W) reconstructions, for the discriminator step
    real: torch.Tensor | None = None


class Task(nn.Module):
    kind = "tokenizer"  # what `.model` is, for titok.save_checkpoint
    inputs = "images"  # "images" or "tokens": what the batches must hold
    uses_discriminator = False

    def __init__(self, config: TrainConfig, model: nn.Module):
        super().__init__()
        self.config, self.model = config, model
        self.frozen: list[nn.Module] = []

    def freeze(self, *modules: nn.Module | nn.Parameter | None) -> None:
        for m in modules:
            if m is None:
                continue
            m.requires_grad_(False)
            if isinstance(m, nn.Module):
                self.frozen.append(m)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.frozen:  # frozen parts stay in eval mode (dropout off)
            m.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups of the trained model: no decay on biases, norms and embeddings (param_groups.py)."""
        groups = weight_decay_groups(self.model.named_parameters(), weight_decay)
        if sum(len(g["params"]) for g in groups) != len(self.trainable_parameters()):
            raise RuntimeError("a trainable parameter lives outside task.model: it would not be optimised")
        return groups

    @property
    def image_size(self) -> int:
        return self.model.image_size

    def forward(self, batch: dict[str, torch.Tensor], disc: nn.Module | None = None) -> TaskOutput:
        raise NotImplementedError

    @torch.no_grad()
    def preview(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Rows of images (each (n, 3, H, W) in [0, 1]) for the progress grid, made with `model` (e.g. the EMA)."""
        x = batch["images"][:8]
        return [x, model.decode(model.encode(x)).clamp(0, 1)]


# ------------------------------------------------------------------------------------------- tokenizer tasks
class PixelTask(Task):
    """What the pixel-decoding tasks share: reconstruction + perceptual + adversarial terms."""

    uses_discriminator = True

    def __init__(self, config: TrainConfig, model: nn.Module, architecture_only: bool = False):
        super().__init__(config, model)
        self.perceptual = build_perceptual(config, architecture_only)
        self.freeze(self.perceptual)

    def pixel_terms(self, real: torch.Tensor, recon: torch.Tensor, disc: nn.Module | None,
                    vq: QuantizerOutput | None = None, kl: torch.Tensor | None = None):
        return pixel_loss_terms(self.config.loss, real, recon, self.perceptual, disc, vq, kl)


def pixel_loss_terms(lc: LossSection, real: torch.Tensor, recon: torch.Tensor, perceptual: nn.Module | None,
                     disc: nn.Module | None, vq: QuantizerOutput | None = None,
                     kl: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The generator-side loss of the pixel tasks, as the release's ReconstructionLoss_Stage2 / _Single_Stage compute
    it (modeling/modules/losses.py, generator mode; pinned by vectors-train/{gan_losses,stage2_loss,single_stage_loss}):

      recon_weight * MSE (or L1) + perceptual_weight * perceptual + quantizer_weight * VQ loss (or kl_weight * KL)
      + adversarial_weight * (-mean D(recon))

    `disc` is None before the discriminator starts (the loop gates it with adversarial_active): the release's
    discriminator_factor 0. There is no adaptive (gradient-norm) GAN weight: the release's d_weight is its constant
    discriminator_weight (x discriminator_factor 1.0 = our adversarial_weight). Images (B, 3, H, W) in [0, 1]; the
    reconstructions go to the discriminator unclamped. `kl`: the posterior's KL per sample (B,), averaged over the
    batch (the release: sum / B). The release divides the VAE's pixel term by exp(logvar) with logvar a frozen 0,
    which changes nothing and is left out. Logs carry the release's names and meanings (terms already weighted).
    """
    rec = lc.recon_weight * reconstruction_loss(recon, real, lc.recon)
    p = perceptual(recon, real) if perceptual is not None else rec.new_zeros(())  # float32, autocast off
    loss = rec + lc.perceptual_weight * p
    logs = {"reconstruction_loss": rec.detach(), "perceptual_loss": (lc.perceptual_weight * p).detach()}
    if vq is not None:
        loss = loss + lc.quantizer_weight * vq.loss
        logs.update(quantizer_loss=(lc.quantizer_weight * vq.loss).detach(), commitment_loss=vq.commitment.detach(),
                    codebook_loss=vq.codebook.detach())
    if kl is not None:
        kl_term = lc.kl_weight * kl.float().mean()
        loss, logs["kl_loss"] = loss + kl_term, kl_term.detach()
    g = hinge_g_loss(disc(recon.float())) if disc is not None else rec.new_zeros(())  # D computes in float32
    factor = 1.0 if disc is not None else 0.0
    loss = loss + lc.adversarial_weight * factor * g
    logs.update(weighted_gan_loss=(lc.adversarial_weight * factor * g).detach(), gan_loss=g.detach(),
                discriminator_factor=rec.new_tensor(factor), d_weight=rec.new_tensor(lc.adversarial_weight))
    return loss, logs


def proxy_code_terms(lc: LossSection, logits: torch.Tensor, target: torch.Tensor,
                     vq: QuantizerOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage 1's loss, as the release's ReconstructionLoss_Stage1 (pinned by vectors-train/stage1_loss.npz):
    cross-entropy of the proxy logits (B, K, G, G) against the teacher's codes (B, G, G), averaged over all B*G*G
    positions, in float32, + quantizer_weight * (commitment + codebook). The release hard-codes K = 1024 (the
    MaskGIT-VQGAN's codebook) in a view; we take K from the logits, the same for that teacher and right for others.
    Logs carry the release's names (reconstruction_loss = the cross-entropy), plus the proxy accuracy."""
    ce = F.cross_entropy(logits.float(), target)
    loss = ce + lc.quantizer_weight * vq.loss
    acc = (logits.detach().argmax(1) == target).float().mean()
    return loss, {"reconstruction_loss": ce.detach(), "quantizer_loss": (lc.quantizer_weight * vq.loss).detach(),
                  "commitment_loss": vq.commitment.detach(), "codebook_loss": vq.codebook.detach(), "proxy_acc": acc}


def build_perceptual(config: TrainConfig, architecture_only: bool = False) -> PerceptualLoss | None:
    """The perceptual loss the config asks for, its networks loaded from the files it names (None when off).

    `architecture_only`: randomly initialised networks of the right shape, for counting FLOPs without the files.
    """
    lc = config.loss
    if lc.perceptual_weight <= 0:
        return None
    w_lpips, w_convnext = lc.perceptual_mix
    lpips = convnext = None
    if w_lpips > 0:
        lpips = LPIPS() if architecture_only else LPIPS.from_files(lc.lpips_vgg_weights, lc.lpips_heads_weights)
    if w_convnext > 0:
        convnext = ConvNeXtSmall() if architecture_only else ConvNeXtSmall.from_file(lc.convnext_weights)
    return PerceptualLoss(lpips, convnext, w_lpips, w_convnext)


def perceptual_files_missing(config: TrainConfig) -> list[str]:
    """The loss.* keys naming files the configured perceptual loss needs but that are not set."""
    lc = config.loss
    if lc.perceptual_weight <= 0:
        return []
    w_lpips, w_convnext = lc.perceptual_mix
    needed = (["lpips_vgg_weights", "lpips_heads_weights"] if w_lpips > 0 else []) + (
        ["convnext_weights"] if w_convnext > 0 else [])
    return [f"loss.{k}" for k in needed if not getattr(lc, k)]


class ProxyCodesTask(Task):
    def __init__(self, config: TrainConfig, model: nn.Module, teacher: nn.Module):
        super().__init__(config, model)
        self.teacher = teacher
        # The pixel decoder and its codebook ARE the teacher's: copy them so the tokenizer decodes pixels.
        model.pixel_decoder.load_state_dict(teacher.decoder.state_dict())
        model.pixel_quantize.load_state_dict(teacher.quantize.state_dict())
        self.freeze(teacher, model.pixel_decoder, model.pixel_quantize)

    def forward(self, batch, disc=None) -> TaskOutput:
        x, m = batch["images"], self.model
        g = m.config.grid_size
        # The teacher runs in float32 with autocast off: the release calls it outside accelerate's autocast (it is
        # not prepared), so its codes are the float32 ones whatever run.precision says.
        with torch.no_grad(), full_precision(x):
            target = self.teacher.encode(x.float()).view(-1, g, g)  # (B, G, G) MaskGIT-VQGAN codes
        q = m.quantize(m.encode_features(x))  # straight-through quantized tokens (B, N, C)
        logits = m.decoder(q.quantized)  # (B, K, G, G) proxy-code logits
        loss, logs = proxy_code_terms(self.config.loss, logits, target, q)
        return TaskOutput(loss, logs)

    @torch.no_grad()
    def preview(self, model, batch):
        x = batch["images"][:8]
        return [x, self.teacher.decode(self.teacher.encode(x)).clamp(0, 1), model.decode(model.encode(x)).clamp(0, 1)]


class DecoderFinetuneTask(PixelTask):
    def __init__(self, config: TrainConfig, model: nn.Module, architecture_only: bool = False):
        super().__init__(config, model, architecture_only)
        m = model
        # As the release (modeling/titok.py, finetune_decoder): latent tokens, encoder and quantizer frozen; the
        # TiTok decoder, the MaskGIT-VQGAN decoder AND its codebook (pixel_quantize, mixed by the proxy-code
        # softmax) train (training_mode.json, optimizer_param_groups.json).
        self.freeze(m.encoder, m.quantize, m.latent_tokens)

    def forward(self, batch, disc=None) -> TaskOutput:
        x, m = batch["images"], self.model
        with torch.no_grad():
            z = m.tokens_to_latents(m.encode(x))  # frozen encoder + quantizer: (B, N, C)
        recon = m.decode_latents(z)
        loss, logs = self.pixel_terms(x, recon, disc)
        return TaskOutput(loss, logs, fake=recon, real=x)


class SingleStageTask(PixelTask):
    def forward(self, batch, disc=None) -> TaskOutput:
        x, m = batch["images"], self.model
        feats = m.encode_features(x)  # (B, N, C) or VAE moments (B, N, 2C)
        q = kl = None
        if m.quantize is not None:
            q = m.quantize(feats)
            z = q.quantized
        else:
            post = DiagonalGaussian.from_moments(feats)
            noise = per_sample_normal(batch["seeds"], tuple(post.mean.shape[1:])).to(post.mean.device)
            z = post.mean + torch.exp(0.5 * post.logvar) * noise  # reparameterised sample (B, N, C)
            kl = post.kl()  # (B,)
        recon = m.decode_latents(z.to(feats.dtype))
        loss, logs = self.pixel_terms(x, recon, disc, vq=q, kl=kl)
        return TaskOutput(loss, logs, fake=recon, real=x)


# ------------------------------------------------------------------------------------------- generator task
class GeneratorTask(Task):
    kind = "generator"

    def __init__(self, config: TrainConfig, model: nn.Module, tokenizer: nn.Module, use_cache: bool):
        super().__init__(config, model)
        self.tokenizer = tokenizer
        self.freeze(tokenizer)
        self.inputs = "tokens" if use_cache else "images"

    @property
    def image_size(self) -> int:
        return self.tokenizer.image_size

    def forward(self, batch, disc=None) -> TaskOutput:
        g = self.model
        if "tokens" in batch:
            tokens = batch["tokens"]
        else:
            with torch.no_grad():
                tokens = self.tokenizer.encode(batch["images"])  # (B, N) codes, on the fly
        masks, drop = arccos_masks(batch["seeds"], g.num_tokens, self.config.loss.label_dropout)
        masks, drop = masks.to(tokens.device), drop.to(tokens.device)
        ids = mask_tokens(tokens, masks, g.mask_token_id)
        logits = g.logits(ids, batch["labels"], unconditional=drop)  # (B, N, K)
        lc = self.config.loss
        loss = masked_token_loss(logits, tokens, masks, lc.label_smoothing, lc.unmasked_weight, lc.token_loss_norm)
        with torch.no_grad():  # for the log: plain CE on masked positions; accuracy as the release logs it
            masked_ce = masked_token_loss(logits, tokens, masks, norm=lc.token_loss_norm)
            acc = masked_token_accuracy(logits, tokens, masks)
        return TaskOutput(loss, {"masked_ce": masked_ce, "masked_acc": acc})

    @torch.no_grad()
    def preview(self, model, batch):
        n = 8
        labels = batch["labels"][:n].to(self.tokenizer.device)
        tokens = model.generate(labels, seeds=list(range(len(labels))))
        return [self.tokenizer.decode(tokens).clamp(0, 1)]


# ------------------------------------------------------------------------------------------- building
def _load(kind: str, preset: str, weights: str, family: str | None = None, **overrides) -> nn.Module:
    return create(kind, preset, weights or None, family=family, **overrides)


def matching_teacher(tokenizer: nn.Module) -> str:
    """The registered MaskGIT-VQGAN preset whose network and image size are the tokenizer's pixel decoder's."""
    want = tokenizer.config.pixel_decoder
    for name in list_presets("tokenizer", family="baselines"):
        cfg = get_spec("tokenizer", name).config
        if getattr(cfg, "vqgan", None) == want and getattr(cfg, "image_size", None) == tokenizer.image_size:
            return name
    raise ConfigError(f"no registered MaskGIT-VQGAN matches the pixel decoder of {tokenizer.preset}; "
                      f"set model.teacher to one")


def build_task(config: TrainConfig, architecture_only: bool = False) -> Task:
    """The task `config.model.task` with its models (weights loaded, frozen parts frozen), on the CPU.

    `architecture_only`: the perceptual networks are built without their weights files (for --estimate).
    """
    mc = config.model
    if mc.task == "generator":
        spec = get_spec("generator", mc.preset)
        gen = _load("generator", mc.preset, mc.init_weights)
        tok_name = mc.tokenizer or spec.tokenizer
        if not tok_name:
            raise ConfigError(f"generator {mc.preset} names no tokenizer; set model.tokenizer")
        if not mc.tokenizer_weights:
            log.warning("model.tokenizer_weights not set: generator trained on the codes of a RANDOM %s", tok_name)
        tok = _load("tokenizer", tok_name, mc.tokenizer_weights)
        if not tok.is_vq or tok.codebook_size != gen.codebook_size or tok.num_tokens != gen.num_tokens:
            raise ConfigError(f"tokenizer {tok_name} ({tok.num_tokens} tokens, codebook {tok.codebook_size}) does not "
                              f"fit generator {mc.preset} ({gen.num_tokens} tokens, codebook {gen.codebook_size})")
        return GeneratorTask(config, gen, tok, use_cache=bool(config.data.tokens))

    if mc.init not in ("release", "torch"):
        raise ConfigError(f"model.init must be 'release' or 'torch', got {mc.init!r}")
    tok = _load("tokenizer", mc.preset, mc.init_weights, family="titok",
                **({} if mc.init == "release" else {"init_scheme": mc.init}))
    two_stage = tok.config.two_stage
    if mc.task in ("proxy_codes", "decoder_finetune") and not two_stage:
        raise ConfigError(f"{mc.task} trains two-stage tokenizers; {mc.preset} decodes pixels: use single_stage")
    if mc.task == "single_stage" and two_stage:
        raise ConfigError(f"{mc.preset} is two-stage: train it with proxy_codes, then decoder_finetune")
    if mc.task == "proxy_codes":
        name = mc.teacher or matching_teacher(tok)
        if not mc.teacher_weights:
            log.warning("model.teacher_weights not set: proxy codes come from a RANDOM %s (tests only)", name)
        teacher = _load("tokenizer", name, mc.teacher_weights)
        if getattr(teacher.config, "vqgan", None) != tok.config.pixel_decoder:
            raise ConfigError(f"teacher {name} is not the network of {mc.preset}'s pixel decoder")
        return ProxyCodesTask(config, tok, teacher)
    if mc.task == "decoder_finetune":
        if not mc.init_weights and not architecture_only:
            raise ConfigError("decoder_finetune needs model.init_weights: the proxy_codes stage's model.safetensors")
        return DecoderFinetuneTask(config, tok, architecture_only)
    return SingleStageTask(config, tok, architecture_only)


def resolve(config: TrainConfig) -> TrainConfig:
    """Checks across settings before anything is built: a perceptual loss that is on needs its weights files."""
    missing = perceptual_files_missing(config)
    if missing:
        raise ConfigError(f"loss.perceptual_weight={config.loss.perceptual_weight} with perceptual_mix "
                          f"{tuple(config.loss.perceptual_mix)} needs {', '.join(missing)} (weights files by path; "
                          f"see titok/train/perceptual.py), or set --loss.perceptual_weight=0 to train without it")
    return config
