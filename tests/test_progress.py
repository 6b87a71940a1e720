"""Progress in every log: plain lines (what, how far, elapsed, ETA) when stderr is not a terminal, a live bar when it
is, nothing with --quiet, and stdout left to the records and results either way."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from titok.progress import INTERVAL_ENV, Progress, track

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(?P<what>.+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\S+) \((?P<pct>\d+)%\).*, elapsed [\d:]+"
                  r"(, ETA [\d:]+|, done)$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def cli(*args: str, interval: str = "0") -> subprocess.CompletedProcess:
    """`titok-bench ARGS` in a child process whose stdout and stderr are pipes, as under CI, tox or `2> log`."""
    env = {**os.environ, INTERVAL_ENV: interval, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


# ------------------------------------------------------------------------------------------------ the class
def test_coarse_work_prints_one_line_per_step_with_eta():
    log = io.StringIO()
    with Progress(3, "speed (tokenizers)", "measurements", stream=log, every=True) as p:
        for name in ("a", "b", "c"):
            p.update(1, item=f"{name} encode: 1.5 img/s")
    lines = log.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("speed (tokenizers): 1/3 measurements (33%) a encode: 1.5 img/s, elapsed ")
    assert all(LINE.match(line) for line in lines), lines
    assert "ETA" in lines[1]


def test_fine_work_is_throttled_then_says_done(monkeypatch):
    log = io.StringIO()
    monkeypatch.setenv(INTERVAL_ENV, "3600")
    with Progress(500, "inception", "img", stream=log) as p:
        for _ in range(500):
            p.update(1)
    assert log.getvalue() == "", "a block shorter than the interval must not print 500 lines"
    monkeypatch.setenv(INTERVAL_ENV, "0")
    with Progress(4, "inception", "img", stream=log) as p:
        for _ in range(4):
            p.update(1)
    lines = log.getvalue().splitlines()
    assert len(lines) == 4 and all(LINE.match(x) for x in lines), lines
    assert "ETA" in lines[0] and lines[-1].startswith("inception: 4/4 img (100%), elapsed")
    assert lines[-1].endswith("done")


def test_terminal_gets_a_bar_not_lines():
    term = Terminal()
    with Progress(4, "reconstruct", "img", stream=term) as p:
        for _ in range(4):
            p.update(1)
    out = term.getvalue()
    assert "\r" in out and "4/4" in out and "elapsed" not in out


def test_track_names_each_finished_item(capsys):
    assert list(track(["x", "y"], "suite s", True, unit="runs", every=True, label=str.upper)) == ["x", "y"]
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("suite s: 1/2 runs (50%) X, elapsed") and err[1].startswith("suite s: 2/2 runs (100%) Y")


def test_disabled_prints_nothing():
    for stream in (io.StringIO(), Terminal()):
        with Progress(4, "x", "img", enabled=False, stream=stream, every=True) as p:
            p.update(4)
        assert stream.getvalue() == ""


# ------------------------------------------------------------------------------------ through the command line
def test_reconstruct_logs_progress_lines_and_keeps_stdout_clean(tmp_path):
    proc = cli("reconstruct", "--model", "titok_tiny_vq", "--input", "builtin:procedural", "--limit", "4",
               "--batch-size", "2", "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote 4 reconstructions to {tmp_path / 'r'}"
    lines = [x for x in proc.stderr.splitlines() if x.startswith("reconstruct: ")]
    assert [LINE.match(x)["done"] for x in lines] == ["2", "4"], proc.stderr
    assert "ETA" in lines[0] and lines[-1].endswith("done")
    assert "RANDOM weights" in proc.stderr  # no --weights: said, once
    quiet = cli("reconstruct", "--model", "titok_tiny_vq", "--input", "builtin:procedural", "--limit", "4",
                "--batch-size", "2", "--out", str(tmp_path / "q"), "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == proc.stdout.replace("/r", "/q")
    assert "elapsed" not in quiet.stderr and "RANDOM weights" in quiet.stderr  # quiet silences progress, not warnings


def test_run_logs_one_line_per_measurement_and_per_suite_run(tmp_path):
    suite = tmp_path / "suite.toml"
    suite.write_text('[suite]\nname = "logged"\n[defaults]\niters = 1\nwarmup = 0\nbatch_sizes = [1, 2]\n'
                     '[[run]]\ntask = "speed"\nmodels = ["titok_tiny_vq"]\nops = ["encode", "decode"]\n'
                     '[[run]]\ntask = "recon"\nmodels = ["titok_tiny_vq"]\ndata = "builtin:procedural"\nlimit = 2\n'
                     'metrics = ["psnr"]\n')
    proc = cli("run", "--suite", str(suite), "--out", str(tmp_path / "out"), interval="3600")
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if LINE.match(x)]
    speed = [x for x in lines if x.startswith("speed (tokenizers): ")]
    assert len(speed) == 4 and "4/4" in speed[-1] and "img/s" in speed[0] and "ETA" in speed[0], proc.stderr
    assert any(x.startswith("recon: 1/1 models (100%) titok_tiny_vq: psnr") for x in lines), proc.stderr
    suite_lines = [x for x in lines if x.startswith("suite logged: ")]
    assert [LINE.match(x)["done"] for x in suite_lines] == ["1", "2"], proc.stderr
    assert "speed of titok_tiny_vq" in suite_lines[0] and "recon of titok_tiny_vq" in suite_lines[1]
    assert "elapsed" not in proc.stdout  # stdout: the run's summary lines only


def test_list_into_a_closed_pipe_ends_quietly():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "list", "--all"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"tokenizers")
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141)  # 141: ended by the closed pipe, as `yes | head` is
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_broken_pipe_elsewhere_is_a_bug_with_its_traceback(monkeypatch):
    import bench.cli

    def broken(args):
        raise BrokenPipeError("a worker's pipe")  # stdout is fine: this must not pass for `| head`

    monkeypatch.setattr(bench.cli, "cmd_list", broken)
    with pytest.raises(BrokenPipeError):
        bench.cli.main(["list"])


@pytest.mark.parametrize("argv", [["fid", "a", "b"], ["stats", "x", "--out", "y"], ["generate", "--model", "m",
                                                                                      "--out", "o"]])
def test_every_long_command_takes_quiet(argv):
    from bench.cli import build_parser

    assert build_parser().parse_args([*argv, "--quiet"]).quiet
