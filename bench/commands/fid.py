"""`titok-bench fid A B`: FID between two image folders, or a folder and a statistics .npz (incl. ADM's).

Images are read as they are (no resizing unless --image-size), exactly as torch-fidelity reads a folder, so the
number equals torch-fidelity's on the same folders and Inception weights. Prints the value; --json prints one
object with constant keys and the protocol. Bad input: one message on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

from bench.commands.argtypes import positive_int
from bench.commands.offline import INCEPTION_HELP, add_offline_flag, apply_offline
from bench.metrics.distributed import all_gather, current
from bench.metrics.image_sets import compute_image_metrics
from bench.metrics.inception import inspect_weights, resolve_inception_weights
from bench.metrics.statistics_file import check_protocol, load_reference_stats, read_protocol, run_protocol
from titok.data.images import ImageFolder
from titok.errors import DataError, InputError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("fid", help="FID between two image folders (or a folder and a statistics .npz)")
    p.add_argument("a", help="image folder (generated / reconstructed images)")
    p.add_argument("b", help="image folder (reference images) or a statistics .npz with mu and sigma")
    p.add_argument("--inception-weights", default=None, help=INCEPTION_HELP)
    add_offline_flag(p)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="resize+center-crop both sets to this size first")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error instead of skipped")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of the bare number")
    p.set_defaults(func=run)
    return p


def _source(path: str, args):
    if Path(path).suffix == ".npz":
        if not Path(path).is_file():
            raise DataError(f"statistics file not found: {path}")
        load_reference_stats(path)  # keys, shapes and values checked before any image is read
        return path
    return ImageFolder(path, image_size=args.image_size, strict=args.strict)


def _check_reference(folder: ImageFolder, stats: str, args) -> None:
    """A folder against a statistics file is only a distance between image sets if both were measured the same
    way: the same extractor (weights hash) and image size as the file records (ADM's batches included). Checked
    before any image is read; a file that records no protocol is used with a warning (bench.metrics.statistics_file)."""
    reference = read_protocol(stats)
    if not reference:
        return
    info = inspect_weights(resolve_inception_weights(args.inception_weights))
    size = args.image_size
    if size is None and folder.files:
        with Image.open(folder.files[0]) as img:  # the header only
            size = img.width if img.width == img.height else None  # a non-square set has no one size to check
    check_protocol(stats, reference, run_protocol(info, size))


def run(args: argparse.Namespace) -> int:
    """Under torchrun (titok-bench's main joined the group) every rank reads its batches of both sets
    (compute_image_metrics), every rank gets the result, and rank 0 alone prints it."""
    apply_offline(args)
    main_rank = current().is_main
    try:
        a = _source(args.a, args)
        if isinstance(a, str):
            raise DataError("the first argument must be an image folder; only the second may be statistics")
        b = _source(args.b, args)
        if isinstance(b, str):
            _check_reference(a, b, args)
        result = compute_image_metrics(a, b, inception_weights=args.inception_weights, metrics=("fid",),
                                       batch_size=args.batch_size, device=args.device,
                                       progress=not getattr(args, "quiet", False))
    except InputError as exc:  # only bad input: a bug of ours keeps its traceback (exit 1)
        if main_rank:  # under torchrun every rank has the same error; rank 0 says it
            print(f"titok-bench fid: error: {exc}", file=sys.stderr)
        return 2
    # Under torchrun each rank knows the files it read: the count is the sum (every rank returned here).
    skipped = sum(all_gather(len([*getattr(a, "skipped", []), *getattr(b, "skipped", [])])))
    if skipped and main_rank:
        print(f"titok-bench fid: skipped {skipped} unreadable images (use --strict to fail)", file=sys.stderr)
    key, value = next(iter(result.values.items()))
    if args.json:
        print(json.dumps({"metric": key, "value": value, "skipped": skipped, "protocol": result.protocol}))
    else:
        print(f"{key}: {value:.6f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="titok-bench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
