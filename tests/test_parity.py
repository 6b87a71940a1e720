"""The project's models against vectors recorded from the ORIGINAL implementations (../shared/parity).

Runs the shared `check.py` exactly as a user would (from the project root, through the public loaders) and
asserts a PASS line for every vector it lists; a model that fails or errors shows its numbers in the message.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.parity_paths import ROOT, require_parity_dir

PARITY = require_parity_dir()  # skips this module, saying how to get the vectors, where they are absent
ENTRIES = json.loads((PARITY / "vectors" / "index.json").read_text())


@pytest.fixture(scope="module")
def check_output() -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, str(PARITY / "check.py")], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    lines = {}
    for line in proc.stdout.splitlines():
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[0] in ("PASS", "FAIL"):
            lines[f"{parts[1]} {parts[2]}"] = line
    lines["__summary__"] = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
    return lines


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e['kind']}-{e['preset']}")
def test_vector_passes(check_output, entry):
    key = f"{entry['family']}.{entry['kind']} {entry['preset']}"
    line = check_output.get(key)
    assert line is not None, f"check.py printed nothing for {key}: {check_output['__summary__']}"
    assert line.startswith("PASS"), line


def test_every_vector_checked(check_output):
    assert check_output["__summary__"] == f"{len(ENTRIES)} passed, 0 failed"
