"""Atomic PNG files: a killed process leaves a whole file or none, and a cut-short file is recognisable.

Every writer goes through a uniquely named temporary file in the same folder and an `os.replace`, so a reader
never sees half an image. Temporary names start with "." and end in `.tmp`, so no `*.png` glob or image
reader takes them for a sample.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import torch
from PIL import Image

TMP_SUFFIX = ".tmp"
PNG_END = b"IEND\xaeB`\x82"  # the last 8 bytes of every complete PNG (IEND chunk type and CRC)


def tmp_name(path: Path) -> Path:
    """A temporary name beside `path`, unique per process and call (threads share a pid)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}")


def write_png_atomic(path: Path, image: torch.Tensor) -> None:
    """uint8 (3, H, W) -> `path` as PNG, atomically."""
    tmp = tmp_name(path)
    try:
        Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_complete_png(path: Path) -> bool:
    """The file exists and ends with PNG's IEND chunk (cheap: reads 8 bytes, not the image)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < 8 + len(PNG_END):
                return False
            f.seek(-len(PNG_END), os.SEEK_END)
            return f.read() == PNG_END
    except OSError:
        return False
