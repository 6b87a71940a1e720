"""The discriminator and the GAN terms against the release (discriminator_seed1.npz, gan_losses.npz).

The discriminator is ours (titok.train.discriminator.NLayerDiscriminator) as the release recipes build it, loaded
with the recording's synthetic weights under the release's key names (its manifest). The GAN terms go through the
functions the loop and the tasks call: hinge_d_loss / hinge_g_loss / LeCamEMA, adversarial_active (the gate),
tasks.pixel_loss_terms (generator side) and discriminator.discriminator_loss (discriminator step), with the
release's stand-ins (a discriminator returning the recorded logits, a perceptual loss returning a fixed scalar).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from titok.quantizer import QuantizerOutput
from titok.train.discriminator import (
    LeCamEMA,
    NLayerDiscriminator,
    adversarial_active,
    discriminator_loss,
    hinge_d_loss,
    hinge_g_loss,
    lecam_loss,
)
from titok.train.recipes import list_recipes, load_recipe
from titok.train.release_vectors import Result
from titok.train.release_vectors._gan_tools import (
    DISC_ATOL,
    FixedLogits,
    FixedPerceptual,
    compare,
    load_npz,
    loss_section,
    manifest_of,
    recipe_results,
    tensor,
    weights,
)
from titok.train.tasks import pixel_loss_terms

PIXEL_TASKS = ("decoder_finetune", "single_stage")


def release_discriminators() -> dict[tuple[int, int], list[str]]:
    """(channels, stages) -> the release recipes of ours that train a discriminator with them."""
    out: dict[tuple[int, int], list[str]] = {}
    for name in list_recipes():
        config = load_recipe(name)
        if config.model.task in PIXEL_TASKS and config.loss.disc_start >= 0 and config.loss.adversarial_weight > 0:
            out.setdefault((config.loss.disc_channels, config.loss.disc_layers), []).append(name)
    return out


def load_discriminator(folder: Path, manifest: str, seed: int, channels: int = 128, stages: int = 3):
    """Ours, loaded strictly with the recording's synthetic weights under the release's names."""
    man, sd = weights(folder, manifest, seed)
    disc = NLayerDiscriminator(channels, stages)
    disc.load_state_dict(sd)
    return disc.eval(), man


def check_discriminator(folder: Path, entry: dict) -> list[Result]:
    file = entry["file"]
    out = []
    builds = release_discriminators()
    out.append(Result(file, "release recipes build one discriminator", len(builds) == 1,
                      f"(channels, stages) of the release recipes: {sorted(builds)}"))
    channels, stages = next(iter(builds)) if builds else (128, 3)
    with torch.device("meta"):
        shapes = [(n, tuple(p.shape)) for n, p in NLayerDiscriminator(channels, stages).named_parameters()]
    man = manifest_of(folder, entry["manifest"])
    ours_only, theirs_only = [s for s in shapes if s not in man][:3], [s for s in man if s not in shapes][:3]
    out.append(Result(file, "parameter names and shapes", shapes == man,
                      f"{len(shapes)} tensors equal the release's" if shapes == man else
                      f"ours {ours_only} vs release {theirs_only}"))
    count = sum(torch.Size(s).numel() for _, s in shapes)
    out.append(Result(file, "parameter count", count == entry.get("num_parameters", count),
                      f"{count:,} (release {entry.get('num_parameters', '?'):,})"))
    if shapes != man:
        return out
    disc, _ = load_discriminator(folder, entry["manifest"], entry["seed"], channels, stages)
    v = load_npz(folder, file)
    with torch.no_grad():
        for key in sorted(k for k in v if k.startswith("images_")):
            want = v.get("logits_" + key.removeprefix("images_"))
            if want is not None:
                out.append(compare(file, f"logits_{key.removeprefix('images_')}", disc(tensor(v[key])), want,
                                   rtol=0.0, atol=DISC_ATOL))
    return out


def _quantizer_in(v: dict, prefix: str) -> QuantizerOutput:
    """The quantizer dict the recording fed in: its *_in keys, else the logged pass-through values (their sum is
    the quantizer loss, as the release's VQ makes it)."""
    def get(k):
        return tensor(v[f"{prefix}{k}_in"]) if f"{prefix}{k}_in" in v else None
    com = get("commitment_loss")
    if com is None:
        tag = next(k for k in v if k.endswith("_commitment_loss") and k.startswith(prefix + "gen_"))
        com, cb = tensor(v[tag]), tensor(v[tag.replace("commitment", "codebook")])
        return QuantizerOutput(torch.empty(0), torch.empty(0, dtype=torch.long), com + cb, com, cb)
    return QuantizerOutput(torch.empty(0), torch.empty(0, dtype=torch.long), get("quantizer_loss"), com,
                           get("codebook_loss"))


def generator_results(file: str, v: dict, prefix: str, lc, step: int, tag: str, images, recon, perceptual, disc,
                      vq=None, kl=None, net_keys=(), disc_keys=()) -> list[Result]:
    """Our generator-side loss at `step` (the gate decides whether `disc` joins) against the recorded log dict."""
    active = adversarial_active(step, lc.disc_start)
    loss, logs = pixel_loss_terms(lc, images, recon, perceptual, disc if active else None, vq, kl)
    logs = {**logs, "total_loss": loss, "total_loss_returned": loss}
    out = []
    head = f"{prefix}gen_{tag}_"
    for key in sorted(k.removeprefix(head) for k in v if k.startswith(head)):
        name = f"{head}{key}"
        if key not in logs:
            out.append(Result(file, name, False, "our loss logs no such term"))
        elif key in disc_keys:
            scale = lc.adversarial_weight if key == "weighted_gan_loss" else 1.0
            out.append(compare(file, name, logs[key], v[name], rtol=1e-5, atol=DISC_ATOL * scale))
        elif key in net_keys:
            out.append(compare(file, name, logs[key], v[name], rtol=1e-4, atol=1e-8))
        else:
            out.append(compare(file, name, logs[key], v[name]))
    return out


def disc_results(file: str, v: dict, head: str, lecam: LeCamEMA, lc, disc, images, recon,
                 atol: float = 1e-7) -> list[Result]:
    """One discriminator step through discriminator_loss (penalty against the EMAs before), then the EMA update
    the loop makes after the step, against the recorded call."""
    out = []
    for side in ("real", "fake"):
        if f"{head}ema_{side}_before" in v:
            out.append(compare(file, f"{head}ema_{side}_before", getattr(lecam, f"ema_{side}"),
                               v[f"{head}ema_{side}_before"]))
    loss, logs, means = discriminator_loss(disc, images, recon, lecam, lc.lecam_weight)
    got = {"loss_returned": loss, "discriminator_loss": logs["discriminator_loss"], "lecam_loss": logs["lecam_loss"],
           "logits_real": means[0], "logits_fake": means[1]}
    # LeCam moves by lecam_weight * 2 * (distance) per unit of error in a mean logit
    lecam_atol = atol * lc.lecam_weight * 2 * (float(means.abs().sum()) + float(lecam.ema_real.abs())
                                               + float(lecam.ema_fake.abs()) + 1)
    for key, value in got.items():
        if f"{head}{key}" in v:
            tol = lecam_atol if key == "lecam_loss" else atol
            out.append(compare(file, f"{head}{key}", value, v[f"{head}{key}"], atol=max(tol, 1e-7)))
    lecam.update(means[0], means[1])
    for side in ("real", "fake"):
        out.append(compare(file, f"{head}ema_{side}_after", getattr(lecam, f"ema_{side}"),
                           v[f"{head}ema_{side}_after"], atol=atol * (1 - lecam.decay)))
    return out


def check_gan_losses(folder: Path, entry: dict) -> list[Result]:
    file = entry["file"]
    v = load_npz(folder, file)
    lc, keys = loss_section(entry["losses"], entry.get("lecam_ema_decay"))
    out = recipe_results(file, entry["config"], lc, keys) if "config" in entry else []
    real, fake = tensor(v["logits_real"]), tensor(v["logits_fake"])
    ema_real, ema_fake = tensor(v["lecam_ema_real_in"]).reshape(()), tensor(v["lecam_ema_fake_in"]).reshape(())
    out += [compare(file, "hinge_d_loss", hinge_d_loss(real, fake), v["hinge_d_loss"]),
            compare(file, "generator_adv_loss", hinge_g_loss(fake), v["generator_adv_loss"]),
            compare(file, "lecam_loss_unweighted", lecam_loss(real.mean(), fake.mean(), ema_real, ema_fake),
                    v["lecam_loss_unweighted"])]
    m = re.search(r"fixed scalar ([0-9.eE+-]+)", entry.get("perceptual", ""))
    if m is None:
        return [*out, Result(file, "perceptual stand-in", False, "index.json names no fixed perceptual value")]
    perceptual = FixedPerceptual(float(m.group(1)))
    images, recon = tensor(v["module_images"]), tensor(v["module_reconstructions"])
    vq = _quantizer_in(v, "")
    start = lc.disc_start
    for tag, step in (("before_start", start - 1), ("at_start", start)):
        out += generator_results(file, v, "", lc, step, tag, images, recon, perceptual, FixedLogits(fake), vq)
    lecam = LeCamEMA(lc.lecam_decay)
    lecam.ema_real.fill_(float(v["disc_update0_ema_real_before"].reshape(())))
    lecam.ema_fake.fill_(float(v["disc_update0_ema_fake_before"].reshape(())))
    for i, step in enumerate((start, start + 1)):
        if f"disc_update{i}_loss_returned" not in v:
            continue
        out.append(Result(file, f"disc_update{i} gate", adversarial_active(step, start),
                          f"the discriminator trains at step {step} (disc_start {start})"))
        out += disc_results(file, v, f"disc_update{i}_", lecam, lc, FixedLogits(fake, real), images, recon)
    if "disc_before_start_loss_returned" in v:
        # The release's direct call before the start (its loop never makes it): hinge gated to 0, LeCam not.
        # Our loop makes no discriminator step there; LeCam from fresh EMAs must still give the recorded values.
        out.append(Result(file, "disc_before_start gate", not adversarial_active(start - 1, start),
                          f"no discriminator step at {start - 1} (the release's loop makes none either)"))
        fresh = LeCamEMA(lc.lecam_decay)
        _, logs, means = discriminator_loss(FixedLogits(fake, real), images, recon, fresh, lc.lecam_weight)
        out += [compare(file, "disc_before_start_lecam_loss", logs["lecam_loss"], v["disc_before_start_lecam_loss"]),
                compare(file, "disc_before_start_loss_returned (its LeCam part)", logs["lecam_loss"],
                        v["disc_before_start_loss_returned"])]
        fresh.update(means[0], means[1])
        out += [compare(file, f"disc_before_start_ema_{s}_after", getattr(fresh, f"ema_{s}"),
                        v[f"disc_before_start_ema_{s}_after"]) for s in ("real", "fake")]
    return out


CHECKS = {"discriminator_seed1.npz": check_discriminator, "gan_losses.npz": check_gan_losses}
