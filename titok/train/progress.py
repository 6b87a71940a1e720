"""Watching a training run: JSON-lines logs that hold each step once across resumes, progress lines with step rate
and ETA, and TensorBoard event files when the optional `tensorboard` package is installed.

Only rank 0 writes. A resumed run first cuts its logs back to the checkpoint's step, so the steps between that
checkpoint and the kill (which are about to be trained again) are not logged twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


def truncate_log(path: Path, step: int) -> int:
    """Drop the records of `path` (JSON lines with a "step") after `step`; returns how many went. Atomic."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    keep = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(keep) != len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)
    return len(lines) - len(keep)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


class StepRate:
    """Steps per second over the recent window and the ETA to the last step (the first window includes warm-up)."""

    def __init__(self, step: int, total: int):
        self.total, self.last_step, self.last_time = total, step, time.perf_counter()
        self.rate = 0.0

    def update(self, step: int) -> float:
        now = time.perf_counter()
        if step > self.last_step:
            self.rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        return self.rate

    def eta(self, step: int) -> str:
        return format_duration((self.total - step) / self.rate) if self.rate > 0 else "?"


class TensorBoard:
    """Scalars into out/tensorboard when `tensorboard` is installed; otherwise nothing, said once."""

    def __init__(self, out: Path, enabled: bool):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's module imports the tensorboard package, an optional extra
            log.info("tensorboard is not installed (pip install 'titok-bench[tensorboard]'): metrics.jsonl only")
            return
        self.writer = SummaryWriter(str(out / "tensorboard"))

    def scalars(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        if self.writer is not None:
            for k, v in values.items():
                if k != "step":
                    self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class RunLog:
    """metrics.jsonl and eval.jsonl of a run (rank 0), cut back to `start_step` when resuming, plus TensorBoard."""

    def __init__(self, out: Path, start_step: int, total: int, tensorboard: bool, is_main: bool):
        self.out, self.is_main, self.total = out, is_main, total
        self.rate = StepRate(start_step, total)
        self.tb = TensorBoard(out, tensorboard) if is_main else TensorBoard(out, False)
        if is_main:
            for name in ("metrics.jsonl", "eval.jsonl"):
                dropped = truncate_log(out / name, start_step)
                if dropped:
                    log.info("%s: dropped %d records after step %d (trained again now)", name, dropped, start_step)

    def write(self, name: str, record: dict) -> None:
        if self.is_main:
            with (self.out / name).open("a") as f:
                f.write(json.dumps(record) + "\n")

    def train_record(self, record: dict) -> None:
        step = record["step"]
        rate = self.rate.update(step)
        record["steps_per_sec"] = rate
        self.write("metrics.jsonl", record)
        self.tb.scalars(step, record)
        if self.is_main:
            log.info("step %d/%d  %.3g steps/s  ETA %s  %s", step, self.total, rate, self.rate.eta(step), "  ".join(
                f"{k} {v:.4g}" for k, v in record.items() if k not in ("step", "steps_per_sec")))

    def eval_record(self, record: dict) -> None:
        self.write("eval.jsonl", record)
        self.tb.scalars(record["step"], record, prefix="eval")
        if self.is_main:
            log.info("eval at step %d: %s", record["step"], "  ".join(
                f"{k} {v:.4g}" for k, v in record.items() if k != "step"))

    def close(self) -> None:
        self.tb.close()
