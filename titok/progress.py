"""Progress of long work that reads well wherever stderr goes.

On a terminal: a live tqdm bar. Anywhere else (a log file, CI, tox, `2> run.log`): plain lines saying what runs,
how far it is, the time elapsed and the time left, because a bar written to a file is carriage returns that show
nothing until the block ends (a 20-minute generator block used to be silent). Progress goes to stderr only, so
records, tables and `--json` output on stdout stay clean.

Two grains, one class:
  * coarse work (suite runs, speed measurements): `Progress(..., every=True)` prints a line for every step, each
    naming the item just finished;
  * fine work (image batches, sampling steps): lines at most every `TITOK_PROGRESS_INTERVAL` seconds (default 30)
    and one at the end, so a 50,000-image pass writes a few dozen lines, not thousands.

Library code takes `progress: bool` (off by default: a library call prints nothing); the command lines pass
`not args.quiet`. Training (titok/train) may use the same class.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

from tqdm.auto import tqdm
from tqdm.std import tqdm as std_tqdm

T = TypeVar("T")
INTERVAL_ENV = "TITOK_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0


def line_interval() -> float:
    """Seconds between plain lines of a fine-grained block ($TITOK_PROGRESS_INTERVAL, default 30)."""
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S  # a malformed knob for log verbosity must not stop a benchmark


def _clock(seconds: float) -> str:
    return std_tqdm.format_interval(seconds)


def number(value: float) -> str:
    """A measured value for a progress line: three significant digits, without exponents for large values."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


class Progress:
    """How far one block of work is. Use as a context manager (or call `close`), and `update(n, item=...)`."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", enabled: bool = True, *,
                 every: bool = False, leave: bool = True, stream: TextIO | None = None):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = 0
        self._done_at_last_line = -1
        self.start = self._last_line = time.monotonic()
        self._closed = False
        is_terminal = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=self.stream, dynamic_ncols=True,
                        disable=not is_terminal)
        self.lines = enabled and not is_terminal
        self.interval = 0.0 if every else line_interval()

    # ------------------------------------------------------------------ reporting
    def update(self, n: int = 1, item: str | None = None) -> None:
        self.done += n
        self.bar.update(n)
        if item and not self.bar.disable:
            self.bar.set_postfix_str(item, refresh=False)
        if self.lines and (self.every or time.monotonic() - self._last_line >= self.interval):
            self._line(item)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.bar.close()
        # A fine-grained block says it finished if it printed anything or lasted an interval (a short one stays
        # quiet), unless its last line already showed the final count.
        if self.lines and not self.every and self._done_at_last_line != self.done and (
                self._last_line != self.start or time.monotonic() - self.start >= self.interval):
            self._line(None, final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ the plain line
    def status(self, item: str | None = None, final: bool = False) -> str:
        """'<desc>: 12/50 batch (24%) [item], elapsed 0:31, ETA 1:38' -- what, how far, elapsed, time left."""
        elapsed = time.monotonic() - self.start
        if self.total:
            where = f"{self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            where = f"{self.done} {self.unit}"
        parts = [f"{self.desc}: {where}" + (f" {item}" if item else ""), f"elapsed {_clock(elapsed)}"]
        if final or (self.total and self.done >= self.total):
            parts.append("done")
        elif self.total and self.done:
            parts.append(f"ETA {_clock(elapsed / self.done * (self.total - self.done))}")
        return ", ".join(parts)

    def _line(self, item: str | None, final: bool = False) -> None:
        self._last_line, self._done_at_last_line = time.monotonic(), self.done
        print(self.status(item, final), file=self.stream, flush=True)


def track(iterable: Iterable[T], desc: str, enabled: bool, *, total: int | None = None, unit: str = "it",
          every: bool = False, leave: bool = True, label=None) -> Iterator[T]:
    """Iterate with progress: `for x in track(xs, "sampling", progress, unit="batch")`. `label(x)` names an item
    in its line (for coarse work: which run or measurement just finished)."""
    if total is None:
        total = len(iterable) if hasattr(iterable, "__len__") else None
    with Progress(total, desc, unit, enabled, every=every, leave=leave) as bar:
        for x in iterable:
            yield x
            bar.update(1, item=label(x) if label else None)
