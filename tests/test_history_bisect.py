"""`history` orders a metric by commit; `bisect` finds a planted bad commit in a scratch repository.

The scratch repository carries its own tiny `bench/cli.py` (a stand-in harness whose `run` writes one speed record
from the commit's `speed.txt`), so bisect's default step, `python -m bench.cli run` inside the commit's worktree,
is exercised as it is in real use: each commit measured by its own code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.commands.history import build_history, plot_history, render_table
from bench.records.store import append_record, make_record, read_records
from bench.run.timing import iteration_summary

FAKE_HARNESS = '''
import argparse, json, subprocess, time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("command")
p.add_argument("--suite")
p.add_argument("--out")
p.add_argument("--set", action="append")
a = p.parse_args()
assert a.command == "run" and Path(a.suite).name == "slice.toml"
sec = float(Path("speed.txt").read_text())
loaded = Path("load.txt").is_file()  # planted: this commit is measured while other jobs hold the cores
values = [sec * f * (3.0 if loaded else 1.0) for f in (1.0, 1.01, 0.99, 1.0, 1.005)]
values.sort()
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
rec = {"schema_version": 1, "run_id": "r", "time": time.strftime("%Y-%m-%dT%H:%M:%S+0000"), "git_commit": commit,
       "model": "titok_tiny_vq", "weights_tag": "random", "task": "speed",
       "metrics": {"images_per_sec": 1 / values[2], "sec_per_batch": values[2]},
       "protocol": {"op": "decode", "batch_size": 1, "iters": 5},
       "env": {"device": "cpu", "device_name": "x", "cpu": "x", "threads": 2, "torch": "t"},
       "spreads": {"sec_per_batch": {"values": values, "n": 5, "min": values[0], "median": values[2],
                                     "max": values[-1]}},
       "machine": {"load_avg_1m": 6.0 if loaded else 0.1, "cores": 2, "loaded": loaded}}
Path(a.out).mkdir(parents=True, exist_ok=True)
with open(Path(a.out) / "results.jsonl", "a") as f:
    f.write(json.dumps(rec) + "\\n")
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def scratch_repo(tmp_path) -> tuple[Path, list[str]]:
    return make_scratch_repo(tmp_path)


def make_scratch_repo(tmp_path: Path, loaded_at: tuple[int, ...] = ()) -> tuple[Path, list[str]]:
    """Seven commits; the fourth (index 3) makes a batch 30% slower; commits in `loaded_at` are timed under load."""
    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "bench" / "__init__.py").write_text("")
    (repo / "bench" / "cli.py").write_text(FAKE_HARNESS)
    commits = []
    for i in range(7):
        (repo / "speed.txt").write_text("1.3" if i >= 3 else "1.0")
        (repo / "notes.txt").write_text(f"change {i}\n")
        (repo / "load.txt").unlink(missing_ok=True)
        if i in loaded_at:
            (repo / "load.txt").write_text("busy\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"change {i}")
        commits.append(git(repo, "rev-parse", "HEAD"))
    return repo, commits


def test_bisect_finds_the_planted_bad_commit(scratch_repo, tmp_path, capsys):
    repo, commits = scratch_repo
    suite = tmp_path / "slice.toml"
    suite.write_text("# the stand-in harness ignores it\n")
    head_before = git(repo, "rev-parse", "HEAD")
    assert main(["bisect", commits[0], commits[-1], "--suite", str(suite), "--metric", "images_per_sec",
                 "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert f"first bad commit: {commits[3]}" in out and "change 3" in out
    # The user's checkout is untouched: same HEAD and branch, no bisect in progress, no worktree left.
    assert git(repo, "rev-parse", "HEAD") == head_before and git(repo, "branch", "--show-current") == "main"
    assert not (repo / ".git" / "BISECT_LOG").exists() and len(git(repo, "worktree", "list").splitlines()) == 1


def test_bisect_with_a_custom_step_and_a_bad_that_is_not(scratch_repo, tmp_path, capsys):
    repo, commits = scratch_repo
    step = f"{sys.executable} -m bench.cli run --suite slice.toml --out {{out}}"
    assert main(["bisect", commits[0], commits[5], "--suite", "unused", "--metric", "images_per_sec",
                 "--repo", str(repo), "--run-command", step]) == 0
    assert f"first bad commit: {commits[3]}" in capsys.readouterr().out
    # BAD no slower than GOOD: nothing to bisect, said as an error.
    assert main(["bisect", commits[0], commits[2], "--suite", "unused", "--metric", "images_per_sec",
                 "--repo", str(repo), "--run-command", step]) == 2
    assert "does not regress" in capsys.readouterr().err


def test_a_loaded_step_is_skipped_not_judged(tmp_path, capsys):
    """The bad commit itself measured under load: bisect will not call it bad on that run, and says it cannot
    single out the first bad commit rather than name the wrong one."""
    repo, commits = make_scratch_repo(tmp_path, loaded_at=(3,))
    step = f"{sys.executable} -m bench.cli run --suite slice.toml --out {{out}}"
    assert main(["bisect", commits[0], commits[-1], "--suite", "unused", "--metric", "images_per_sec",
                 "--repo", str(repo), "--run-command", step]) == 1
    out = capsys.readouterr().out
    assert f"skip   {commits[3][:12]} machine loaded" in out and "no single first bad commit" in out
    assert "could be any of" in out and commits[3] in out.split("could be any of")[1]
    assert not any(line.startswith("first bad commit:") for line in out.splitlines())


def _speed_record(commit: str, when: str, ips: float) -> dict:
    sec = 1 / ips
    rec = make_record(run_id=commit, model="titok_l32", task="speed", commit=commit, env={"device_name": "x"},
                      metrics={"images_per_sec": ips, "sec_per_batch": sec},
                      protocol={"op": "decode", "batch_size": 1, "iters": 3},
                      spreads={"sec_per_batch": iteration_summary([sec * 0.99, sec, sec * 1.01])})
    rec["time"] = when
    return rec


def test_history_orders_by_commit_and_plots(scratch_repo, tmp_path, capsys):
    repo, commits = scratch_repo
    # Measured out of order (a rerun of an old commit last): git's order wins, parents first.
    path = tmp_path / "results.jsonl"
    for commit, when, ips in ((commits[4], "2026-11-28T10:00:00+0000", 7.7), (commits[1], "2026-11-28T11:00:00+0000",
                              10.0), (commits[2], "2026-11-28T12:00:00+0000", 10.1)):
        append_record(path, _speed_record(commit, when, ips))
    history = build_history(read_records(path).records, "images_per_sec", repo=repo)
    assert history.order == "git order" and history.commits == [commits[1], commits[2], commits[4]]
    table = render_table(history.series, "images_per_sec")
    lines = table.splitlines()
    assert [line.split()[0] for line in lines[2:]] == [c[:12] for c in (commits[1], commits[2], commits[4])]
    assert "REGRESSION" in lines[-1] and "REGRESSION" not in lines[-2]  # each step judged by compare's rule
    # Commits git does not know: the order they were first measured in.
    unknown = build_history(read_records(path).records, "images_per_sec", repo=tmp_path)
    assert unknown.commits == [commits[4], commits[1], commits[2]] and "first measured" in unknown.order
    png = plot_history(history, "images_per_sec", tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["history", str(path), "--metric", "images_per_sec", "--model", "titok_l32", "--repo", str(repo),
                 "--plot", str(tmp_path / "cli.png")]) == 0
    assert "across 3 commits (git order)" in capsys.readouterr().out and (tmp_path / "cli.png").is_file()
    assert main(["history", str(path), "--metric", "no_such_metric"]) == 2
