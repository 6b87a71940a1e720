"""The memory-mapped safety check of an Inception weights file (bench.metrics.inception.load_inception): a file in
torch's zip format that holds code is refused before torch-fidelity unpickles it, as a raw pickle is
(tests/test_faults.py)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from tests.untrusted import RunsCode

pytestmark = pytest.mark.metrics


def test_zip_format_weights_holding_code_are_refused_unrun(tmp_path, standin_inception):
    from bench.metrics.inception import STANDIN_SUFFIX, load_inception, sha256_of
    from titok.weights import WeightsError

    marker, path = tmp_path / "PWNED", tmp_path / "tampered.pth"
    torch.save({**torch.load(standin_inception, weights_only=True), "fc.bias": RunsCode(marker)}, path)
    assert zipfile.is_zipfile(path)  # the memory-mapped branch of the check
    Path(str(path) + STANDIN_SUFFIX).write_text(json.dumps({"standin": True, "seed": 0, "sha256": sha256_of(path)}))
    with pytest.raises(WeightsError, match="refusing an Inception weights file"):
        load_inception(path)
    assert not marker.exists()


def test_checked_weights_are_the_files_values(standin_inception):
    from bench.metrics.inception import load_inception

    extractor, _ = load_inception(standin_inception)
    stored, loaded = torch.load(standin_inception, weights_only=True), extractor.state_dict()
    assert stored.keys() == loaded.keys()
    assert all(torch.equal(stored[k], loaded[k]) for k in stored)
