"""Where the shared parity vectors live: ../shared/parity beside the project root (as CI lays it out),
or $TITOK_PARITY_DIR.

The vectors (about 50 MB, recorded from the original implementations) are not part of the repository. A clone
without them still collects and runs every other test: the modules that need them call `require_parity_dir()`,
which skips them with a reason saying how to get the vectors.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV_VAR = "TITOK_PARITY_DIR"


def parity_dir() -> Path:
    d = Path(os.environ.get(ENV_VAR, ROOT.parent / "shared" / "parity"))
    if not (d / "check.py").is_file():
        raise FileNotFoundError(
            f"parity vectors not found at {d}: put the project's shared/ folder (parity/check.py and "
            f"parity/vectors*/, about 50 MB) beside the clone as ../shared, as CI lays it out, or set "
            f"{ENV_VAR}=/path/to/shared/parity"
        )
    return d


def require_parity_dir() -> Path:
    """`parity_dir()`, or skip the calling test module (at collection) with the reason and how to get them."""
    try:
        return parity_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc), allow_module_level=True)
