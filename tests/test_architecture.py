"""The layers are a contract: models (`titok`) at the bottom, `baselines` on them, the harness (`bench`) on top.

The contracts live in pyproject.toml ([tool.importlinter]); this runs them in the default test run so that CI
catches an arrow that points up, and shows that the registry still reaches the baselines without `titok`
importing them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    pytest.importorskip("importlinter", reason="import-linter is in the test extra")
    cli = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(cli)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "5 kept, 0 broken" in proc.stdout


def test_titok_alone_imports_nothing_above_it():
    # A fresh interpreter: importing titok (models, training, data) must not load the harness or the baselines.
    code = ("import sys, titok, titok.train, titok.data.images, titok.data.files; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'bench', 'baselines'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registry_finds_baselines_through_entry_points():
    code = ("import sys, titok; tok = titok.load_tokenizer('maskgit_vqgan_tiny'); "
            "print(type(tok).__module__, 'baselines' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["baselines.maskgit_vqgan", "True"]
