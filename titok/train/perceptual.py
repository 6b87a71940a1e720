"""The release's perceptual loss: ConvNeXt-S logits and LPIPS, mixed, each network loaded from a file by path.

bytedance/1d-tokenizer modeling/modules/perceptual_loss.py: TiTok's stage 2 uses "convnext_s" (the MSE between the
ImageNet logits of torchvision's ConvNeXt-S for the two images, resized to 224 with antialiased bilinear and
normalised by the ImageNet mean/std); the single-stage recipes use "lpips-convnext_s-1.0-0.1", the weighted mean
(1.0 * LPIPS + 0.1 * ConvNeXt) / 1.1. Both networks are frozen and run in float32 with autocast off, as there.

Weights files (nothing is downloaded; give the paths):
  ConvNeXt-S   torchvision's convnext_small-0c510722.pth (ConvNeXt_Small_Weights.IMAGENET1K_V1; keys features.*,
               classifier.*), sha256 0c510722adfd92966a2bd72b92f785ca05966bbac03cafe2f7a90b1f54bfab9a.
  LPIPS        two files: the VGG16 backbone, torchvision's vgg16-397923af.pth (keys features.*), and the linear
               heads, the `lpips` package's lpips/weights/v0.1/vgg.pth (keys lin0..lin4.model.1.weight; the
               release's vgg_lpips.pth from taming-transformers holds the same keys). A state dict of the release's
               LPIPS module (`net.sliceK.N.*`, `linI.model.1.weight`) serves as both files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from titok.errors import MissingFileError
from titok.fetch import sha256_of
from titok.quantizer import full_precision
from titok.weights import WeightsError, read_weights

log = logging.getLogger(__name__)
# sha256 of the canonical files (torchvision's file names carry the first 8 hex digits).
CANONICAL_SHA256_PREFIX = {"convnext": "0c510722", "vgg16": "397923af"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LPIPS_SHIFT, LPIPS_SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)  # LPIPS' input scaling, images in [-1, 1]
# VGG16 "D" conv widths, "M" = max-pool; LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# ConvNeXt-S (torchvision convnext_small): widths and blocks per stage.
CONVNEXT_S_WIDTHS, CONVNEXT_S_DEPTHS = (96, 192, 384, 768), (3, 3, 27, 3)


def _read(path: str | Path, key: str, what: str) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"{key}: {what} not found: {path} (nothing is downloaded; see titok/train/perceptual.py "
                               f"or the README's Training section for where to get it)")
    sd, _ = read_weights(path)
    return sd


def _warn_unless_canonical(path: str | Path, which: str) -> None:
    """A file other than torchvision's (a stand-in, a fine-tuned net) loads, but the loss is not the release's."""
    digest = sha256_of(Path(path).expanduser())
    want = CANONICAL_SHA256_PREFIX[which]
    if not digest.startswith(want):
        log.warning("%s is not torchvision's %s weights (sha256 %s..., expected %s...): the perceptual loss will "
                    "differ from the release's", path, which, digest[:8], want)


def _load_exact(net: nn.Module, sd: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    missing = sorted(set(net.state_dict()) - set(sd))
    if missing:
        raise WeightsError(f"{path} is not {what}: lacks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    net.load_state_dict({k: sd[k] for k in net.state_dict()})


def _features(net, x: torch.Tensor, y: torch.Tensor):
    """net(x), net(y); y (the real image) without a graph when it needs no gradient: the frozen network's
    activations for it are not kept and no backward runs through them (half the memory and backward work of one
    concatenated pass)."""
    with torch.set_grad_enabled(torch.is_grad_enabled() and y.requires_grad):
        fy = net(y)
    return net(x), fy


# ------------------------------------------------------------------------------------------- ConvNeXt-S
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class _ChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class _ChannelsFirst(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, MLP x4 with GELU, per-channel scale, residual (stochastic depth is off)."""

    def __init__(self, dim: int):
        super().__init__()
        # Indices match torchvision's CNBlock.block so its checkpoint keys load as they are.
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), _ChannelsLast(),
                                   nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
                                   nn.Linear(4 * dim, dim), _ChannelsFirst())
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * self.block(x)


