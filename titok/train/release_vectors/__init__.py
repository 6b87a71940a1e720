"""Training components against vectors recorded from the TiTok release's own training code.

The recording (`../shared/parity/vectors-train`, made by running bytedance/1d-tokenizer's training modules) is the
reference for every training number: losses, discriminator, masking, optimizer groups, schedules, init, freezing.
Each module of this package owns some of the recorded files and exposes `CHECKS = {file_name: function}`; a
function takes the vectors folder and the file's `index.json` entry and returns one `Result` per compared item.
Modules are discovered, so adding a vector file means adding a module (or an entry), nothing else.

`python -m titok.train.release_vectors --vectors DIR` prints PASS/FAIL per item and exits 1 on any failure; a file
listed in `index.json` that no module checks is a failure too, so a new recording cannot pass unchecked.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    """One compared item: `name` says what (file and key), `detail` the numbers (error and tolerance)."""

    file: str
    name: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.file} {self.name}" + (f": {self.detail}" if self.detail else "")


Check = Callable[[Path, dict], list[Result]]


def all_checks() -> dict[str, Check]:
    """Every module's CHECKS, merged; two modules claiming one file is our bug."""
    found: dict[str, Check] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for file, fn in getattr(module, "CHECKS", {}).items():
            if file in found:
                raise RuntimeError(f"two check modules claim {file}")
            found[file] = fn
    return found


def index_entries(folder: Path) -> list[dict]:
    return json.loads((Path(folder) / "index.json").read_text())["files"]


def run_all(folder: Path, only: set[str] | None = None) -> list[Result]:
    """Check every file `index.json` lists (or those in `only`); a file with no check is one FAIL."""
    folder = Path(folder)
    checks = all_checks()
    results: list[Result] = []
    for entry in index_entries(folder):
        file = entry["file"]
        if only and file not in only:
            continue
        fn = checks.get(file)
        if fn is None:
            results.append(Result(file, "-", False, "no check in titok.train.release_vectors covers this file"))
            continue
        results.extend(fn(folder, entry))
    return results
