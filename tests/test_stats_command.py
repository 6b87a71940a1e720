"""`titok-bench stats`: reference statistics with their protocol, FID ~0 against their own folder, and refusal of
a reference made under another protocol (a field that differs is named)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.cli import main
from bench.metrics.statistics_file import check_protocol, read_protocol, write_statistics
from titok.errors import InputError


def test_protocol_mismatch_names_the_field(tmp_path):
    ref = {"extractor": "inception-v3-compat", "image_size": 256, "preparation": "adm-center-crop-arr"}
    check_protocol("ref.npz", ref, {"extractor": "inception-v3-compat", "image_size": 256})  # fields agree
    with pytest.raises(InputError, match=r"image_size: reference 256, this run 512"):
        check_protocol("ref.npz", ref, {"extractor": "inception-v3-compat", "image_size": 512})
    with pytest.raises(InputError, match=r"extractor: reference 'inception-v3-compat', this run 'inception-v3-com"):
        check_protocol("ref.npz", ref, {"extractor": "inception-v3-compat-standin", "image_size": 256})


def test_written_protocol_reads_back_and_adm_batches_are_recognised(tmp_path):
    mu, sigma = np.zeros(2048), np.eye(2048)
    path = write_statistics(tmp_path / "ref.npz", mu, sigma, {"image_size": 64, "preparation": "none"})
    info = read_protocol(path)
    assert info["image_size"] == 64 and info["format"] == "titok-bench-stats-v1"
    # ADM's reference batch: arr_0 images beside mu/sigma (and mu_s/sigma_s), no record of its own.
    adm = tmp_path / "VIRTUAL_tiny.npz"
    np.savez(adm, arr_0=np.zeros((3, 16, 16, 3), np.uint8), mu=mu, sigma=sigma, mu_s=mu[:10], sigma_s=sigma[:10, :10])
    info = read_protocol(adm)
    assert info == {"format": "adm-reference-batch", "extractor": "inception-v3-compat", "image_size": 16,
                    "preparation": "adm-center-crop-arr", "num_images": 3}


@pytest.mark.metrics
def test_stats_of_a_folder_against_the_same_folder_is_fid_zero(image_folders, standin_inception, tmp_path, capsys):
    a, _ = image_folders
    out = tmp_path / "a.npz"
    assert main(["stats", str(a), "--out", str(out), "--image-size", "64", "--inception-weights",
                 str(standin_inception), "--features", "--batch-size", "5", "--workers", "0"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["num_images"] == 12 and written["preparation"] == "adm-center-crop-arr"
    assert written["standin"] is True and len(written["extractor_sha256"]) == 64
    with np.load(out) as z:
        assert z["features"].shape == (12, 2048)
    assert main(["fid", str(a), str(out), "--inception-weights", str(standin_inception), "--json"]) == 0
    assert abs(json.loads(capsys.readouterr().out)["value"]) < 1e-3


@pytest.mark.metrics
def test_gen_refuses_a_reference_of_another_size_before_sampling(tmp_path, standin_inception, capsys):
    ref = write_statistics(tmp_path / "ref.npz", np.zeros(2048), np.eye(2048),
                           {"extractor": "inception-v3-compat-standin", "image_size": 256})
    suite = tmp_path / "gen.toml"
    suite.write_text(f'[[run]]\ntask = "gen"\nmodels = ["titok_tiny_bert"]\nreference = "{ref}"\nnum_samples = 20\n'
                     f'inception_weights = "{standin_inception}"\n')
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "out")]) == 2
    assert "image_size: reference 256, this run 32" in capsys.readouterr().err
    assert not (tmp_path / "out" / "samples").exists()  # refused before any sample was made
