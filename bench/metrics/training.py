"""The harness's rFID for titok-train's held-out evaluation, offered as a plug-in (entry-point group
`titok_bench.train_metrics`, name `rfid`) because the training package may not import the harness.

Each evaluation streams (original, reconstruction) uint8 batches of the held-out images through the same
Inception and FID code as `titok-bench run` (`bench.metrics.image_sets.InceptionMetrics`); with no Inception weights
given it uses the harness's seeded stand-in, and the value is then named `standin_rfid`, never rFID. On a few hundred
held-out images the number is biased high against a 50,000-image rFID: it tracks a run, it is not the paper's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench.metrics.image_sets import InceptionMetrics
from bench.metrics.inception import make_standin_inception_weights


class RFID:
    """Made once per run on rank 0; `new()` starts one evaluation's accumulator."""

    def __init__(self, inception_weights: str | None, device: torch.device, workdir: Path):
        if inception_weights:
            self.weights = inception_weights
        else:
            path = Path(workdir) / "standin-inception" / "standin-seed0.pth"
            self.weights = path if path.is_file() else make_standin_inception_weights(path, seed=0)
        self.device = device
        InceptionMetrics(("fid",), inception_weights=self.weights, device=device, local=True)  # a bad file fails now

    def new(self) -> _Accumulator:
        # local: rank 0's held-out images alone, though training runs in a process group
        return _Accumulator(InceptionMetrics(("fid",), inception_weights=self.weights, device=self.device, local=True))


class _Accumulator:
    def __init__(self, metrics: InceptionMetrics):
        self.metrics = metrics

    def add(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        """uint8 (B, 3, H, W) originals and their reconstructions."""
        self.metrics.add_real(real)
        self.metrics.add_fake(fake)

    def result(self) -> dict[str, float]:
        return {k.replace("fid", "rfid"): v for k, v in self.metrics.result().values.items()}
