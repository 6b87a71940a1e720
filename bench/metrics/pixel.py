"""Per-image pixel metrics of reconstructions: PSNR and SSIM between uint8 image batches.

Their own module, below both the image-set metrics and the streaming accumulators (`RunningPixelMetrics`), which
both use them.
"""

from __future__ import annotations

import numpy as np
import torch


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB between uint8 image batches (B,3,H,W); inf for identical images."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(255.0**2 / mse)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of PSNR in dB between uint8 image batches (B,3,H,W); inf for identical images."""
    return float(psnr_per_image(a, b).mean())


def ssim_per_image(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """SSIM of each image pair (scikit-image, Gaussian window as in Wang et al. 2004), uint8 (B,3,H,W)."""
    from skimage.metrics import structural_similarity

    return [structural_similarity(x.permute(1, 2, 0).numpy(), y.permute(1, 2, 0).numpy(), channel_axis=2,
                                  data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            for x, y in zip(a, b, strict=True)]


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of SSIM for uint8 (B,3,H,W)."""
    return float(np.mean(ssim_per_image(a, b)))
