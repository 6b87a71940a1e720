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


@pytest.mark.metrics
def test_fid_against_statistics_of_another_protocol_is_refused_before_reading_images(tmp_path, image_folders,
                                                                                   standin_inception, capsys):
    """The release's issue #105: reals measured unlike the samples. A statistics file made at another image size
    (or with other Inception weights) is refused, naming the field; the same protocol passes."""
    import numpy as np

    from bench.metrics.inception import inspect_weights
    from bench.metrics.statistics_file import write_statistics

    a, _ = image_folders  # 64x64 images
    info = inspect_weights(standin_inception)
    mu, sigma = np.zeros(2048), np.eye(2048)
    protocol = {"extractor": info.name, "extractor_sha256": info.weights_sha256, "preparation": "adm-center-crop-arr"}
    write_statistics(tmp_path / "at32.npz", mu, sigma, {**protocol, "image_size": 32})
    assert main(["fid", str(a), str(tmp_path / "at32.npz"), "--inception-weights", str(standin_inception)]) == 2
    err = capsys.readouterr().err
    assert "image_size: reference 32, this run 64" in err
    write_statistics(tmp_path / "other.npz", mu, sigma, {**protocol, "image_size": 64, "extractor_sha256": "0" * 64})
    assert main(["fid", str(a), str(tmp_path / "other.npz"), "--inception-weights", str(standin_inception)]) == 2
    assert "extractor_sha256" in capsys.readouterr().err
    write_statistics(tmp_path / "same.npz", mu, sigma, {**protocol, "image_size": 64})
    assert main(["fid", str(a), str(tmp_path / "same.npz"), "--inception-weights", str(standin_inception)]) == 0
