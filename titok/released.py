"""Where each released checkpoint is published: the table behind `weights="released"`.

Keyed by (kind, preset name), so presets registered elsewhere (the baselines) get a source without this
module importing them: the names are data here. Sources, as the releases publish them:
  * TiTok (bytedance/1d-tokenizer README, "Model Zoo"): one hub repository per model,
    `yucornetto/{tokenizer,generator}_titok_<variant>_imagenet`, loaded there with `from_pretrained`
    (huggingface_hub's PyTorchModelHubMixin, which writes `model.safetensors`, or `pytorch_model.bin` in older
    versions: both names are tried, in that order).
  * The MaskGIT-VQGAN converted by the TiTok authors: `maskgit-vqgan-imagenet-f16-256.bin` in the hub repository
    `fun-research/TiTok` (same README, "Training Preparation"); MaskGIT-512 uses the same weights.
  * MaskGIT in PyTorch (hmorimitsu/maskgit-torch, `download_weights.py`): GitHub release assets under the tag
    `weights`.
  * taming-transformers' VQGANs are published behind a file-sharing page, not a stable URL: no source; pass
    the downloaded `last.ckpt` by path.
No sha256 is published for any of these checkpoints, so none is checked; records still name each file by its
own sha256 prefix (`weights_tag`). Hub files are fetched from the `main` revision.
"""

from __future__ import annotations

from pathlib import Path

from titok.errors import ConfigError
from titok.fetch import HubFile, Source, UrlFile, fetch

RELEASED = "released"  # the `weights` value that asks for the published checkpoint
_MIXIN_FILES = ("model.safetensors", "pytorch_model.bin")
_MASKGIT_TORCH = "https://github.com/hmorimitsu/maskgit-torch/releases/download/weights/"
_MASKGIT_VQGAN = HubFile("fun-research/TiTok", ("maskgit-vqgan-imagenet-f16-256.bin",))

SOURCES: dict[tuple[str, str], Source] = {
    **{("tokenizer", f"titok_{v}"): HubFile(f"yucornetto/tokenizer_titok_{v}_imagenet", _MIXIN_FILES)
       for v in ("l32", "b64", "s128", "bl64_vq8k", "bl128_vq8k", "sl256_vq8k", "ll32_vae_c16", "bl64_vae_c16",
                 "bl128_vae_c16")},
    **{("generator", f"titok_{v}"): HubFile(f"yucornetto/generator_titok_{v}_imagenet", _MIXIN_FILES)
       for v in ("l32", "b64", "s128")},
    ("tokenizer", "maskgit_vqgan_f16_1024"): _MASKGIT_VQGAN,
    ("tokenizer", "maskgit_vqgan_f16_1024_512"): _MASKGIT_VQGAN,
    ("tokenizer", "maskgit_torch_vqgan_256"): UrlFile(_MASKGIT_TORCH + "tokenizer_imagenet256.ckpt"),
    ("tokenizer", "maskgit_torch_vqgan_512"): UrlFile(_MASKGIT_TORCH + "tokenizer_imagenet512.ckpt"),
    ("generator", "maskgit_256"): UrlFile(_MASKGIT_TORCH + "maskgit_imagenet256.ckpt"),
    ("generator", "maskgit_512"): UrlFile(_MASKGIT_TORCH + "maskgit_imagenet512.ckpt"),
}


def released_source(kind: str, preset: str) -> Source:
    """The published checkpoint of a preset; a preset without one is an error listing those that have one."""
    source = SOURCES.get((kind, preset))
    if source is None:
        known = ", ".join(sorted(name for k, name in SOURCES if k == kind))
        raise ConfigError(f"{kind} preset {preset!r} has no published checkpoint to fetch; pass the path of its "
                          f"weights instead. Presets with one: {known}")
    return source


def fetch_released(kind: str, preset: str, offline: bool | None = None) -> Path:
    """The local path of a preset's published checkpoint: cached, or fetched now (never when offline)."""
    return fetch(released_source(kind, preset), offline=offline)
