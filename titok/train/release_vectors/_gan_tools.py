"""What the discriminator / reconstruction-loss / EMA checks share: reading a recording (npz, the synthetic weights
its manifests describe, the seeds its index names), turning the release's `losses` config block into our
LossSection, and comparisons that say their numbers.

Nothing here assumes a seed or a value: weights come from `synthetic_weights.py` one folder above the vectors (as
../shared/parity/check.py does) with the manifest and seed the recording names; inputs and expected values come
from the npz files; loss settings from `index.json`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import torch

from titok.train.config import LossSection
from titok.train.recipes import is_release, load_recipe
from titok.train.release_vectors import Result
from titok.train.release_vectors._release_models import recipes_citing

LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-7  # pure loss arithmetic (the recording's README)
DISC_ATOL = 1e-4  # discriminator logits, absolute
NET_RTOL = 1e-4  # anything through ConvNeXt-S or LPIPS, relative


def synthetic(folder: Path):
    """The recording's synthetic_weights module (load_manifest, synthetic_state_dict), imported by path."""
    path = Path(folder).resolve().parent / "synthetic_weights.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the vectors folder must sit next to synthetic_weights.py")
    name = "_titok_vectors_synthetic_weights"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def manifest_of(folder: Path, manifest: str) -> list[tuple[str, tuple[int, ...]]]:
    return synthetic(folder).load_manifest(Path(folder) / manifest)


def weights(folder: Path, manifest: str, seed: int) -> tuple[list, dict[str, torch.Tensor]]:
    man = manifest_of(folder, manifest)
    return man, synthetic(folder).synthetic_state_dict(man, seed)


def seeded_manifests(entry: dict) -> dict[str, int]:
    """{manifest file: seed} from the entry's descriptions ("... synthetic weights seed 2 (manifest_x.json)")."""
    found = {}
    for value in entry.values():
        if isinstance(value, str):
            for seed, manifest in re.findall(r"seed (\d+) \((manifest_[\w.-]+\.json)\)", value):
                found[manifest] = int(seed)
    return found


def load_npz(folder: Path, file: str) -> dict[str, np.ndarray]:
    with np.load(Path(folder) / file) as z:
        return {k: z[k] for k in z.files}


def tensor(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def perceptual_mix(name: str) -> tuple[float, float]:
    """The release's PerceptualLoss name -> our (lpips, convnext) weights: "lpips-convnext_s-A-B" -> (A, B);
    a name with both and no numbers averages them equally; "lpips" or "convnext_s" alone -> that one."""
    lp, cn = "lpips" in name, "convnext_s" in name
    if lp and cn:
        m = re.fullmatch(r".*-([0-9.eE+-]+)-([0-9.eE+-]+)", name)
        return (float(m.group(1)), float(m.group(2))) if m else (1.0, 1.0)
    return (1.0, 0.0) if lp else (0.0, 1.0)


# The release's losses keys -> ours (discriminator_weight x discriminator_factor is our adversarial_weight).
_LOSS_KEYS = {"reconstruction_loss": "recon", "reconstruction_weight": "recon_weight",
              "perceptual_weight": "perceptual_weight", "discriminator_start": "disc_start",
              "lecam_regularization_weight": "lecam_weight", "lecam_ema_decay": "lecam_decay",
              "quantizer_weight": "quantizer_weight", "kl_weight": "kl_weight"}


def loss_section(losses: dict, lecam_decay: float | None = None) -> tuple[LossSection, set[str]]:
    """Our LossSection for the release's `losses` block (keys it lacks keep our defaults), and the keys it set."""
    values = {ours: losses[theirs] for theirs, ours in _LOSS_KEYS.items() if theirs in losses}
    if "perceptual_loss" in losses:
        values["perceptual_mix"] = perceptual_mix(losses["perceptual_loss"])
    if "discriminator_weight" in losses:
        values["adversarial_weight"] = losses["discriminator_weight"] * losses.get("discriminator_factor", 1.0)
    if lecam_decay is not None:
        values["lecam_decay"] = lecam_decay
    return dataclasses.replace(LossSection(), **values), set(values)


def recipe_results(file: str, release_config: str, lc: LossSection, keys: set[str]) -> list[Result]:
    """Every release recipe of ours that cites `release_config` must hold its loss settings."""
    out = []
    for name in recipes_citing(release_config):
        if not is_release(name):
            continue
        ours = load_recipe(name).loss
        diff = {k: (getattr(ours, k), getattr(lc, k)) for k in sorted(keys) if getattr(ours, k) != getattr(lc, k)}
        out.append(Result(file, f"recipe {name} loss settings", not diff,
                          f"differ (ours, release's): {diff}" if diff else f"= {release_config} ({len(keys)} keys)"))
    return out


def compare(file: str, name: str, got, want, rtol: float = LOSS_RTOL, atol: float = LOSS_ATOL) -> Result:
    """|got - want| <= atol + rtol * |want| everywhere; scalars and (1,)-shaped EMA buffers compare as equals."""
    g = got.detach().double().cpu().numpy() if torch.is_tensor(got) else np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    if g.size != w.size or (g.size > 1 and g.shape != w.shape):
        return Result(file, name, False, f"shape {g.shape} != recorded {w.shape}")
    g, w = g.reshape(w.shape), w
    err = np.abs(g - w)
    ok = bool(np.all(np.isfinite(g)) and np.all(err <= atol + rtol * np.abs(w)))
    what = f"{g.item():.9g} vs {w.item():.9g}" if w.size == 1 else f"max |err| {float(err.max()):.3g}"
    return Result(file, name, ok, f"{what} (tol {rtol:g} rel + {atol:g} abs)")


def exact(file: str, name: str, got, want) -> Result:
    g = got.cpu().numpy() if torch.is_tensor(got) else np.asarray(got)
    w = np.asarray(want)
    ok = g.shape == w.shape and bool(np.array_equal(g, w))
    return Result(file, name, ok, "equal" if ok else f"{int((g != w).sum()) if g.shape == w.shape else g.shape} "
                                                      f"differ from recorded {w.shape}")


class FixedLogits(torch.nn.Module):
    """A stand-in discriminator returning recorded logits: `fake` in generator mode; in the discriminator step
    (one pass over real and fake, concatenated) the real ones then the fake ones."""

    def __init__(self, fake: torch.Tensor, real: torch.Tensor | None = None):
        super().__init__()
        self.fake, self.real = fake, real

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fake.clone() if self.real is None else torch.cat([self.real, self.fake])


class FixedPerceptual(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.value, dtype=torch.float32)
