"""Where the shared parity vectors live: ../shared/parity beside the project root (as CI lays it out),
or $TITOK_PARITY_DIR."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parity_dir() -> Path:
    d = Path(os.environ.get("TITOK_PARITY_DIR", ROOT.parent / "shared" / "parity"))
    if not (d / "check.py").is_file():
        raise FileNotFoundError(
            f"parity vectors not found at {d}: clone the project beside its shared/ folder "
            "(../shared/parity), or set TITOK_PARITY_DIR"
        )
    return d
