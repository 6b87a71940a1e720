"""`titok-train pretokenize`: write the token cache a generator trains from, sharded over torchrun's processes.

    titok-train pretokenize --tokenizer-weights runs/l32-s2/ema.safetensors --source /data/imagenet/train \
                            --out runs/l32-tokens.safetensors
    torchrun --nproc_per_node 8 -m titok.train.cli pretokenize ...   # 8 ranks, one chunk each in turn; rerun resumes

The tokenizer is the preset its self-describing weights name (or --tokenizer). Bad input is one line, exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from titok.data.prepare import adm_center_crop_arr
from titok.errors import InputError, MissingFileError
from titok.registry import create
from titok.train import distributed as dist_utils
from titok.train.data import open_source
from titok.train.pretokenize import AUGMENTS, load_size, pretokenize
from titok.train.sources import list_source


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="titok-train pretokenize", description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", default=None, help="tokenizer preset (default: the one its weights file names)")
    p.add_argument("--tokenizer-weights", default=None, help="the trained tokenizer (model or ema .safetensors)")
    p.add_argument("--source", required=True, help="image folder (ImageNet train/), tar shards, or builtin:NAME")
    p.add_argument("--out", required=True, help="the token cache to write (.safetensors)")
    p.add_argument("--augment", choices=sorted(AUGMENTS), default="flip",
                   help="flip: image and mirror (the release's default); ten-crop: its --ten_crop; none")
    p.add_argument("--limit", type=int, default=0, help="the first N images only (0 = all; built-in sets: 64)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--chunk", type=int, default=4096, help="images per part file (the unit of sharding and resume)")
    p.add_argument("--seed", type=int, default=0, help="built-in sets: which images are drawn")
    p.add_argument("--device", default="auto")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error instead of skipped")
    return p


def run(args) -> Path:
    if not args.tokenizer and not args.tokenizer_weights:
        raise InputError("pretokenize needs --tokenizer-weights (a trained tokenizer) or --tokenizer")
    if args.tokenizer_weights and not Path(args.tokenizer_weights).expanduser().exists():
        raise MissingFileError(f"--tokenizer-weights: not found: {args.tokenizer_weights}")
    ctx = dist_utils.setup(args.device)
    try:
        tokenizer = create("tokenizer", args.tokenizer, args.tokenizer_weights).to(ctx.device)
        size = load_size(tokenizer.image_size, args.augment)
        listing = None
        if not args.source.startswith("builtin:"):  # one rank lists the folder or shards, all read from it
            listing = dist_utils.broadcast_object(ctx, list_source(args.source) if ctx.is_main else None)
            listing = listing.head(args.limit)
        data = open_source(args.source, size, args.seed, args.strict, listing, prepare=adm_center_crop_arr,
                           builtin_count=args.limit or 64)
        return pretokenize(tokenizer, data, args.out, ctx, args.augment, args.batch_size, args.chunk, args.strict)
    finally:
        dist_utils.teardown(ctx)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = run(args)
    except InputError as exc:  # only bad input: a bug of ours keeps its traceback
        print(f"titok-train pretokenize: {exc}", file=sys.stderr)
        return 2
    logging.getLogger(__name__).info("token cache: %s", out)
    return 0
