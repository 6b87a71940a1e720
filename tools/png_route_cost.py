"""What scoring generated samples through PNG files costs beyond scoring them in memory (docs/measurements.md,
"gFID in memory"): PNG encode + write on the sampling side, read + decode on the scoring side, and disk.

    python tools/png_route_cost.py [--num 500] [--out /tmp/png-route]

Part 1, the tiny presets (titok_tiny_bert decoded by titok_tiny_2stage, 32x32, random weights): sampling in memory
(`sample_batch`) against sampling to PNGs (`generate_samples`), then reading the folder back the way
`compute_image_metrics` does (`iter_image_batches`, DataLoader workers), interleaved twice. Inception time is left
out: both routes run the same Inception batches. Part 2, photographs at the paper's sizes (the built-in skimage
set prepared to 256 and 512): PNG write and read per image and bytes per image. Numbers are per 1,000 samples.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from bench.metrics.distributed import rank_batches
from bench.run.tasks.common import load_model
from bench.run.tasks.gen import generate_samples, sample_batch
from titok.data.files import write_png_atomic
from titok.data.images import ImageFolder, builtin_images, iter_image_batches

BATCH = 50


def _read_all(folder: Path, count: int | None = None) -> float:
    images = ImageFolder(folder, strict=True)
    if count is not None:
        images.files = [folder / f"{i:06d}.png" for i in range(count)]
    start = time.perf_counter()
    for _ in iter_image_batches(images, BATCH, False, "read"):
        pass
    return time.perf_counter() - start


def _megabytes(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.png")) / 1e6


def tiny_presets(num: int, root: Path) -> None:
    gen, _ = load_model("generator", "titok_tiny_bert", {}, torch.device("cpu"))
    tok, _ = load_model("tokenizer", "titok_tiny_2stage", {}, torch.device("cpu"))
    per = 1000 / num
    for round_ in range(2):
        start = time.perf_counter()
        for batch in rank_batches(num, BATCH):
            sample_batch(gen, tok, batch, 0)
        in_memory = time.perf_counter() - start
        folder = root / f"tiny{round_}"
        start = time.perf_counter()
        generate_samples(gen, tok, folder, num, 0, BATCH)
        to_png = time.perf_counter() - start
        print(json.dumps({"part": "tiny 32x32", "round": round_, "sample_in_memory_s": in_memory * per,
                          "sample_to_png_s": to_png * per, "png_write_extra_s": (to_png - in_memory) * per,
                          "png_read_s": _read_all(folder, num) * per, "png_mb": _megabytes(folder) * per}),
              flush=True)


def photographs(root: Path, count: int = 20) -> None:
    for size in (256, 512):
        folder = root / f"photo{size}"
        folder.mkdir()
        images = builtin_images("skimage", size, count, seed=0)
        start = time.perf_counter()
        for i, image in enumerate(images):
            write_png_atomic(folder / f"{i:06d}.png", image)
        write = time.perf_counter() - start
        per = 1000 / count
        print(json.dumps({"part": f"photographs {size}x{size}", "png_write_s": write * per,
                          "png_read_s": _read_all(folder) * per, "png_mb": _megabytes(folder) * per}), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=int, default=500, help="tiny-preset samples per route and round")
    p.add_argument("--out", default="/tmp/png-route", help="scratch folder (emptied first)")
    args = p.parse_args(argv)
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    tiny_presets(args.num, root)
    photographs(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
