"""`titok-bench export-npz SAMPLES --out samples.npz`: a sample folder as the `.npz` OpenAI's ADM evaluator reads.

Why: the TiTok paper reports gFID and IS from guided-diffusion's `evaluations/evaluator.py`, which takes a
reference batch and a sample batch, both `.npz` files with uint8 images (N, H, W, 3) in `arr_0`. Exporting our
PNG folders lets anyone score them with that very program and compare with our own numbers.

Why shuffled: ADM's evaluator computes the Inception Score over consecutive chunks of 5,000 rows of `arr_0`.
Our sample i has class i % 1000, so in folder order every chunk holds 5 samples of each class, by construction,
not by chance; a random chunk would not, and IS depends on the class mix per chunk. So rows are written in a
seeded random order: row j holds PNG `np.random.default_rng(seed).permutation(N)[j]`.

File layout (what `np.savez(out, arr_0=..., arr_1=..., sample_index=...)` would write, same member names, same
`.npy` headers, format version 1.0, uncompressed members, so `np.load(out)["arr_0"]` reads it like any savez file):

- `arr_0.npy`: uint8 (N, H, W, 3), the images in the shuffled order;
- `arr_1.npy`: int64 (N,), the class label of each row, where the folder's `generation.json` tells them
  (guided-diffusion's own sample script writes labels as `arr_1` too); absent otherwise;
- `sample_index.npy`: int64 (N,), the permutation itself: row j is the PNG numbered `sample_index[j]`.

No `mu`/`sigma` members: ADM's evaluator takes statistics from a file that has them instead of computing them.
The images are streamed: each is decoded (by a few threads, PIL decodes without the GIL) and appended to the
member, so memory stays a few images whatever N is (50,000 samples at 512 px are 39 GB). The file is written
under a temporary name beside `--out`, synced, and renamed: a failure midway leaves no file under the final name.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import zipfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.commands.argtypes import positive_int
from bench.metrics.reference import IMAGES_KEY
from titok.data.files import is_complete_png, tmp_name
from titok.data.images import to_rgb
from titok.errors import DataError, InputError, MissingFileError
from titok.progress import Progress

LABELS_KEY = "arr_1"  # guided-diffusion's image_sample.py: np.savez(out_path, arr, label_arr)
ORDER_KEY = "sample_index"
_SAMPLE_NAME = re.compile(r"(\d{6,})\.png")  # bench.run.tasks.gen.sample_path: f"{i:06d}.png"
_MAX_WORKERS = 8
# SyntaxError: what PIL raises for a broken PNG chunk (a checksum), never a bug of ours at this point
_UNREADABLE = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


class Export(NamedTuple):
    """What `export_npz` wrote."""

    path: Path
    num: int
    height: int
    width: int
    order: np.ndarray  # row j of arr_0 is PNG order[j]
    labels: bool  # whether arr_1 was written
    note: str  # why there are no labels, or ""


def shuffled_order(num: int, seed: int) -> np.ndarray:
    """The documented row order: row j of `arr_0` is sample `np.random.default_rng(seed).permutation(num)[j]`."""
    return np.random.default_rng(seed).permutation(num).astype(np.int64)


def _sample_files(folder: Path, num: int | None) -> list[Path]:
    """PNGs 0..N-1 of a sample folder; N is `num`, or the number of samples there (which must then be 0..N-1)."""
    from bench.run.tasks.gen import sample_path

    if not folder.is_dir():
        raise MissingFileError(f"sample folder not found: {folder}")
    if num is None:
        found = set()
        with os.scandir(folder) as entries:
            for e in entries:
                m = _SAMPLE_NAME.fullmatch(e.name)
                if m and e.name == sample_path(folder, int(m.group(1))).name:
                    found.add(int(m.group(1)))
        if not found:
            raise DataError(f"{folder}: no samples (000000.png, 000001.png, ... as `titok-bench generate` writes)")
        num = max(found) + 1
    paths = [sample_path(folder, i) for i in range(num)]
    # A PNG without its last chunk is one a killed process or a full disk cut short: missing, not a sample.
    missing = [p.name for p in paths if not is_complete_png(p)]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(f"{folder}: {len(missing)} of samples 0..{num - 1} missing or cut short ({shown}); finish "
                        "the generation (`titok-bench generate` resumes) or export fewer with --num")
    return paths


def _image_size(paths: list[Path]) -> tuple[int, int]:
    """(H, W) shared by every PNG, from their headers (no decoding): mixed sizes fail before hours of writing."""
    size = None
    for p in paths:
        try:
            with Image.open(p) as img:
                this = img.size
        except _UNREADABLE as exc:
            raise DataError(f"unreadable PNG {p}: {exc}") from None
        if size is None:
            size, first = this, p
        elif this != size:
            raise DataError(f"mixed image sizes: {first.name} is {size[0]}x{size[1]}, {p.name} is "
                            f"{this[0]}x{this[1]}; ADM's evaluator needs one size (arr_0 is one array)")
    return size[1], size[0]


def _decode(path: Path, height: int, width: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(img)  # the harness reads folders the same way: any mode becomes 8-bit RGB
    except _UNREADABLE as exc:
        raise DataError(f"unreadable PNG {path}: {exc}") from None
    pixels = np.asarray(rgb, dtype=np.uint8)
    if pixels.shape != (height, width, 3):  # the file changed since its header was read
        raise DataError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]}, the other samples are {width}x{height}")
    return pixels


def _labels(folder: Path, order: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Class label of each row, from the folder's generation manifest: (labels, "") or (None, why not)."""
    from bench.run.tasks.gen import MANIFEST, read_manifest, sample_classes
    from titok.registry import get_spec

    try:
        manifest = read_manifest(folder)
    except DataError as exc:
        return None, str(exc)
    if manifest is None:
        return None, f"no {MANIFEST} in the folder"
    given = manifest.get("labels")
    if isinstance(given, list) and given and all(isinstance(c, int) for c in given):
        return sample_classes(order, given, 0), ""
    if given is not None:
        return None, f"{MANIFEST} has labels {given!r}, not a list of class ids"
    try:
        num_classes = getattr(get_spec("generator", str(manifest.get("generator"))).config, "num_classes", None)
    except InputError:  # a preset this installation does not know: its class count is unknown
        return None, f"unknown generator {manifest.get('generator')!r} in {MANIFEST}"
    if not isinstance(num_classes, int) or num_classes < 1:
        return None, f"generator {manifest.get('generator')!r} has no class count"
    return sample_classes(order, None, num_classes), ""


