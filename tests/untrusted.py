"""A stand-in for a malicious checkpoint's payload, shared by the tests that check pickled files are never run."""

from __future__ import annotations

import os
from pathlib import Path


class RunsCode:
    """Unpickling this runs a shell command (it touches `marker`), as a malicious checkpoint would."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)
