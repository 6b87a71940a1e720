"""The tokenizer losses against the release (stage1_loss.npz, stage2_loss.npz, single_stage_loss.npz).

Everything goes through the code the training tasks run: tasks.proxy_code_terms (stage 1), tasks.pixel_loss_terms
(stage 2, single stage), build_perceptual with the networks loaded from weights files by our loaders (ConvNeXt-S
under torchvision's names; LPIPS from a state dict of the release's LPIPS module), our discriminator under the
release's names, discriminator.discriminator_loss / LeCamEMA for the discriminator step, our VectorQuantizer as our
preset builds it, and our DiagonalGaussian's KL. Loss settings come from the recording's index.json (the release's
`losses` blocks); the recipes of ours that cite the same config must hold them.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import torch

from titok.quantizer import DiagonalGaussian, QuantizerOutput, VectorQuantizer
from titok.registry import get_spec
from titok.train.config import TrainConfig
from titok.train.discriminator import LeCamEMA
from titok.train.recipes import load_recipe
from titok.train.release_vectors import Result
from titok.train.release_vectors._gan_tools import (
    DISC_ATOL,
    NET_RTOL,
    compare,
    exact,
    load_npz,
    loss_section,
    manifest_of,
    recipe_results,
    seeded_manifests,
    tensor,
    weights,
)
from titok.train.release_vectors._release_models import recipe_for
from titok.train.release_vectors.gan import disc_results, generator_results, load_discriminator
from titok.train.tasks import build_perceptual, proxy_code_terms

_NETS: dict[tuple, torch.nn.Module] = {}  # perceptual losses built in this process, by (folder, mix, seeds)
NET_KEYS = ("perceptual_loss", "total_loss", "total_loss_returned")
DISC_KEYS = ("gan_loss", "weighted_gan_loss")


def _vq(v: dict, prefix: str) -> QuantizerOutput:
    def t(k):
        return tensor(v[f"{prefix}{k}_in"])
    return QuantizerOutput(torch.empty(0), torch.empty(0, dtype=torch.long), t("quantizer_loss"),
                           t("commitment_loss"), t("codebook_loss"))


def perceptual_for(folder: Path, lc, seeds: dict[str, int]):
    """build_perceptual for `lc`, its networks loaded from files holding the recording's synthetic weights."""
    w_lpips, w_convnext = lc.perceptual_mix
    key = (str(Path(folder).resolve()), tuple(lc.perceptual_mix), tuple(sorted(seeds.items())))
    if key not in _NETS:
        paths = {}
        with tempfile.TemporaryDirectory() as tmp:
            if w_convnext > 0:
                _, sd = weights(folder, "manifest_convnext_small.json", seeds["manifest_convnext_small.json"])
                torch.save(sd, Path(tmp) / "convnext.pth")
                paths["convnext_weights"] = str(Path(tmp) / "convnext.pth")
            if w_lpips > 0:  # one state dict of the release's LPIPS module serves as both files
                _, sd = weights(folder, "manifest_lpips.json", seeds["manifest_lpips.json"])
                torch.save(sd, Path(tmp) / "lpips.pth")
                paths["lpips_vgg_weights"] = paths["lpips_heads_weights"] = str(Path(tmp) / "lpips.pth")
            config = TrainConfig(loss=dataclasses.replace(lc, **paths))
            quiet = logging.getLogger("titok.train.perceptual")
            level = quiet.level
            quiet.setLevel(logging.ERROR)  # synthetic weights are not torchvision's files, and are meant not to be
            try:
                _NETS[key] = build_perceptual(config)
            finally:
                quiet.setLevel(level)
    return _NETS[key]


def _pixel_check(folder: Path, file: str, v: dict, prefix: str, lc, seeds: dict[str, int], vq=None,
                 kl=None) -> list[Result]:
    out = []
    images, recon = tensor(v["inputs"]), tensor(v["reconstructions"])
    perceptual = perceptual_for(folder, lc, seeds)
    disc, _ = load_discriminator(folder, "manifest_discriminator.json", seeds["manifest_discriminator.json"],
                                 lc.disc_channels, lc.disc_layers)
    with torch.no_grad():
        if f"{prefix}perceptual_raw" in v:
            out.append(compare(file, f"{prefix}perceptual_raw", perceptual(recon, images), v[f"{prefix}perceptual_raw"],
                               rtol=NET_RTOL, atol=1e-8))
        if f"{prefix}lpips_raw" in v:
            out.append(compare(file, f"{prefix}lpips_raw", perceptual.lpips(images, recon).reshape(-1, 1, 1, 1),
                               v[f"{prefix}lpips_raw"], rtol=NET_RTOL, atol=1e-8))
        for key, x in (("disc_logits_recon", recon), ("disc_logits_inputs", images)):
            if prefix + key in v:
                out.append(compare(file, prefix + key, disc(x), v[prefix + key], rtol=0.0, atol=DISC_ATOL))
        start = lc.disc_start
        for tag, step in (("before_start", start - 1), ("at_start", start)):
            out += generator_results(file, v, prefix, lc, step, tag, images, recon, perceptual, disc, vq, kl,
                                     NET_KEYS, DISC_KEYS)
        lecam = LeCamEMA(lc.lecam_decay)  # the recorded module's EMAs start from zeros
        for head in ("disc_update0_", "disc_update1_", "disc_at_start_"):
            if f"{prefix}{head}loss_returned" in v:
                out += disc_results(file, v, prefix + head, lecam, lc, disc, images, recon, atol=DISC_ATOL)
    return out


