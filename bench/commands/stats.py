"""`titok-bench stats`: reference statistics (mu, sigma, the protocol, optionally the features) of a real image set.

    titok-bench stats /data/imagenet/val --out val256.npz --image-size 256 --inception-weights PATH

The file records the extractor and its weights hash, the image size, the preparation (resize and crop), the
image count and the source; a run that compares against it under another protocol stops with an error naming
the field that differs (bench/metrics/statistics_file.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.commands.argtypes import positive_int
from bench.commands.offline import INCEPTION_HELP, add_offline_flag
from titok.data.prepare import DEFAULT_PREPARATION, preparation_names


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("stats", help="reference statistics (.npz) of an image folder, with their protocol")
    p.add_argument("images", help="image folder (e.g. ImageNet val/<wnid>/*.JPEG) or builtin:skimage / builtin:...")
    p.add_argument("--out", required=True, help="the .npz to write (mu, sigma, info; features with --features)")
    p.add_argument("--image-size", type=positive_int, default=256, help="prepare images to this size (default 256)")
    p.add_argument("--preparation", default=DEFAULT_PREPARATION,
                   help=f"how images are made S x S (default {DEFAULT_PREPARATION}); one of "
                        + ", ".join(preparation_names()))
    p.add_argument("--inception-weights", default=None, help=INCEPTION_HELP)
    add_offline_flag(p)
    p.add_argument("--features", action="store_true",
                   help="also store the pool features (8 KB per image) for precision/recall and KID")
    p.add_argument("--limit", type=positive_int, default=None, help="use the first N images (sorted order)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--workers", type=int, default=None, help="image decoding processes (default: cores - 1, max 8)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error instead of skipped")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from bench.run.tasks.stats import make_statistics

    protocol = make_statistics(args.images, args.out, args.image_size, inception_weights=args.inception_weights,
                               preparation=args.preparation, limit=args.limit, strict=args.strict,
                               batch_size=args.batch_size, device=args.device, features=args.features,
                               progress=not getattr(args, "quiet", False), num_workers=args.workers)
    dist_context = getattr(args, "dist_context", None)  # set by titok-bench's main under torchrun
    if protocol["skipped"] and (dist_context is None or dist_context.is_main):  # the total, said once
        print(f"titok-bench stats: skipped {protocol['skipped']} unreadable images (use --strict to fail)",
              file=sys.stderr)
    print(json.dumps({"out": args.out, **protocol}))
    return 0
