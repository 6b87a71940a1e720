"""`titok-bench doctor` on planted faults: too few samples, unbalanced classes, JPEG, sampling settings other than
the release's, a reference made under another protocol; each against a control that follows the protocol."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import titok
from bench.checks.diagnose import EFFECT, MANIFEST, FolderReport, Protocol, check_count, check_folder, check_sample_npz
from bench.cli import main as cli_main
from bench.metrics.statistics_file import write_statistics
from bench.run.tasks.gen import generate_samples
from titok.data.prepare import ADM


def levels(report, check):
    return [f.level for f in report.findings if f.check == check]


def messages(report, check):
    return " | ".join(f.message for f in report.findings if f.check == check)


def fake_generation(folder, count, size=256, manifest=None, name="{:06d}.png", fmt="PNG"):
    """A folder laid out as `generate` writes it: one real image hard-linked under every index name."""
    folder.mkdir(parents=True)
    src = folder.parent / f"{folder.name}-src.img"
    Image.fromarray(np.full((size, size, 3), 127, np.uint8)).save(src, format=fmt)
    for i in range(count):
        os.link(src, folder / name.format(i))
    if manifest is not None:
        (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


RELEASE_MANIFEST = {"generator": "titok_l32", "tokenizer": "titok_l32", "seed": 0, "batch_size": 50, "labels": None,
                    "sampling": {}, "weights": {"generator": "model.safetensors@0123456789ab",
                                                "tokenizer": "model.safetensors@ba9876543210"}}


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    return titok.load_generator("titok_tiny_uvit").eval(), titok.load_tokenizer("titok_tiny_2stage").eval()


# ------------------------------------------------------------------------------------------------- count
def test_count_at_the_papers_threshold():
    report = FolderReport(path=None)
    check_count(report, 49_999, Protocol())
    check_count(report, 50_000, Protocol())
    assert [f.level for f in report.findings] == ["problem", "ok"]
    assert "49,999" in report.findings[0].message and "50,000" in report.findings[0].message
    assert "1/N" in report.findings[0].effect and "Chong & Forsyth" in report.findings[0].effect


def test_cli_short_count_through_the_real_folder_path(tmp_path, capsys):
    """The paper's protocol scaled to 1,000 samples (one per class): 999 on disk is the planted fault."""
    short = fake_generation(tmp_path / "short", 999, manifest=RELEASE_MANIFEST)
    full = fake_generation(tmp_path / "full", 1000, manifest=RELEASE_MANIFEST)
    assert cli_main(["doctor", str(short), "--expect", "1000"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM  count: 999 images; the protocol scores 1,000" in out and "what it does to FID" in out
    assert cli_main(["doctor", str(full), "--expect", "1000", "--json"]) == 0  # the control follows the protocol
    result = json.loads(capsys.readouterr().out)
    assert result["problems"] == 0 and {f["level"] for f in result["findings"]} == {"ok"}
    assert {f["check"] for f in result["findings"]} >= {"count", "class_balance", "format", "size", "sampling"}


@pytest.mark.slow
def test_49999_samples_at_full_scale(tmp_path, capsys):
    folder = fake_generation(tmp_path / "s", 49_999, manifest=RELEASE_MANIFEST)
    assert cli_main(["doctor", str(folder), "--json"]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert [f["check"] for f in findings if f["level"] == "problem"] == ["count"]


# ----------------------------------------------------------------------------------------------- classes
def test_unbalanced_classes_from_the_generation_manifest(tmp_path, tiny_models):
    gen, tok = tiny_models
    generate_samples(gen, tok, tmp_path / "skewed", 8, 0, 8, labels=[0, 0, 1, 2])
    generate_samples(gen, tok, tmp_path / "even", 8, 0, 8, labels=[0, 1, 2, 3],
                     weights={"generator": "random", "tokenizer": "random"})  # as the CLI records them
    protocol = Protocol(num_samples=8, num_classes=4)  # the paper's 50 per class, scaled to 2 per class
    skewed, even = check_folder(tmp_path / "skewed", protocol), check_folder(tmp_path / "even", protocol)
    assert levels(skewed, "class_balance") == ["problem"] and "0 to 4 samples per class" in messages(skewed,
                                                                                                   "class_balance")
    assert levels(even, "class_balance") == ["ok"]
    # Random weights and a test preset without release defaults are said, too.
    assert levels(even, "weights") == ["problem"] and "warn" in levels(even, "sampling")


def test_adm_sample_npz_from_export(tmp_path, tiny_models):
    """The same checks on the .npz ADM's evaluator reads, written by `export-npz` from real generated folders."""
    gen, tok = tiny_models
    for name, labels in (("skewed", [0, 0, 1, 2]), ("even", [0, 1, 2, 3])):
        generate_samples(gen, tok, tmp_path / name, 8, 0, 8, labels=labels)
        assert cli_main(["export-npz", str(tmp_path / name), "--out", str(tmp_path / f"{name}.npz")]) == 0
    protocol = Protocol(num_samples=8, num_classes=4)
    skewed, even = (check_sample_npz(tmp_path / f"{n}.npz", protocol) for n in ("skewed", "even"))
    assert levels(skewed, "class_balance") == ["problem"] and levels(even, "class_balance") == ["ok"]
    assert levels(even, "count") == levels(even, "format") == levels(even, "size") == ["ok"]
    assert "32x32" in messages(even, "size")
    assert check_sample_npz(tmp_path / "even.npz", Protocol(num_samples=9, num_classes=4)).problems[0].check == "count"


def test_folder_without_labels_is_not_claimed_balanced(tmp_path):
    report = check_folder(fake_generation(tmp_path / "recon", 10, size=32), Protocol(num_samples=10))
    assert levels(report, "class_balance") == ["warn"] and "labels unknown" in messages(report, "class_balance")


# ------------------------------------------------------------------------------------------------ format
def test_jpeg_is_a_problem_by_name_and_by_content(tmp_path):
    jpeg = check_folder(fake_generation(tmp_path / "jpg", 6, size=32, name="{:06d}.jpg", fmt="JPEG"),
                        Protocol(num_samples=6))
    disguised = check_folder(fake_generation(tmp_path / "dis", 6, size=32, fmt="JPEG"), Protocol(num_samples=6))
    png = check_folder(fake_generation(tmp_path / "png", 6, size=32), Protocol(num_samples=6))
    assert levels(jpeg, "format") == ["problem"] and "6 of 6 files named .jpg" in messages(jpeg, "format")
    assert levels(disguised, "format") == ["problem"] and "6 of all headers JPEG" in messages(disguised, "format")
    assert levels(png, "format") == ["ok"]
    assert "Parmar" in next(f for f in jpeg.findings if f.check == "format").effect


def test_size_against_the_models_resolution(tmp_path):
    report = check_folder(fake_generation(tmp_path / "s", 4, size=128, manifest=RELEASE_MANIFEST),
                          Protocol(num_samples=4, num_classes=4))
    assert "problem" in levels(report, "size") and "titok_l32) makes 256x256" in messages(report, "size")


# ---------------------------------------------------------------------------------------------- sampling
def test_sampling_settings_other_than_the_release(tmp_path, tiny_models):
    gen, tok = tiny_models
    generate_samples(gen, tok, tmp_path / "s", 4, 0, 4, sampling={"guidance_scale": 1.5, "num_steps": 6})
    report = check_folder(tmp_path / "s", Protocol(num_samples=4))
    assert "problem" in levels(report, "sampling")
    msg = messages(report, "sampling")
    assert "guidance_scale = 1.5 (release: 6.9)" in msg and "num_steps" not in msg  # 6 is the preset's own value
    assert "#11" in EFFECT["sampling"]


def test_release_manifest_with_changed_guidance(tmp_path):
    manifest = {**RELEASE_MANIFEST, "sampling": {"guidance_scale": 3.0, "randomize_temperature": 9.5}}
    report = check_folder(fake_generation(tmp_path / "s", 4, manifest=manifest), Protocol(num_samples=4))
    assert levels(report, "sampling") == ["problem"]
    assert messages(report, "sampling").endswith("guidance_scale = 3.0 (release: 4.5)")


# --------------------------------------------------------------------------------------------- reference
def _stats(path, **protocol):
    return write_statistics(path, np.zeros(2048), np.eye(2048), protocol)


def test_reference_made_under_another_protocol(tmp_path):
    folder = fake_generation(tmp_path / "s", 4, size=32)
    bad = _stats(tmp_path / "bad.npz", extractor="inception-v3-compat-standin", extractor_sha256="ab" * 32,
                 image_size=64, preparation="titok-release", num_images=1000)
    report = check_folder(folder, Protocol(num_samples=4), reference=bad, inception_sha256="cd" * 32)
    ref = messages(report, "reference")
    assert "stand-in Inception" in ref and "other Inception weights" in ref and "'titok-release'" in ref
    assert "1,000 images" in ref
    assert "reference statistics were made at 64x64" in messages(report, "size")
    good = _stats(tmp_path / "good.npz", extractor="inception-v3-compat", extractor_sha256="cd" * 32,
                  image_size=32, preparation=ADM, num_images=50_000)
    report = check_folder(folder, Protocol(num_samples=4), reference=good, inception_sha256="cd" * 32)
    assert levels(report, "reference") == ["ok"] and "problem" not in levels(report, "size")


def test_adm_reference_batch_is_recognised(tmp_path):
    adm = tmp_path / "VIRTUAL_imagenet32_labeled.npz"
    np.savez(adm, arr_0=np.zeros((2, 32, 32, 3), np.uint8), mu=np.zeros(2048), sigma=np.eye(2048))
    report = check_folder(fake_generation(tmp_path / "s", 4, size=32), Protocol(num_samples=4), reference=adm)
    assert levels(report, "reference") == ["ok"] and "ADM reference batch" in messages(report, "reference")


# ------------------------------------------------------------------------------------------ stack, errors
def test_stack_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TITOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TITOK_BENCH_INCEPTION_WEIGHTS", raising=False)
    assert cli_main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "CUDA" in out and "NVML" in out and "metrics stack" in out
    assert "Inception weights: not found" in out and str(tmp_path / "cache") in out


def test_bad_input_is_exit_2(tmp_path, capsys):
    assert cli_main(["doctor", str(tmp_path / "nowhere")]) == 2
    (tmp_path / "empty").mkdir()
    assert cli_main(["doctor", str(tmp_path / "empty")]) == 2
    assert "no image files" in capsys.readouterr().err
