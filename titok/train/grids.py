"""Progress pictures of a training run: rows of images (originals, reconstructions, samples) as one PNG."""

from __future__ import annotations

from pathlib import Path

import torch

from titok.contract import to_uint8
from titok.data.files import write_png_atomic


def save_grid(rows: list[torch.Tensor], path: str | Path, pad: int = 2) -> Path:
    """rows: each (n, 3, H, W) in [0, 1] (same H, W) -> one PNG, a row per tensor, written atomically."""
    n = max(r.shape[0] for r in rows)
    h, w = rows[0].shape[-2:]
    canvas = torch.full((3, len(rows) * (h + pad) + pad, n * (w + pad) + pad), 255, dtype=torch.uint8)
    for i, row in enumerate(rows):
        images = to_uint8(row.detach().float().cpu())
        for j, img in enumerate(images):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, top : top + h, left : left + w] = img
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png_atomic(path, canvas)
    return path
