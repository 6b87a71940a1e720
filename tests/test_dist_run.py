"""titok-bench under torchrun: 2 processes give what 1 process gives, rank 0 alone writes, a failing rank ends the run.

The reference of every 2-process run is a 1-process run of the same command in the same test (in this process, via
`main`); the 2-process runs are real `torchrun --standalone --nproc_per_node 2 -m bench ...` subprocesses on gloo.
The fast tests check the split itself without a process group: the images two ranks read are the set, once each,
in the batches one process reads them in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.metrics.image_batches import rank_image_batches
from bench.records.store import read_records
from bench.run.tasks.common import RunContext
from tests.conftest import write_pngs
from titok.data.images import ImageFolder, builtin_images
from titok.train.distributed import DistContext

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the ranks run one thread each

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180  # a hang fails the test instead of stalling the suite
VOLATILE = ("eval_wall_s", "peak_host_mb", "peak_device_mb")  # time and memory differ between runs by nature


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node N -m bench ARGS` with this worktree's code, on gloo (CPU)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TITOK_BENCH_DIST_TIMEOUT_S="60")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def image_folder(folder: Path, count: int, corrupt_at: int | None = None) -> Path:
    """`count` 40x40 PNGs (drawn at 40, prepared to the tiny tokenizer's 32), one of them corrupt at `corrupt_at`."""
    write_pngs(folder, builtin_images("procedural", 40, count, seed=3))
    if corrupt_at is not None:
        (folder / f"img{corrupt_at:03d}.png").write_bytes(b"not a png")
    return folder


def assert_same_numbers(two: dict, one: dict, rel: float = 1e-6) -> None:
    keys = set(one) - set(VOLATILE)
    assert keys == set(two) - set(VOLATILE)
    for k in sorted(keys):
        assert two[k] == pytest.approx(one[k], rel=rel, abs=1e-12), k


# ------------------------------------------------------------------------------------- the split, no group
def _ctx(rank: int, world: int) -> DistContext:
    return DistContext(rank, world, rank, torch.device("cpu"))


def test_two_ranks_read_the_whole_folder_once_in_one_process_batches(tmp_path):
    folder = image_folder(tmp_path / "imgs", 7)
    data = ImageFolder(folder, image_size=32)
    one = [(x, p.tolist()) for x, p in rank_image_batches(data, 2, _ctx(0, 1), num_workers=0)]
    assert [p for _, p in one] == [[0, 1], [2, 3], [4, 5], [6]]  # positions are indices into the folder
    ranks = [[(x, p.tolist()) for x, p in rank_image_batches(data, 2, _ctx(r, 2), num_workers=0)] for r in (0, 1)]
    assert [p for _, p in ranks[0]] == [[0, 1], [4, 5]] and [p for _, p in ranks[1]] == [[2, 3], [6]]
    by_position = {tuple(p): x for rank in ranks for x, p in rank}
    for x, p in one:  # the same images, batch for batch
        assert torch.equal(by_position[tuple(p)], x)
    # In memory (built-in sets) the same split, from slices.
    from titok.data.images import TensorImages

    mem = TensorImages(builtin_images("procedural", 32, 5, seed=1))
    got = {tuple(p.tolist()): x for r in (0, 1) for x, p in rank_image_batches(mem, 2, _ctx(r, 2))}
    assert sorted(got) == [(0, 1), (2, 3), (4,)]
    assert torch.equal(got[(2, 3)], mem.images[2:4])


def test_unreadable_images_keep_the_positions_of_the_rest(tmp_path):
    folder = image_folder(tmp_path / "imgs", 6, corrupt_at=2)
    data = ImageFolder(folder, image_size=32)
    got = [p.tolist() for r in (0, 1) for _, p in rank_image_batches(data, 2, _ctx(r, 2), num_workers=0)]
    assert sorted(got) == [[0, 1], [3], [4, 5]]  # batch [2, 3] is one short: never filled up from the next
    assert data.skipped == [str(folder / "img002.png")]  # counted once, by the rank that read it
    one = [p.tolist() for _, p in rank_image_batches(data, 2, _ctx(0, 1), num_workers=0)]
    assert one == [[0, 1], [3], [4, 5]]  # one process reads the same batches


def test_only_rank_0_writes_records(tmp_path):
    def ctx(rank, out):
        return RunContext(out, "run", torch.device("cpu"), {"world_size": 2}, "abc", dist=_ctx(rank, 2))

    rec = ctx(1, tmp_path / "r1").emit(model="m", task="stats", metrics={"x": 1.0}, protocol={})
    assert rec["metrics"] == {"x": 1.0} and not (tmp_path / "r1" / "results.jsonl").exists()
    (tmp_path / "r0").mkdir()
    ctx(0, tmp_path / "r0").emit(model="m", task="stats", metrics={"x": 1.0}, protocol={})
    assert len(read_records(tmp_path / "r0" / "results.jsonl").records) == 1


# ----------------------------------------------------------------------------------- 2 processes == 1
SUITE = """
[suite]
name = "dist"
[defaults]
iters = 1
warmup = 1
batch_sizes = [2]
[[run]]
task = "speed"
models = ["titok_tiny_vq"]
[[run]]
task = "recon"
models = ["titok_tiny_vq", "titok_tiny_2stage"]
data = "{data}"
eval_batch_size = 2
strict = {strict}
metrics = {metrics}
"""


def write_suite(path: Path, data: Path, strict: bool = False, metrics: str = '["psnr", "ssim"]') -> Path:
    path.write_text(SUITE.format(data=data, strict=str(strict).lower(), metrics=metrics))
    return path


@pytest.mark.slow
def test_recon_suite_under_torchrun_equals_one_process(tmp_path, capsys):
    """About 20 s: 10 images, one unreadable in rank 1's share, batches of 2: rank 0 reads batches 0, 2, 4 (6
    images), rank 1 batches 1 and 3 (3 readable images), so every sum and count must come from both."""
    suite = write_suite(tmp_path / "suite.toml", image_folder(tmp_path / "imgs", 10, corrupt_at=3))
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "one"), "--quiet"]) == 0
    done = torchrun(["run", "--suite", str(suite), "--out", str(tmp_path / "two"), "--quiet"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("records (0 with an error field)") == 1  # rank 0 alone prints
    one, two = (read_records(tmp_path / d / "results.jsonl") for d in ("one", "two"))
    assert not two.problems and len(two.records) == len(one.records) == 4  # speed encode/decode + 2 recon
    assert len({r["run_id"] for r in two.records}) == 1 and len(list((tmp_path / "two").glob("suite-*.json"))) == 1
    for r in two.records:
        assert r["env"]["world_size"] == 2 and len(r["env"]["devices"]) == 2
    assert all(r["env"]["world_size"] == 1 for r in one.records)
    recon = {(r["model"]): r for r in one.records if r["task"] == "recon"}
    for r in (r for r in two.records if r["task"] == "recon"):
        ref = recon[r["model"]]
        assert r["protocol"] == ref["protocol"] and r["protocol"]["num_images"] == 9 and r["protocol"]["skipped"] == 1
        assert_same_numbers(r["metrics"], ref["metrics"])
    assert [r["protocol"]["op"] for r in two.records if r["task"] == "speed"] == ["encode", "decode"]


@pytest.mark.slow
def test_a_rank_that_fails_ends_the_run_with_rank_0_naming_it(tmp_path):
    """About 15 s: under strict, the unreadable image is in rank 1's share only; every rank stops, no hang."""
    folder = image_folder(tmp_path / "imgs", 6, corrupt_at=3)  # batch [2, 3]: rank 1's
    suite = write_suite(tmp_path / "suite.toml", folder, strict=True)
    done = torchrun(["run", "--suite", str(suite), "--out", str(tmp_path / "out"), "--quiet"])
    assert done.returncode != 0
    said = [line for line in done.stderr.splitlines() if line.startswith("titok-bench run: error:")]
    assert len(said) == 1, done.stderr  # one message, from rank 0
    assert ("recon of titok_tiny_vq failed on 1 of 2 ranks: rank 1: DataError: unreadable image "
            f"{folder / 'img003.png'}") in said[0]
    assert "bench/" not in done.stderr.split(said[0])[1]  # bad input: a message, no stack of ours (torchrun's
    assert "exitcode  : 2" in done.stderr  # own report follows, naming the rank that failed first)
    records = read_records(tmp_path / "out" / "results.jsonl").records
    assert [r["task"] for r in records] == ["speed", "speed"]  # what finished before the failure, nothing after


@pytest.mark.slow
def test_generate_under_torchrun_writes_the_bytes_of_one_process(tmp_path, capsys):
    """About 15 s: 7 samples in batches of 2 over 2 ranks; an explicit --shard is refused there."""
    # --num-samples: torchrun's own parser refuses `--num` anywhere on its line (a prefix of its --numa-binding).
    args = ["generate", "--model", "titok_tiny_bert", "--num-samples", "7", "--batch-size", "2", "--seed", "3",
            "--quiet"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    # The folder already holds rank 0's batches 0 and 2 (samples 0, 1, 4, 5): rank 1 alone has work, batches 1 and
    # 3, 3 samples. A rank that took another's share, or all of it, would write more.
    (tmp_path / "two").mkdir()
    for name in ["generation.json", *(f"{i:06d}.png" for i in (0, 1, 4, 5))]:
        (tmp_path / "two" / name).write_bytes((tmp_path / "one" / name).read_bytes())
    done = torchrun([*args, "--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wrote 3 new samples to") == 1, done.stdout  # rank 0 alone prints, the ranks' sum
    one, two = (sorted((tmp_path / d).glob("*.png")) for d in ("one", "two"))
    assert [p.name for p in one] == [p.name for p in two] and len(one) == 7
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two, strict=True))
    refused = torchrun([*args, "--out", str(tmp_path / "three"), "--shard", "0/2"])
    # torchrun's own status is 1 whatever its ranks returned; the ranks' 2 (bad input) is in its report
    assert refused.returncode != 0 and refused.stderr.count("--shard is set by torchrun's ranks") == 1
    assert "exitcode  : 2" in refused.stderr


def _npz(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.slow
@pytest.mark.metrics
def test_rfid_kid_precision_recall_under_torchrun_equal_one_process(tmp_path, standin_inception, capsys):
    """About 30 s on a quiet machine (more at load 10 on 2 cores, where one 2048-d FID takes 16 s):
    reconstruction's Inception metrics (rFID, KID, precision/recall) over 5 images, reduced over 2 ranks (images
    0, 1, 4 and 2, 3), equal one process's. The bootstrap's reduction is dist-stats' (test_streaming_reduce)."""
    suite = write_suite(tmp_path / "suite.toml", image_folder(tmp_path / "imgs", 5),
                        metrics='["psnr", "fid", "kid", "prc"]')
    text = suite.read_text().replace('models = ["titok_tiny_vq", "titok_tiny_2stage"]', 'models = ["titok_tiny_vq"]')
    suite.write_text(text)  # no FID bootstrap: each replicate is a 2048-d matrix square root, 16 s at load 10
    common = ["run", "--suite", str(suite), "--inception-weights", str(standin_inception), "--quiet"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    done = torchrun([*common, "--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr
    (one,), (two,) = ([r for r in read_records(tmp_path / d / "results.jsonl").records if r["task"] == "recon"]
                      for d in ("one", "two"))
    assert {"standin_rfid", "standin_kid_mean", "standin_precision", "standin_recall"} <= set(two["metrics"])
    assert two["protocol"] == one["protocol"] and two["protocol"]["num_images"] == 5
    assert_same_numbers(two["metrics"], one["metrics"])


@pytest.mark.slow
@pytest.mark.metrics
def test_stats_and_fid_commands_under_torchrun_equal_one_process(tmp_path, standin_inception, capsys):
    """About 30 s on a quiet machine (90 s at load 10): `titok-bench stats --features` (rank 0 writes the file)
    and `titok-bench fid --json`, each at 2 processes against 1."""
    a, b = image_folder(tmp_path / "a", 5), tmp_path / "b"
    write_pngs(b, builtin_images("skimage", 40, 4, seed=0))
    stats = ["stats", str(a), "--image-size", "32", "--features", "--batch-size", "2", "--inception-weights",
             str(standin_inception), "--quiet"]
    assert main([*stats, "--out", str(tmp_path / "one.npz")]) == 0
    done = torchrun([*stats, "--out", str(tmp_path / "two.npz")])
    assert done.returncode == 0, done.stderr
    one, two = _npz(tmp_path / "one.npz"), _npz(tmp_path / "two.npz")
    assert set(one) == set(two)
    for k in one:
        if one[k].dtype.kind == "f":
            np.testing.assert_allclose(two[k], one[k], rtol=1e-6, atol=1e-9, err_msg=k)
        else:
            assert np.array_equal(two[k], one[k]), k
    fid = ["fid", str(a), str(b), "--batch-size", "2", "--inception-weights", str(standin_inception), "--json"]
    capsys.readouterr()
    assert main(fid) == 0
    ref = json.loads(capsys.readouterr().out)
    done = torchrun(fid)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.strip().splitlines()  # rank 0 alone prints
    got = json.loads(line)
    assert got["value"] == pytest.approx(ref["value"], rel=1e-6) and got["protocol"] == ref["protocol"]
