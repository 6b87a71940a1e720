"""In-memory gFID under torchrun: 2 processes killed with SIGKILL part-way, then resumed, give the numbers and the
sample bytes of one unbroken process; a resume under another world size is refused.

The reference is a 1-process run of the same suite in this test (in this process, via `main`); the 2-process runs
are real `torchrun --standalone --nproc_per_node 2 -m bench run ...` subprocesses on gloo.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.records.store import read_records
from tests.test_gen_in_memory import gen_suite

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the ranks run one thread each

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("sampling_wall_s", "eval_wall_s", "peak_host_mb", "peak_device_mb")


def torchrun(args: list[str]) -> subprocess.Popen:
    """`torchrun --standalone --nproc_per_node 2 -m bench ARGS`, its output in one pipe."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TITOK_BENCH_DIST_TIMEOUT_S="60")
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "bench", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts each rank in a session of its own, so a process group kill of
    torchrun leaves the ranks running)."""
    parents = {}
    for d in Path("/proc").iterdir():
        try:
            parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [c for c, p in parents.items() if p == parent]
        found += kids
        todo += kids
    return found


def kill_all(run: subprocess.Popen) -> None:
    """SIGKILL torchrun and both ranks at once, as a lost machine would: nothing gets to clean up."""
    for pid in [*descendants(run.pid), run.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def done_batches(state: Path) -> list[int]:
    with np.load(state, allow_pickle=False) as z:
        return z["__done_batches__"].tolist()


@pytest.mark.slow
@pytest.mark.metrics
def test_two_processes_killed_and_resumed_score_what_one_process_does(tmp_path, standin_inception, capsys):
    # 24 samples in batches of 3: 8 batches, 4 per rank; each rank checkpoints after every batch.
    suite = gen_suite(tmp_path, standin_inception, n=24, batch=3, extra="checkpoint_every = 1\n")
    assert main(["run", "--suite", suite, "--out", str(tmp_path / "one"), "--quiet", "--save-images"]) == 0
    [one] = read_records(tmp_path / "one" / "results.jsonl").records

    out = tmp_path / "two"
    args = ["run", "--suite", suite, "--out", str(out), "--quiet"]
    run = torchrun(args)
    states = []
    deadline = time.monotonic() + 120
    while len(states) < 2 and run.poll() is None and time.monotonic() < deadline:
        states = sorted(out.glob("gen-state/*/rank*-of2.npz"))
        time.sleep(0.02)
    kill_all(run)
    log = run.communicate()[0]
    assert [p.name for p in states] == ["rank0-of2.npz", "rank1-of2.npz"], log
    assert not (out / "results.jsonl").exists(), "the run finished before the kill: nothing was resumed"
    before = {p.name: done_batches(p) for p in states}
    assert all(0 < len(d) < 4 for d in before.values()), before  # part-way on each rank
    assert set(before["rank0-of2.npz"]) <= {0, 2, 4, 6} and set(before["rank1-of2.npz"]) <= {1, 3, 5, 7}

    # Another world size can't continue these sums: refused, naming how to resume.
    assert main([*args]) == 2
    assert "under 2 process(es)" in capsys.readouterr().err

    # The resume also keeps the PNGs: the batches scored before the kill are sampled again for their files only.
    resumed = torchrun([*args, "--save-images"])
    log = resumed.communicate(timeout=180)[0]
    assert resumed.returncode == 0, log
    [two] = read_records(out / "results.jsonl").records  # one record, by rank 0
    assert two["env"]["world_size"] == 2 and two["protocol"]["num_fake"] == one["protocol"]["num_fake"] == 24
    for p in states:
        assert sorted(done_batches(p)) == ([0, 2, 4, 6] if p.name.startswith("rank0") else [1, 3, 5, 7])
    quality = {k: v for k, v in one["metrics"].items() if k not in TIMING}
    assert set(quality) == {k for k in two["metrics"] if k not in TIMING}
    for k, v in quality.items():  # float64 sums in another order: equal to rounding, not bitwise
        assert two["metrics"][k] == pytest.approx(v, rel=1e-6, abs=1e-12), k
    assert quality["standin_kid_mean"] > 0.01  # far from 0, where a slip would show
    # The same images, byte for byte, at either world size.
    pngs = {w: sorted((tmp_path / w / "samples" / "titok_tiny_bert-seed0").glob("*.png")) for w in ("one", "two")}
    assert [p.name for p in pngs["one"]] == [p.name for p in pngs["two"]] and len(pngs["one"]) == 24
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(pngs["one"], pngs["two"], strict=True))
