"""Training losses: pixel reconstruction, an LPIPS-style perceptual distance, the PatchGAN hinge losses, and the
masked-token objective of the MaskGIT-style generator (arccos schedule, class dropout).

Perceptual: the distance LPIPS computes without its learned per-channel weights ("LPIPS-style, unweighted"):
unit-normalise VGG16 features at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 over channels, average the
squared differences over space, sum over layers. The VGG16 weights come by path (torchvision's
`vgg16-397923af.pth` holds the `features.*` keys this network uses); nothing is downloaded.
Every random draw here comes from per-sample seeds, so a sample's loss does not depend on its batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from titok.errors import MissingFileError
from titok.weights import WeightsError, read_weights

# VGG16 "D" configuration: conv widths, "M" = max-pool. Taps are the ReLUs before each pool.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Mean L1 or L2 pixel error of (B, 3, H, W) images."""
    recon, target = recon.float(), target.float()
    return F.l1_loss(recon, target) if kind == "l1" else F.mse_loss(recon, target)


class VGGPerceptual(nn.Module):
    """LPIPS-style perceptual distance on frozen VGG16 features; images (B, 3, H, W) in [0, 1]."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG16_LAYOUT:  # indices match torchvision's vgg16().features, so its keys load as they are
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.taps = {i - 1 for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)} | {len(layers) - 1}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path) -> VGGPerceptual:
        path = Path(path).expanduser()
        if not path.is_file():
            raise MissingFileError(
                f"perceptual-loss weights not found: {path}. Give a VGG16 state dict with torchvision's "
                f"`features.*` keys (e.g. vgg16-397923af.pth from the torchvision release) as "
                f"loss.perceptual_weights=PATH, or leave it empty to train without the perceptual loss.")
        sd, _ = read_weights(path)
        net = cls()
        features = {k: v for k, v in sd.items() if k.startswith("features.")}
        missing = sorted(set(net.state_dict()) - set(features))
        if missing:
            raise WeightsError(f"{path} lacks VGG16 feature weights: {', '.join(missing[:6])}"
                             f"{' ...' if len(missing) > 6 else ''}")
        net.load_state_dict(features)
        return net.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y (B, 3, H, W) in [0, 1] -> mean distance (scalar)."""
        b = x.shape[0]
        h = (torch.cat([x, y]).float() - self.mean) / self.std  # (2B, 3, H, W): one pass for both
        total = h.new_zeros(())
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                f = h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # unit norm over channels
                total = total + (f[:b] - f[b:]).pow(2).sum(1).mean()
        return total


class PatchDiscriminator(nn.Module):
    """A small PatchGAN (pix2pix style): strided 4x4 convs -> a map of real/fake logits (B, 1, h, w).

    GroupNorm instead of BatchNorm, so a sample's logits do not depend on the rest of its batch.
    """

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers):
            c_next = channels * min(2**i, 8)
            mods += [nn.Conv2d(c, c_next, 4, 2, 1, bias=False), nn.GroupNorm(min(32, c_next // 4), c_next),
                     nn.LeakyReLU(0.2)]
            c = c_next
        mods += [nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.GroupNorm(min(32, c // 4), c), nn.LeakyReLU(0.2),
                 nn.Conv2d(c, 1, 3, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1] -> (B, 1, h, w)
        return self.net(images * 2 - 1)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean())


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.float().mean()


def arccos_masks(seeds: torch.Tensor, num_tokens: int, label_dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample training masks of the generator, from each sample's seed (CPU).

    u ~ U(0, 1), mask ratio arccos(u) / (pi / 2), round(N * ratio) (at least 1) positions masked, chosen
    uniformly; a row's class is dropped with probability `label_dropout`. -> (masks (B, N) bool, drop (B,) bool).
    """
    masks, drop = [], []
    for s in seeds.tolist():
        g = torch.Generator().manual_seed(int(s))
        u = torch.rand((), generator=g).item()
        ratio = min(max(math.acos(u) / (math.pi / 2), 1e-6), 1.0)
        count = max(1, round(num_tokens * ratio))
        rank = torch.rand(num_tokens, generator=g).argsort().argsort()  # a random rank per position
        masks.append(rank < count)
        drop.append(torch.rand((), generator=g).item() < label_dropout)
    return torch.stack(masks), torch.tensor(drop)


def masked_token_loss(logits: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on masked positions, averaged per sample then over the batch.

    logits (B, N, K), targets (B, N) long, masks (B, N) bool. Averaging per sample (instead of over all masked
    positions of the batch, as the release does) keeps the loss independent of how a batch is split over ranks.
    """
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, N)
    m = masks.float()
    return ((ce * m).sum(1) / m.sum(1).clamp(min=1)).mean()


def per_sample_normal(seeds: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise (B, *shape), row i drawn from seeds[i] (CPU)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds.tolist()])
