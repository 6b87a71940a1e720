"""Pretokenization: a tokenizer's codes of every training image, the cache the generator trains from.

As the release's scripts/pretokenization.py: each image prepared with ADM's center_crop_arr at S and encoded
with its horizontal mirror ("flip", the release's default), or at int(1.1 S) and cut into torchvision's ten
crops ("ten-crop", its --ten_crop, following LlamaGen), or alone ("none").

At ImageNet scale this is hours of GPU work, so it is its own command (`titok-train pretokenize`) and shards
over every process of a torchrun job: the images are cut into fixed chunks, chunk c is encoded by rank
c % world_size and written atomically as its own part file, and a restarted job skips the parts on disk. When
all parts exist, rank 0 joins them in chunk order into one safetensors file ({"tokens": (M, N), "labels": (M,)},
codes stored as int16 when the codebook allows). The result depends on the chunk size only, never on the number
of processes or on restarts. Rows of image i are rows views*i .. views*i + views - 1.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from titok.errors import ConfigError, DataError
from titok.train import distributed as dist_utils
from titok.train.data import fetch

log = logging.getLogger(__name__)
TOKENS_META = "titok_train.tokens"
AUGMENTS = {"flip": 2, "ten-crop": 10, "none": 1}  # views per image
TEN_CROP_SCALE = 1.1  # the release prepares int(1.1 S) before cutting ten S x S crops


def load_size(image_size: int, augment: str) -> int:
    """The side the images are prepared to (center_crop_arr) before the views are cut."""
    return int(image_size * TEN_CROP_SCALE) if augment == "ten-crop" else image_size


def views(x: torch.Tensor, size: int, augment: str) -> torch.Tensor:
    """(b, 3, L, L) -> (b, V, 3, S, S): the views of each image that get encoded, in the release's order."""
    if augment == "none":
        return x[:, None]
    if augment == "flip":
        return torch.stack([x, x.flip(-1)], dim=1)
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))  # torchvision's center crop
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (top, left)]

    def five(img: torch.Tensor) -> list[torch.Tensor]:
        return [img[..., t : t + size, l_ : l_ + size] for t, l_ in corners]

    return torch.stack(five(x) + five(x.flip(-1)), dim=1)  # torchvision TenCrop: five crops, then of the mirror


def parts_dir(path: Path) -> Path:
    return path.with_name(path.name + ".parts")


def part_path(path: Path, chunk: int) -> Path:
    return parts_dir(path) / f"part-{chunk:06d}.safetensors"


@torch.no_grad()
def encode_chunk(tokenizer, dataset, start: int, stop: int, augment: str, batch_size: int, strict: bool):
    """(tokens (M, N), labels (M,)) of images start..stop-1, every view of each."""
    tokens, labels = [], []
    for first in range(start, stop, batch_size):
        items = [fetch(dataset, i, strict) for i in range(first, min(first + batch_size, stop))]
        x = torch.stack([img for img, _ in items]).to(tokenizer.device).float() / 255.0  # (b, 3, L, L)
        v = views(x, tokenizer.image_size, augment)  # (b, V, 3, S, S)
        codes = tokenizer.encode(v.flatten(0, 1)).cpu()  # (b*V, N)
        tokens.append(codes)
        labels.append(torch.tensor([lab for _, lab in items]).repeat_interleave(v.shape[1]))
    return torch.cat(tokens), torch.cat(labels)


def _code_dtype(tokenizer) -> torch.dtype:
    return torch.int16 if tokenizer.codebook_size <= torch.iinfo(torch.int16).max else torch.int32


def pretokenize(tokenizer, dataset, path: str | Path, ctx: dist_utils.DistContext | None = None,
                augment: str = "flip", batch_size: int = 64, chunk: int = 4096, strict: bool = False) -> Path:
    """Encode `dataset` (uint8 images prepared to load_size(S, augment)) into the token cache at `path`.

    Every process of `ctx` calls this; each encodes its chunks, rank 0 joins them. Parts already on disk (an
    earlier, interrupted call) are kept, so calling it again resumes.
    """
    from safetensors.torch import load_file, save_file

    if augment not in AUGMENTS:
        raise ConfigError(f"pretokenize augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if not tokenizer.is_vq:
        raise ConfigError(f"{tokenizer.preset} is a VAE tokenizer; the masked-token generator needs discrete codes")
    if chunk < 1 or batch_size < 1:
        raise ConfigError("pretokenize chunk and batch size must be >= 1")
    ctx = ctx or dist_utils.DistContext(0, 1, 0, tokenizer.device)
    path = Path(path)
    tokenizer.eval()
    n = len(dataset)
    if n == 0:
        raise DataError("pretokenize: the data set is empty")
    chunks = range((n + chunk - 1) // chunk)
    mine = [c for c in chunks if c % ctx.world_size == ctx.rank and not part_path(path, c).is_file()]
    parts_dir(path).mkdir(parents=True, exist_ok=True)
    started, done = time.perf_counter(), 0
    for c in mine:
        start, stop = c * chunk, min((c + 1) * chunk, n)
        tokens, labels = encode_chunk(tokenizer, dataset, start, stop, augment, batch_size, strict)
        target = part_path(path, c)
        tmp = target.with_name(target.name + f".tmp{ctx.rank}")
        save_file({"tokens": tokens.to(_code_dtype(tokenizer)).contiguous(), "labels": labels.to(torch.int32)},
                  str(tmp))
        tmp.replace(target)  # a part is on disk whole or not at all: the restart redoes only missing ones
        done += stop - start
        rate = done / max(time.perf_counter() - started, 1e-9)
        log.info("rank %d: chunk %d (%d images) -> %s; %.1f images/s", ctx.rank, c, stop - start, target, rate)
    dist_utils.barrier(ctx)
    if ctx.is_main:
        parts = [load_file(str(part_path(path, c))) for c in chunks]
        meta = {TOKENS_META + ".tokenizer": tokenizer.preset, TOKENS_META + ".augment": augment,
                TOKENS_META + ".views": str(AUGMENTS[augment]), TOKENS_META + ".images": str(n),
                TOKENS_META + ".chunk": str(chunk)}
        tmp = path.with_name(path.name + ".tmp")
        save_file({"tokens": torch.cat([p["tokens"] for p in parts]).contiguous(),
                   "labels": torch.cat([p["labels"] for p in parts]).contiguous()}, str(tmp), metadata=meta)
        tmp.replace(path)
        for c in chunks:
            part_path(path, c).unlink()
        parts_dir(path).rmdir()
        log.info("pretokenized %d images x %d views (%s) with %s into %s", n, AUGMENTS[augment], augment,
                 tokenizer.preset, path)
    dist_utils.barrier(ctx)
    return path
