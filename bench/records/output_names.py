"""Output names that keep the input's names, so each reconstruction can be found beside its original.

`titok-bench reconstruct --input photos/` writes `photos/cat.jpg` as `recon/cat.png` and ImageNet's
`val/n01440764/ILSVRC2012_val_00000293.JPEG` as `recon/n01440764/ILSVRC2012_val_00000293.png` (PNG, because a
lossy format would add its own error to the reconstruction's). Built-in sets have no file names: their images are
numbered `000000.png`, `000001.png`, ... in the set's order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path


def png_names(root: Path, files: list[Path]) -> list[Path]:
    """Relative output paths for `files` under `root`: the same folders and stem, suffix `.png`.

    Two inputs that would meet ('a.jpg' and 'a.png' in one folder) both keep their own suffix before the new one
    ('a.jpg.png', 'a.png.png'), so no output overwrites another.
    """
    relative = [Path(f).relative_to(root) for f in files]
    plain = [r.with_suffix(".png") for r in relative]
    taken = Counter(plain)
    return [p if taken[p] == 1 else r.with_name(r.name + ".png") for r, p in zip(relative, plain, strict=True)]


def names_in_reading_order(data) -> Iterator[Path]:
    """The output name of each image `iter_image_batches(data, ...)` yields, in order.

    Unreadable files are dropped from the batches (and listed in `data.skipped` before the batch that would have
    held them is yielded), so the k-th image read is the k-th file not skipped; ask for each name after its image
    arrived. Images prepared to one size keep the folder's order (only a folder read at its stored sizes is
    regrouped by size). Sets without files are numbered.
    """
    files = getattr(data, "files", None)
    if files is None:
        for i in range(len(data)):
            yield Path(f"{i:06d}.png")
        return
    skipped: set[str] = set()
    for path, name in zip(files, png_names(data.root, files), strict=True):
        if len(skipped) != len(data.skipped):  # grows while the folder is read
            skipped = {str(s) for s in data.skipped}
        if str(path) not in skipped:
            yield name