def check_stage2(folder: Path, entry: dict) -> list[Result]:
    file = entry["file"]
    v = load_npz(folder, file)
    lc, keys = loss_section(entry["losses"], entry.get("lecam_ema_decay"))
    out = recipe_results(file, entry["config"], lc, keys)
    return out + _pixel_check(folder, file, v, "", lc, seeded_manifests(entry), vq=_vq(v, ""))


def check_single_stage(folder: Path, entry: dict) -> list[Result]:
    file = entry["file"]
    v = load_npz(folder, file)
    seeds = seeded_manifests(entry)
    out = []
    for mode in ("vq", "vae"):
        if f"{mode}_losses" not in entry:
            continue
        lc, keys = loss_section(entry[f"{mode}_losses"], entry.get("lecam_ema_decay"))
        out += recipe_results(file, entry[f"{mode}_config"], lc, keys)
        vq = kl = None
        if mode == "vq":
            vq = _vq(v, "vq_")
        else:
            params = tensor(v["vae_posterior_parameters_in"])  # (B, 2C, 1, N): mean then log-variance on dim 1
            post = DiagonalGaussian.from_moments(params.flatten(2).transpose(1, 2))  # ours: (B, N, 2C)
            kl = post.kl()
            want = v["vae_kl_per_sample"].reshape(len(params), -1).sum(1)
            out.append(compare(file, "vae_kl_per_sample (summed per sample)", kl, want))
            if "vae_logvar" in entry:
                out.append(Result(file, "vae_logvar", entry["vae_logvar"] == 0.0,
                                  f"{entry['vae_logvar']} (ours: the pixel term is not divided by exp(logvar); "
                                  f"equal only for the release's frozen 0)"))
        out += _pixel_check(folder, file, v, f"{mode}_", lc, seeds, vq=vq, kl=kl)
    return out


def _preset_for(release_config: str) -> str | None:
    name = recipe_for(release_config)
    return None if name is None else load_recipe(name).model.preset


def check_stage1(folder: Path, entry: dict) -> list[Result]:
    file = entry["file"]
    v = load_npz(folder, file)
    lc, keys = loss_section(entry["losses"])
    out = recipe_results(file, entry["config"], lc, keys)
    loss, logs = proxy_code_terms(lc, tensor(v["logits"]), tensor(v["target_codes"]), _vq(v, ""))
    logs = {**logs, "total_loss": loss, "total_loss_returned": loss}
    for key in ("total_loss_returned", "total_loss", "reconstruction_loss", "quantizer_loss", "commitment_loss",
                "codebook_loss"):
        if key in v:
            out.append(compare(file, key, logs[key], v[key]))
    if "vq_z_in" not in v:
        return out
    preset = _preset_for(entry["config"])
    if preset is None:
        return [*out, Result(file, "vq", False, f"no recipe of ours reproduces {entry['config']}")]
    c = get_spec("tokenizer", preset, family="titok").config
    man = manifest_of(folder, entry["vq_manifest"])
    shape = dict(man)["embedding.weight"]
    out.append(Result(file, f"vq codebook shape ({preset})", shape == (c.codebook_size, c.token_size),
                      f"ours {(c.codebook_size, c.token_size)}, release {shape}"))
    vq = VectorQuantizer(c.codebook_size, c.token_size, c.use_l2_norm)  # as titok/tokenizer.py builds it
    vq.load_state_dict(weights(folder, entry["vq_manifest"], entry["vq_seed"])[1])
    z = tensor(v["vq_z_in"])  # (B, C, 1, N) -> ours (B, 1, N, C)
    q = vq(z.permute(0, 2, 3, 1))
    out += [exact(file, "vq_min_encoding_indices", q.codes, v["vq_min_encoding_indices"]),
            compare(file, "vq_z_quantized", q.quantized.permute(0, 3, 1, 2), v["vq_z_quantized"], 0.0, 1e-5),
            compare(file, "vq_quantizer_loss", q.loss, v["vq_quantizer_loss"]),
            compare(file, "vq_commitment_loss", q.commitment, v["vq_commitment_loss"]),
            compare(file, "vq_codebook_loss", q.codebook, v["vq_codebook_loss"])]
    return out


CHECKS = {"stage1_loss.npz": check_stage1, "stage2_loss.npz": check_stage2,
          "single_stage_loss.npz": check_single_stage}
