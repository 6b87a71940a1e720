"""The CLI does what the README says: its examples parse as printed, `reconstruct` keeps input names, and the
warnings a newcomer needs (random weights, FID over too few images) are given."""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import build_parser, main
from bench.metrics.base import FEATURE_DIM
from bench.metrics.image_sets import few_images_warning
from bench.records.output_names import png_names
from bench.run.tasks import common

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """Every `titok-bench ...` line of the README's bash blocks, without its comment or pipe."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    blocks = [re.sub(r"\\\n\s*", " ", block) for block in blocks]  # a command continued over lines is one command
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [re.split(r"\s+(#|\|)\s", line)[0] for line in lines if line.startswith("titok-bench ")]


def test_readme_has_the_harness_examples():
    commands = " ".join(readme_commands())
    for sub in ("run", "tables", "plot", "compare", "generate", "reconstruct", "fid", "stats", "publish", "list"):
        assert f"titok-bench {sub} " in commands + " ", sub


@pytest.mark.parametrize("command", readme_commands())
def test_readme_example_parses_as_printed(command):
    argv = shlex.split(re.sub(r"\[[^\]]*\]", "", command))[1:]  # "[--json]": optional parts shown in brackets
    parser = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"README example does not parse ({exc}): {command}")


def test_readme_examples_read_no_placeholder_inputs():
    """Inputs in the examples are built-in sets or files an earlier example (or the repository) provides."""
    for command in readme_commands():
        for word in shlex.split(command):
            if re.fullmatch(r"HEAD(~\d+)?", word):  # git's names for commits of the clone itself
                continue
            assert not re.fullmatch(r"[A-Z_]{3,}(/.*)?|photos/?|DIR|PATH", word), f"placeholder {word!r} in {command}"


# ------------------------------------------------------------------------------------------- reconstruct names
def test_png_names_keep_folders_and_stems_and_never_collide(tmp_path):
    files = [tmp_path / "cat.jpg", tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "n01" / "x.JPEG"]
    assert [str(p) for p in png_names(tmp_path, files)] == ["cat.png", "a.jpg.png", "a.png.png", "n01/x.png"]


def test_reconstruct_keeps_input_names_and_skips_in_step(tmp_path, capsys):
    src = tmp_path / "photos"
    (src / "n01").mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(src / "cat.jpg")
    (src / "broken.png").write_bytes(b"not an image")  # sorted first: the names after it must not shift
    Image.fromarray(rgb[::-1]).save(src / "dog.png")
    Image.fromarray(rgb[:, ::-1]).save(src / "n01" / "x.JPEG")
    out = tmp_path / "recon"
    assert main(["reconstruct", "--model", "titok_tiny_vq", "--input", str(src), "--out", str(out),
                 "--batch-size", "2", "--quiet"]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["cat.png", "dog.png", "n01/x.png"]
    err = capsys.readouterr().err
    assert "skipped 1 unreadable images of 4" in err and "record" in err and "no record is written" in err
    assert "protocol.skipped" not in err
    # each output is the reconstruction of the input of the same name, not of its neighbour
    from titok.data.images import ImageFolder
    from titok.registry import create

    torch.manual_seed(0)
    tok = create("tokenizer", "titok_tiny_vq").eval()
    dog = ImageFolder(src, image_size=tok.image_size)[2][0]
    expected = tok.reconstruct(dog[None])[0].permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(Image.open(out / "dog.png")), expected)


def test_builtin_sets_are_numbered(tmp_path):
    assert main(["reconstruct", "--model", "titok_tiny_vq", "--input", "builtin:procedural", "--limit", "3",
                 "--out", str(tmp_path), "--quiet"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["000000.png", "000001.png", "000002.png"]


# ------------------------------------------------------------------------------------------------- warnings
def test_random_weights_are_announced_once_per_model(caplog, monkeypatch):
    monkeypatch.setattr(common, "_warned_random", set())
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            common.load_model("tokenizer", "titok_tiny_vq", {}, torch.device("cpu"))
    said = [r.getMessage() for r in caplog.records if "RANDOM weights" in r.getMessage()]
    assert len(said) == 1 and "titok_tiny_vq" in said[0] and "--weights" in said[0]


def test_given_weights_are_not_called_random(caplog, monkeypatch, tmp_path):
    import titok

    monkeypatch.setattr(common, "_warned_random", set())
    path = tmp_path / "tok.safetensors"
    titok.save_checkpoint(common.create("tokenizer", "titok_tiny_vq"), path, "tokenizer")
    with caplog.at_level(logging.WARNING):
        common.load_model("tokenizer", "titok_tiny_vq", {"tokenizer": {"titok_tiny_vq": str(path)}},
                          torch.device("cpu"))
    assert not [r for r in caplog.records if "RANDOM" in r.getMessage()]


def test_few_images_warning_states_the_threshold_and_why():
    message = few_images_warning(100, "images")
    assert f"fewer than {FEATURE_DIM}" in message and "singular" in message and "50,000" in message
    assert few_images_warning(FEATURE_DIM, "images") is None and few_images_warning(50_000, "images") is None


@pytest.mark.metrics
def test_fid_over_a_few_images_warns_once(image_folders, standin_inception, caplog, monkeypatch):
    import bench.metrics.image_sets
    from titok.data.images import ImageFolder

    monkeypatch.setattr(bench.metrics.image_sets, "_said", set())
    a, b = (ImageFolder(folder) for folder in image_folders)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # a suite scoring a second model on the same set is not warned twice
            bench.metrics.image_sets.compute_image_metrics(a, b, inception_weights=standin_inception, metrics=("fid",),
                                                           batch_size=6)
    said = [r.getMessage() for r in caplog.records if "FID statistics over 12" in r.getMessage()]
    assert len(said) == 2, caplog.text  # the images and the reference images
