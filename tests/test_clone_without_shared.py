"""A clone without the sibling ../shared folder (the parity vectors) still collects and runs its tests: the parity
modules skip with a reason that says how to get the vectors, and nothing else depends on them."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.parity_paths import ENV_VAR, ROOT


def pytest_without_vectors(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, ENV_VAR: str(tmp_path / "no-shared" / "parity"), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def test_whole_suite_collects_without_the_vectors(tmp_path):
    proc = pytest_without_vectors(tmp_path, "--collect-only", "tests")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error" not in proc.stdout.splitlines()[-1].lower(), proc.stdout[-3000:]
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    # the modules that need the vectors at import: the two parity modules and the training vectors' GAN module
    # (tests/test_train_vectors_gen.py skips test by test, as its vector tests run)
    assert len(skipped) == 1 and "SKIPPED [3]" in skipped[0], proc.stdout[-3000:]


def test_parity_modules_skip_saying_how_to_get_the_vectors(tmp_path):
    proc = pytest_without_vectors(tmp_path, "tests/test_parity.py", "tests/test_release_presets.py")
    assert proc.returncode == 5, proc.stdout[-3000:]  # pytest's "no tests collected": both skipped whole, none failed
    assert "2 skipped" in proc.stdout and "failed" not in proc.stdout and "error" not in proc.stdout.lower()
    reason = next(line for line in proc.stdout.splitlines() if line.startswith("SKIPPED"))
    assert "parity vectors not found" in reason and "../shared" in reason and ENV_VAR in reason, reason