class ConvNeXtSmall(nn.Module):
    """torchvision's convnext_small layout: (B, 3, H, W) ImageNet-normalised -> (B, 1000) logits."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        w, d = CONVNEXT_S_WIDTHS, CONVNEXT_S_DEPTHS
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, w[0], 4, stride=4), LayerNorm2d(w[0], eps=1e-6))]
        for i in range(4):
            layers.append(nn.Sequential(*(ConvNeXtBlock(w[i]) for _ in range(d[i]))))
            if i < 3:
                layers.append(nn.Sequential(LayerNorm2d(w[i], eps=1e-6), nn.Conv2d(w[i], w[i + 1], 2, stride=2)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(LayerNorm2d(w[-1], eps=1e-6), nn.Flatten(1), nn.Linear(w[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1))

    @classmethod
    def from_file(cls, path: str | Path, key: str = "loss.convnext_weights") -> ConvNeXtSmall:
        net = cls()
        _load_exact(net, _read(path, key, "ConvNeXt-S weights (torchvision convnext_small-0c510722.pth)"), path,
                    "a torchvision ConvNeXt-S state dict")
        _warn_unless_canonical(path, "convnext")
        return net.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------- LPIPS
class VGG16Features(nn.Module):
    """torchvision's vgg16().features (same indices, so its `features.*` keys load), returning LPIPS' five taps."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG16_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.taps = {i - 1 for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)} | {len(layers) - 1}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


def _torchvision_vgg_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The VGG16 layers of `sd` under torchvision's `features.N.*` names. Also reads the release's LPIPS module
    (modeling/modules/lpips.py, e.g. a state dict saved from its loss module): its `net.sliceK.N.*` are torchvision's
    vgg16().features[N] put into five slices by index, so N is torchvision's index as it is."""
    out = {k: v for k, v in sd.items() if k.startswith("features.")}
    for k, v in sd.items():
        parts = k.split(".")
        if len(parts) == 4 and parts[0] == "net" and parts[1].startswith("slice"):
            out[f"features.{parts[2]}.{parts[3]}"] = v
    return out


class LPIPS(nn.Module):
    """Learned perceptual distance (Zhang et al. 2018), VGG16 variant: images (B, 3, H, W) in [0, 1] -> (B,)."""

    def __init__(self):
        super().__init__()
        self.vgg = VGG16Features()
        # 1x1 convs without bias weighting each channel's squared difference (the lpips package's `lin*.model.1`).
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in LPIPS_CHANNELS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_files(cls, vgg_path: str | Path, heads_path: str | Path) -> LPIPS:
        net = cls()
        vgg = _read(vgg_path, "loss.lpips_vgg_weights", "VGG16 weights (torchvision vgg16-397923af.pth)")
        _load_exact(net.vgg, _torchvision_vgg_keys(vgg), vgg_path, "a torchvision VGG16 state dict")
        _warn_unless_canonical(vgg_path, "vgg16")
        heads = _read(heads_path, "loss.lpips_heads_weights", "LPIPS linear heads (the lpips package's vgg.pth)")
        # Accept both layouts of the heads: with the dropout at index 0 (model.1) or without it (model.0).
        renamed = {}
        for i in range(len(LPIPS_CHANNELS)):
            for src in (f"lin{i}.model.1.weight", f"lin{i}.model.0.weight"):
                if src in heads:
                    renamed[f"{i}.weight"] = heads[src]
                    break
        _load_exact(net.lins, renamed, heads_path, "an LPIPS VGG heads file (lin0..lin4.model.1.weight)")
        return net.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = _features(lambda t: self.vgg((t * 2 - 1 - self.shift) / self.scale), x, y)
        total = x.new_zeros(x.shape[0])
        for a, b, lin in zip(fx, fy, self.lins, strict=True):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # unit norm over channels
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b).pow(2)).mean((1, 2, 3))
        return total


# ------------------------------------------------------------------------------------------- the mix
class PerceptualLoss(nn.Module):
    """(w_lpips * LPIPS + w_convnext * ConvNeXt-S MSE) / (w_lpips + w_convnext); a network with weight 0 is not built.

    Images (B, 3, H, W) in [0, 1] -> a scalar, computed in float32 whatever the autocast.
    """

    def __init__(self, lpips: LPIPS | None, convnext: ConvNeXtSmall | None, lpips_weight: float,
                 convnext_weight: float):
        super().__init__()
        self.lpips, self.convnext = lpips, convnext
        self.lpips_weight, self.convnext_weight = lpips_weight, convnext_weight
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    def convnext_distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        def logits(t: torch.Tensor) -> torch.Tensor:  # (B, 1000)
            t = F.interpolate(t, size=224, mode="bilinear", align_corners=False, antialias=True)
            return self.convnext((t - self.mean) / self.std)

        return F.mse_loss(*_features(logits, x, y))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with full_precision(x):
            x, y = x.float(), y.float()
            total = x.new_zeros(())
            if self.lpips is not None:
                total = total + self.lpips_weight * self.lpips(x, y).mean()
            if self.convnext is not None:
                total = total + self.convnext_weight * self.convnext_distance(x, y)
            return total / (self.lpips_weight * (self.lpips is not None)
                            + self.convnext_weight * (self.convnext is not None))
