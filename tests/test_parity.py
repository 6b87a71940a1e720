"""The project's models against vectors recorded from the ORIGINAL implementations (../shared/parity).

Runs the shared `check.py` exactly as a user would (from the project root, through the public loaders) and
asserts a PASS line for every vector it lists; a model that fails or errors shows its numbers in the message.
Two vector sets: `vectors/` (the TiTok release, its MaskGIT-VQGAN, taming's VQGAN) and `vectors-maskgit-torch/`
(hmorimitsu/maskgit-torch's MaskGIT tokenizer and transformer). Without ../shared the tests skip, saying where
the vectors were looked for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache

import pytest

from tests.parity_paths import ROOT, require_parity_dir

PARITY = require_parity_dir()  # skips this module, saying how to get the vectors, where they are absent

VECTOR_SETS = ("vectors", "vectors-maskgit-torch")
# Four full-size MaskGIT models, about 90 s on two cores: `slow` (they still run in `tox -e py`, as CI does).
SLOW_SETS = ("vectors-maskgit-torch",)


def _marks(vector_set: str) -> list:
    return [pytest.mark.slow] if vector_set in SLOW_SETS else []


def _entries(vector_set: str) -> list[dict]:
    index = PARITY / vector_set / "index.json"
    return json.loads(index.read_text()) if index.is_file() else []


PARAMS = [pytest.param(s, e, id=f"{s}-{e['kind']}-{e['preset']}", marks=_marks(s))
          for s in VECTOR_SETS for e in _entries(s)]


@cache
def check_output(vector_set: str) -> dict[str, str]:
    """check.py's PASS/FAIL line per model of one vector set, and its closing summary line."""
    proc = subprocess.run([sys.executable, str(PARITY / "check.py"), "--vectors", str(PARITY / vector_set)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    lines = {}
    for line in proc.stdout.splitlines():
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[0] in ("PASS", "FAIL"):
            lines[f"{parts[1]} {parts[2]}"] = line
    lines["__summary__"] = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
    return lines


def _require(vector_set: str) -> None:
    if not (PARITY / vector_set / "index.json").is_file():  # one set present without the other: say which is missing
        pytest.fail(f"no parity vectors at {PARITY / vector_set}: the shared folder is incomplete")


@pytest.mark.parametrize("vector_set,entry", PARAMS)
def test_vector_passes(vector_set, entry):
    _require(vector_set)
    out = check_output(vector_set)
    key = f"{entry['family']}.{entry['kind']} {entry['preset']}"
    line = out.get(key)
    assert line is not None, f"check.py printed nothing for {key}: {out['__summary__']}"
    assert line.startswith("PASS"), line


@pytest.mark.parametrize("vector_set", [pytest.param(s, marks=_marks(s)) for s in VECTOR_SETS])
def test_every_vector_checked(vector_set):
    _require(vector_set)
    assert check_output(vector_set)["__summary__"] == f"{len(_entries(vector_set))} passed, 0 failed"