def _check_space(out: Path, needed: int) -> None:
    free = shutil.disk_usage(out.parent).free
    if free < needed:
        raise InputError(f"{out.parent}: {needed / 1e9:.2f} GB needed for {out.name}, {free / 1e9:.2f} GB free")


def _write_images(f, paths: list[Path], order: np.ndarray, height: int, width: int, workers: int,
                  progress: bool) -> None:
    """Decode PNGs order[0], order[1], ... and append their pixels to `f`, in order, a few images in flight."""
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: deque = deque()
    rows = iter(order.tolist())
    bar = Progress(len(order), "export-npz", "img", progress)
    try:
        for i in rows:  # fill the window: 2 images per thread keep every thread busy, memory stays bounded
            pending.append(pool.submit(_decode, paths[i], height, width))
            if len(pending) >= 2 * workers:
                break
        while pending:
            pixels = pending.popleft().result()  # a DataError from a thread is raised here
            nxt = next(rows, None)
            if nxt is not None:
                pending.append(pool.submit(_decode, paths[nxt], height, width))
            f.write(memoryview(np.ascontiguousarray(pixels)).cast("B"))
            bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def export_npz(samples, out, seed: int = 0, num: int | None = None, progress: bool = False,
               workers: int | None = None) -> Export:
    """Pack PNGs 0..N-1 of `samples` into `out` as described in the module docstring; returns what was written."""
    folder, out = Path(samples).expanduser(), Path(out).expanduser()
    paths = _sample_files(folder, num)
    n = len(paths)
    height, width = _image_size(paths)
    order = shuffled_order(n, seed)
    labels, note = _labels(folder, order)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as {out / 'samples.npz'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"can't create the folder of --out {out}: {exc.strerror or exc}") from None
    _check_space(out, n * height * width * 3 + 16 * n + (1 << 20))
    if workers is None:
        workers = max(1, min(_MAX_WORKERS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                             else os.cpu_count() or 1))
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (n, height, width, 3)}
    tmp = tmp_name(out)
    try:
        with open(tmp, "wb") as raw:
            # ZIP_STORED, zip64 members: exactly how np.savez writes (members may pass 4 GB, the archive too)
            with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                with zf.open(f"{IMAGES_KEY}.npy", "w", force_zip64=True) as f:
                    # Version 1.0, the header np.save writes for this array (byte for byte): ADM's evaluator
                    # streams 1.0 and 2.0 files and would load any other version whole.
                    np.lib.format.write_array_header_1_0(f, header)
                    _write_images(f, paths, order, height, width, workers, progress)
                if labels is not None:
                    with zf.open(f"{LABELS_KEY}.npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, labels.astype(np.int64), allow_pickle=False)
                with zf.open(f"{ORDER_KEY}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, order, allow_pickle=False)
            raw.flush()
            os.fsync(raw.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return Export(out, n, height, width, order, labels is not None, note)


def add_parser(sub) -> None:
    p = sub.add_parser("export-npz", help="pack a sample folder into an .npz for OpenAI's ADM evaluator "
                                          "(arr_0, rows in a seeded shuffled order)")
    p.add_argument("samples", help="sample folder of `titok-bench generate` (000000.png, 000001.png, ...)")
    p.add_argument("--out", required=True, help="the .npz to write (replaced atomically if it exists)")
    p.add_argument("--seed", type=int, default=0,
                   help="shuffle seed: row j is PNG np.random.default_rng(seed).permutation(N)[j] (default 0)")
    p.add_argument("--num", type=positive_int, default=None,
                   help="export samples 0..N-1 (default: all of them, which must be 0..N-1 without gaps)")
    p.add_argument("--workers", type=positive_int, default=None, help="PNG decoding threads (default: CPUs, max 8)")
    p.set_defaults(func=run)


def run(args) -> int:
    made = export_npz(args.samples, args.out, seed=args.seed, num=args.num, progress=not getattr(args, "quiet", False),
                      workers=args.workers)
    size = made.path.stat().st_size
    print(f"wrote {made.num} samples ({made.width}x{made.height}) to {made.path} ({size / 1e9:.2f} GB): arr_0 in "
          f"shuffled order (seed {args.seed}), sample_index (the PNG of each row)"
          + (", arr_1 (class labels)" if made.labels else ""))
    if made.note:
        print(f"titok-bench export-npz: no class labels written: {made.note}", file=sys.stderr)
    return 0
