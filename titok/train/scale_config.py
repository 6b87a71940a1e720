"""Config sections for running training at scale: which checkpoints stay on disk, and how a run is watched.

Kept apart from config.py (the loss/optimiser/schedule sections) so that the two evolve independently; both
join `TrainConfig` as sections and take `--section.key=value` overrides like every other setting.
"""

from __future__ import annotations

from dataclasses import dataclass

from titok.configs import ConfigMixin
from titok.errors import ConfigError


@dataclass(frozen=True)
class CheckpointSection(ConfigMixin):
    keep_last: int = 2  # the newest K checkpoints stay (RUN/checkpoint.pt and K-1 older ones in RUN/checkpoints/)
    keep_every: int = 0  # also keep every checkpoint whose step is a multiple of this (0 = none), for later study

    def __post_init__(self) -> None:
        if self.keep_last < 1 or self.keep_every < 0:
            raise ConfigError(f"ckpt.keep_last must be >= 1 and ckpt.keep_every >= 0, got {self.keep_last}, "
                              f"{self.keep_every}")


@dataclass(frozen=True)
class WatchSection(ConfigMixin):
    eval_every: int = 0  # evaluate on the held-out images every N steps (0 = never)
    holdout: int = 0  # images held out of training for that evaluation (the data set's last ones)
    tensorboard: bool = True  # write RUN/tensorboard/ event files when the `tensorboard` package is installed
    raw_grid_until: int = 10000  # grids also show the raw model up to this step (the EMA lags early on)
    rfid: bool = False  # tokenizers: also rFID on the held-out images, through the harness's plug-in (metrics stack)
    inception_weights: str = ""  # for that rFID; "" = the harness's seeded stand-in (reported as standin_rfid)

    def __post_init__(self) -> None:
        if min(self.eval_every, self.holdout, self.raw_grid_until) < 0:
            raise ConfigError("watch.eval_every, watch.holdout and watch.raw_grid_until must be >= 0")
        if self.eval_every and not self.holdout:
            raise ConfigError("watch.eval_every needs watch.holdout > 0 images to evaluate on")
        if self.rfid and not self.eval_every:
            raise ConfigError("watch.rfid needs watch.eval_every > 0 (and watch.holdout)")
