"""`titok-bench fid`: output, JSON, and bad input as a message with exit status 2."""

from __future__ import annotations

import json

import pytest

from bench.commands.fid import main


@pytest.mark.metrics
def test_fid_command_json(image_folders, standin_inception, capsys):
    a, b = image_folders
    assert main(["fid", str(a), str(b), "--inception-weights", str(standin_inception), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "standin_fid" and out["value"] > 0 and out["protocol"]["extractor"]["standin"]


@pytest.mark.metrics
def test_fid_command_bad_inputs(tmp_path, image_folders, standin_inception, capsys):
    a, _ = image_folders
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["fid", str(empty), str(a), "--inception-weights", str(standin_inception)]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["fid", str(a), str(tmp_path / "missing.npz"), "--inception-weights", str(standin_inception)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["fid", str(a), str(a), "--inception-weights", str(tmp_path / "nope.pth")]) == 2
    assert "Inception weights not found" in capsys.readouterr().err
