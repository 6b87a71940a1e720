"""argparse types for the CLI: a malformed value is argparse's usual one-line error (exit 2), not a traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

from titok.errors import InputError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit()) or not 0 <= int(k) < int(n):
        raise argparse.ArgumentTypeError(f"expected k/n with 0 <= k < n (e.g. 0/2), got {text!r}")
    return int(k), int(n)


def class_labels(text: str) -> list[int]:
    try:
        labels = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids (e.g. 1,7,282), got {text!r}") from None
    return labels


def output_folder(path: str | Path) -> Path:
    """Create an --out folder (and its parents); a path that is a file or can't be created is bad input."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as exc:
        raise InputError(f"--out {path}: cannot be used as an output folder ({exc.strerror})") from None
    return path
