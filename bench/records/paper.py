"""Published numbers, each with its source, for the comparison rows of generated tables.

They are shown in their own rows marked as published; they are never mixed into measured records.
"""

from __future__ import annotations

from dataclasses import dataclass

TITOK_README = "TiTok release README (bytedance/1d-tokenizer), ImageNet 256x256"
TITOK_ABSTRACT = "TiTok paper (arXiv 2406.07550), ImageNet 512x512: abstract and 512 table"
TAMING_README = "taming-transformers README, ImageNet val, torch-fidelity"
MASKGIT_PAPER = ("MaskGIT paper (Chang et al. 2022), ImageNet class-conditional, the paper's own evaluation "
                 "(JAX weights; 8 steps at 256, 12 at 512)")
# A different protocol from the paper's: clean-fid, and generated samples against ImageNet val (not ADM's batch).
MASKGIT_TORCH_README = ("maskgit-torch README (hmorimitsu/maskgit-torch, PyTorch conversion of the JAX weights), "
                        "clean-fid against ImageNet val (50,000 images)")
# Numbered in this order under the published table.
SOURCES = [TITOK_README, TITOK_ABSTRACT, TAMING_README, MASKGIT_PAPER, MASKGIT_TORCH_README]


@dataclass(frozen=True)
class Published:
    model: str  # our preset name
    resolution: int
    metrics: dict
    source: str
    note: str = ""
    hardware: str = ""  # where a published throughput (metrics["images_per_sec"]) was measured
    display: str = ""  # a name for models that are not presets here (the table otherwise asks the registry)


PUBLISHED = [
    Published("titok_l32", 256, {"rfid": 2.21, "gfid": 2.77}, TITOK_README),
    Published("titok_b64", 256, {"rfid": 1.70, "gfid": 2.48}, TITOK_README),
    Published("titok_s128", 256, {"rfid": 1.71, "gfid": 1.97}, TITOK_README),
    Published("titok_bl64_vq8k", 256, {"rfid": 2.06}, TITOK_README),
    Published("titok_bl128_vq8k", 256, {"rfid": 1.49}, TITOK_README),
    Published("titok_sl256_vq8k", 256, {"rfid": 1.03}, TITOK_README),
    Published("titok_ll32_vae_c16", 256, {"rfid": 1.61}, TITOK_README),
    Published("titok_bl64_vae_c16", 256, {"rfid": 1.25}, TITOK_README),
    Published("titok_bl128_vae_c16", 256, {"rfid": 0.84}, TITOK_README),
    Published("titok_l64_512", 512, {"gfid": 2.74, "images_per_sec": 41.0}, TITOK_ABSTRACT,
              "abstract: 2.74 with 64x fewer tokens than DiT-XL/2 (3.04), 410x faster generation; "
              "41.0 samples/s from the paper's 512 table", hardware="A100"),
    Published("titok_b128_512", 512, {"gfid": 2.13}, TITOK_ABSTRACT,
              "abstract: best variant 2.13, 74x faster than DiT-XL/2; attributed to B-128 here"),
    # Not a preset here: the diffusion model the paper's figure compares with (no row in tables, a point in plots).
    Published("dit_xl_2_512", 512, {"gfid": 3.04, "images_per_sec": 0.1}, TITOK_ABSTRACT,
              "about 0.1 samples/s: TiTok-L-64's 41.0 over the abstract's 410x", hardware="A100", display="DiT-XL/2"),
    Published("taming_vqgan_f16_1024", 256, {"rfid": 7.94}, TAMING_README),
    Published("taming_vqgan_f16_16384", 256, {"rfid": 4.98}, TAMING_README),
    Published("maskgit_256", 256, {"gfid": 6.18, "isc_mean": 182.1}, MASKGIT_PAPER),
    Published("maskgit_512", 512, {"gfid": 7.32, "isc_mean": 156.0}, MASKGIT_PAPER),
    Published("maskgit_torch_vqgan_256", 256, {"rfid": 2.26}, MASKGIT_TORCH_README,
              "the 50,000 val images reconstructed (PIL bicubic shorter side to 256, center crop) against val"),
    Published("maskgit_torch_vqgan_512", 512, {"rfid": 1.24}, MASKGIT_TORCH_README,
              "the 50,000 val images reconstructed (PIL bicubic shorter side to 512, center crop) against val"),
    Published("maskgit_256", 256, {"gfid": 6.10}, MASKGIT_TORCH_README,
              "50 samples per class (50,000) against val; steps not stated (its generate_imagenet.py runs 16)"),
    Published("maskgit_512", 512, {"gfid": 7.04}, MASKGIT_TORCH_README,
              "50 samples per class (50,000) against val; steps not stated (its generate_imagenet.py runs 16)"),
]
