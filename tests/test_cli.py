"""The CLI in-process: a tiny suite end to end, generate and reconstruct, and bad input as exit status 2."""

from __future__ import annotations

import json

from PIL import Image

from bench.cli import main
from bench.records.store import read_records

TINY_SUITE = """
[suite]
name = "tiny"
[defaults]
iters = 1
warmup = 1
batch_sizes = [2]
[[run]]
task = "speed"
models = ["titok_tiny_2stage", "titok_tiny_vae", "maskgit_vqgan_tiny"]
[[run]]
task = "speed"
kind = "generator"
models = ["titok_tiny_bert", "titok_tiny_uvit"]
[[run]]
task = "recon"
models = ["titok_tiny_vq"]
data = "builtin:procedural"
limit = 4
metrics = ["psnr", "ssim"]
"""


def test_run_tiny_suite(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    out = tmp_path / "out"
    assert main(["run", "--suite", str(suite), "--out", str(out)]) == 0
    res = read_records(out / "results.jsonl")
    assert not res.problems
    speed = [r for r in res.records if r["task"] == "speed"]
    assert len(speed) == 3 * 2 + 2 * 2  # tokenizers x (encode, decode) + generators x (sample, generate)
    assert all(r["metrics"]["images_per_sec"] > 0 and not r.get("error") for r in speed)
    gen = next(r for r in speed if r["model"] == "titok_tiny_bert" and r["protocol"]["op"] == "generate")
    assert gen["protocol"]["tokenizer"] == "titok_tiny_2stage" and gen["protocol"]["sampling"]["num_steps"] == 8
    recon = next(r for r in res.records if r["task"] == "recon")
    # A VQ tokenizer also reports how it uses its codebook (as the TiTok release's evaluator does).
    assert {"psnr", "ssim", "codebook_usage", "codebook_entropy_bits", "codebook_perplexity", "eval_wall_s",
            "peak_host_mb"} == set(recon["metrics"])
    assert recon["protocol"]["preparation"] == "none"  # procedural images are drawn at size, not prepared
    assert 0 < recon["metrics"]["codebook_usage"] <= 1 and recon["protocol"]["num_images"] == 4
    assert (out / "tables" / "speed.md").is_file() and (out / "tables" / "quality.tex").is_file()
    resolved = list(out.glob("suite-*.resolved.json"))
    assert len(resolved) == 1 and json.loads(resolved[0].read_text())["run"][0]["iters"] == 1


def test_generate_is_deterministic_and_resumes(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["generate", "--model", "titok_tiny_bert", "--labels", "1,2,3", "--num", "5", "--out", str(a),
                 "--batch-size", "2"]) == 0
    # Same bytes from two shards, the second run twice (a resume: no new work).
    for shard in ("0/2", "1/2", "1/2"):
        assert main(["generate", "--model", "titok_tiny_bert", "--labels", "1,2,3", "--num", "5", "--out", str(b),
                     "--batch-size", "2", "--shard", shard]) == 0
    assert "wrote 0 new samples" in capsys.readouterr().out.splitlines()[-1]
    names = sorted(p.name for p in a.glob("*.png"))
    assert names == sorted(p.name for p in b.glob("*.png")) and len(names) == 5
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes()
    # Resuming a folder with other settings would mix two runs: refused.
    assert main(["generate", "--model", "titok_tiny_bert", "--labels", "1,2,3", "--num", "6", "--out", str(b),
                 "--batch-size", "3"]) == 2
    assert "holds samples of another run" in capsys.readouterr().err


def test_interrupted_generation_resumes_to_identical_bytes(tmp_path):
    import torch

    from bench.run.tasks.common import load_model
    from bench.run.tasks.gen import generate_samples

    gen, _ = load_model("generator", "titok_tiny_uvit", {}, torch.device("cpu"))
    tok, _ = load_model("tokenizer", "titok_tiny_2stage", {}, torch.device("cpu"))
    whole = tmp_path / "whole"
    assert generate_samples(gen, tok, whole, 7, run_seed=3, batch_size=2) == 7
    part = tmp_path / "part"
    generate_samples(gen, tok, part, 7, run_seed=3, batch_size=2)
    for i in (1, 4, 6):  # a crash lost some files (and left a temporary one behind)
        (part / f"{i:06d}.png").unlink()
    (part / ".000004.png.tmp-99").write_bytes(b"partial")
    assert generate_samples(gen, tok, part, 7, run_seed=3, batch_size=2) == 3
    for i in range(7):
        assert (part / f"{i:06d}.png").read_bytes() == (whole / f"{i:06d}.png").read_bytes()


def test_reconstruct_writes_pngs(tmp_path):
    assert main(["reconstruct", "--model", "titok_tiny_vae", "--input", "builtin:skimage", "--limit", "3",
                 "--out", str(tmp_path)]) == 0
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 3 and Image.open(files[0]).size == (32, 32)


def test_bad_input_exits_2(tmp_path, capsys):
    assert main(["run", "--suite", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err
    assert main(["generate", "--model", "titok_xl", "--out", str(tmp_path)]) == 2
    assert "known:" in capsys.readouterr().err
    assert main(["reconstruct", "--model", "titok_tiny_vq", "--input", str(tmp_path / "none"), "--out",
                 str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["tables", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path)]) == 2
