"""`titok-bench bisect GOOD BAD`: find the commit that moved a metric, with `git bisect`, a suite run per step
and `compare`'s rule as the judge.

    titok-bench bisect v1.0 HEAD --suite my-slice.toml --metric images_per_sec --model titok_l32

GOOD is measured first and is the baseline of every step; BAD is measured next and must regress against it
(else there is nothing to find, exit 2). Then `git bisect` picks commits and each is run and judged: a
regression (or a measurement that fails now) marks it bad, no significant change good, and a verdict the rule
will not give ("machine loaded", "environment differs", the run itself failing or measuring nothing) skips it,
so load cannot send the search the wrong way. Everything happens in a scratch worktree (`git worktree add`),
which is removed at the end: the user's checkout, branch and bisect state are never touched.

A step runs the commit's own harness, `python -m bench.cli run --suite SUITE --out DIR [--set ...]` in that
worktree (so each commit is measured by its own code). `--run-command` replaces it with any shell command, run
in the worktree, with `{out}` (the folder whose results.jsonl is read) and `{suite}` filled in.

Exit status: 0 with the first bad commit named; 1 when skipped commits leave git more than one candidate (it
lists them; rerun on a quiet machine); 2 for bad input (unknown commits, GOOD not before BAD, a BAD that does
not regress).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.records.compare import FAILS_NOW, IMPROVED, REGRESSION, SPEED_TOLERANCE, UNCHANGED, Row, compare
from bench.records.rules import rule_for
from bench.records.store import read_records
from titok.errors import InputError

GOOD, BAD, SKIP = "good", "bad", "skip"
ONLY_SKIPPED = "only 'skip'ped commits left"


def add_parser(sub) -> None:
    p = sub.add_parser("bisect", help="find the commit that moved a metric (git bisect + suite run + compare)")
    p.add_argument("good", help="a commit where the metric was fine")
    p.add_argument("bad", help="a later commit where it regressed")
    p.add_argument("--suite", required=True, help="suite to run at each commit (keep it small: a slice)")
    p.add_argument("--metric", required=True, help="the metric that moved, e.g. images_per_sec, standin_rfid")
    p.add_argument("--model", action="append", help="only this model's records are judged (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="passed to `run`")
    p.add_argument("--repo", default=".", help="the git repository (default: .)")
    p.add_argument("--run-command", default=None,
                   help="shell command for one step instead of `titok-bench run`, e.g. 'python measure.py {out}'")
    p.add_argument("--tolerance", type=float, default=0.05, help="as in compare")
    p.add_argument("--speed-tolerance", type=float, default=SPEED_TOLERANCE, help="as in compare")
    p.set_defaults(func=run)


@dataclass
class Step:
    commit: str
    verdict: str  # good | bad | skip
    why: str


def _git(repo: Path, *args: str, check: bool = True) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=600)
    if check and out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {out.stderr.strip()}")
    return out.stdout.strip()


def _resolve(repo: Path, rev: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", f"{rev}^{{commit}}"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise InputError(f"{rev!r} is not a commit of the repository {repo}")
    return out.stdout.strip()


class Runner:
    """Runs one suite measurement of a checked-out commit and returns its records."""

    def __init__(self, worktree: Path, runs_dir: Path, suite: str, sets: list[str], command: str | None):
        self.worktree, self.runs_dir, self.command = worktree, runs_dir, command
        path = Path(suite).expanduser()
        self.suite = str(path.resolve()) if path.suffix == ".toml" or path.exists() else suite  # or a built-in name
        self.sets = sets

    def __call__(self, commit: str) -> tuple[list[dict], str]:
        out = self.runs_dir / commit[:12]
        if self.command:
            cmd = self.command.format(out=shlex.quote(str(out)), suite=shlex.quote(self.suite))
            proc = subprocess.run(cmd, shell=True, cwd=self.worktree, capture_output=True, text=True)
        else:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [str(self.worktree), *filter(None, [os.environ.get("PYTHONPATH")])]))
            args = [sys.executable, "-m", "bench.cli", "run", "--suite", self.suite, "--out", str(out)]
            args += [a for s in self.sets for a in ("--set", s)]
            proc = subprocess.run(args, cwd=self.worktree, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return [], f"the run failed (exit {proc.returncode}: {tail[0][:200]})"
        results = out / "results.jsonl"
        if not results.is_file():
            return [], f"the run wrote no {results}"
        return read_records(results).records, ""


def judge(new: list[dict], good: list[dict], metric: str, models: list[str] | None, tolerance: float,
          speed_tolerance: float) -> tuple[str, str]:
    """(good | bad | skip, why) of a run against the GOOD commit's records, by `compare`'s rule on one metric."""
    def pick(recs):
        return [r for r in recs if not models or r["model"] in models]

    new, good = pick(new), pick(good)
    rep = compare(new, good, tolerance, speed_tolerance=speed_tolerance)
    rows: list[Row] = [r for r in rep.rows if r.metric == metric or r.verdict == FAILS_NOW]
    bad = [r for r in rows if r.verdict in (REGRESSION, FAILS_NOW)]
    if bad:
        return BAD, bad[0].line()
    unsure = [r for r in rows if r.verdict not in (UNCHANGED, IMPROVED)]
    if unsure:
        return SKIP, unsure[0].line()
    if not rows:
        return SKIP, f"no measurement of {metric} matched the GOOD commit's"
    return GOOD, f"{len(rows)} measurements of {metric} within the rule"


def bisect(repo: str | Path, good: str, bad: str, runner_args: dict, metric: str, models: list[str] | None = None,
           tolerance: float = 0.05, speed_tolerance: float = SPEED_TOLERANCE,
           log=print) -> tuple[str | None, list[Step]]:
    """The first bad commit (None if git could not single one out, e.g. only skipped commits left) and the steps."""
    if rule_for(metric) is None or rule_for(metric).direction == 0:
        raise InputError(f"metric {metric!r} has no direction to judge (see bench/records/rules.py)")
    repo = Path(_git(Path(repo), "rev-parse", "--show-toplevel"))
    good_sha, bad_sha = _resolve(repo, good), _resolve(repo, bad)
    if subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", good_sha, bad_sha],
                      capture_output=True, timeout=60).returncode != 0:
        raise InputError(f"GOOD {good} is not an ancestor of BAD {bad}")
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="titok-bisect-") as tmp:
        worktree = Path(tmp) / "worktree"
        _git(repo, "worktree", "add", "--detach", "-q", str(worktree), good_sha)
        try:
            runner = Runner(worktree, Path(tmp) / "runs", **runner_args)
            baseline, failure = runner(good_sha)
            if failure or not [r for r in baseline if metric in r["metrics"]]:
                raise InputError(f"GOOD {good} gave no measurement of {metric}: {failure or 'not in its records'}")
            log(f"good   {good_sha[:12]} (GOOD, the baseline)")
            if any((r.get("machine") or {}).get("loaded") for r in baseline):
                log("warning: GOOD was timed on a loaded machine; a slowdown smaller than the load's may pass as good")
            _git(worktree, "checkout", "--detach", "-q", bad_sha)
            verdict, why = _measure_and_judge(runner, bad_sha, baseline, metric, models, tolerance, speed_tolerance)
            log(f"{verdict:<6} {bad_sha[:12]} (BAD) {why}")
            if verdict != BAD:
                raise InputError(f"BAD {bad} does not regress on {metric} against GOOD {good} ({verdict}: {why}); "
                                 "nothing to bisect")
            out = _git(worktree, "bisect", "start", bad_sha, good_sha)
            while True:
                first = _first_bad(out)
                if ONLY_SKIPPED in out:
                    log(out.strip())  # git names the commits the first bad one could be
                if first or ONLY_SKIPPED in out:
                    return first, steps
                commit = _git(worktree, "rev-parse", "HEAD")
                verdict, why = _measure_and_judge(runner, commit, baseline, metric, models, tolerance,
                                                  speed_tolerance)
                steps.append(Step(commit, verdict, why))
                log(f"{verdict:<6} {commit[:12]} {why}")
                out = _bisect_step(worktree, verdict)
        finally:
            _git(worktree, "bisect", "reset", "-q", check=False)
            _git(repo, "worktree", "remove", "--force", str(worktree), check=False)


def _measure_and_judge(runner, commit, baseline, metric, models, tolerance, speed_tolerance) -> tuple[str, str]:
    records, failure = runner(commit)
    if failure:
        return SKIP, failure
    return judge(records, baseline, metric, models, tolerance, speed_tolerance)


def _bisect_step(worktree: Path, verdict: str) -> str:
    """Tell git the verdict; its answer. git exits non-zero when only skipped commits are left: an answer too."""
    out = subprocess.run(["git", "-C", str(worktree), "bisect", verdict], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0 and ONLY_SKIPPED not in out.stdout:
        raise RuntimeError(f"git bisect {verdict} failed in {worktree}: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def _first_bad(git_output: str) -> str | None:
    for line in git_output.splitlines():
        if line.endswith("is the first bad commit"):
            return line.split()[0]
    return None


def run(args) -> int:
    first, steps = bisect(args.repo, args.good, args.bad,
                          {"suite": args.suite, "sets": args.set, "command": args.run_command},
                          args.metric, args.model, args.tolerance, args.speed_tolerance)
    if first is None:
        print(f"no single first bad commit: {sum(s.verdict == SKIP for s in steps)} commits could not be judged "
              "(see the skip lines above); rerun on a quiet machine")
        return 1
    subject = _git(Path(args.repo), "log", "-1", "--format=%h %s", first)
    print(f"first bad commit: {first}\n  {subject}")
    return 0
