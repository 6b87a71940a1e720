"""`titok-bench publish`: file a run's records under results/, named by suite and environment, with their tables.

    titok-bench publish out/smoke/results.jsonl --name smoke --into results [--replace]
    -> results/smoke-cpu-amd-epyc-2threads-torch2.14.1.jsonl   (appended: earlier commits' runs stay)
       results/smoke-cpu-amd-epyc-2threads-torch2.14.1/{quality,published,speed}.{md,tex,csv}, tables.md
       results/smoke-cpu-amd-epyc-2threads-torch2.14.1/{gfid_vs_throughput,rfid_vs_tokens,speed_by_options}.{png,svg}
       (tables and figures from the whole file, latest record per measurement)

The environment tag comes from the records themselves (CPU model and threads or GPU name, torch version), so numbers
from different machines never share a file and `compare` can pick a baseline by name. Records carry their commit,
and a file holds one record per measurement and commit: publishing the same run again adds nothing, publishing
another run of a commit already filed is refused, and `--replace` swaps that commit's records of the measurements
the new run took (rewriting the file atomically). Other commits' records are never touched: they are the history
(`titok-bench history`).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.records.store import append_record, measurement_key, read_records, rewrite_records
from bench.records.tables import write_tables
from bench.run.env import env_tag
from titok.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("publish", help="file records under results/<name>-<env>.jsonl and render their tables")
    p.add_argument("results", nargs="+", help="results.jsonl file(s) of finished runs")
    p.add_argument("--name", required=True, help="what was run, e.g. the suite name: smoke, fast-cpu")
    p.add_argument("--into", default="results", help="folder of committed results (default: results)")
    p.add_argument("--replace", action="store_true",
                   help="replace records of the same commit and measurement already filed (else refused)")
    p.set_defaults(func=run)


def _identity(rec: dict) -> tuple:
    """What makes a record the same record when a results file is published twice."""
    return rec["run_id"], rec["time"], rec["model"], rec["task"], str(rec["protocol"])


def _slot(rec: dict) -> tuple[str, str]:
    """A published file holds one record per (commit, measurement)."""
    return rec["git_commit"], measurement_key(rec)


@dataclass
class _Plan:
    target: Path
    filed: list[dict]  # what the file holds now
    new: list[dict]  # records not filed yet
    taken: list[dict]  # filed records of the same commit and measurement as a new one


def _plan(target: Path, records: list[dict], replace: bool) -> _Plan:
    filed = read_records(target).records if target.is_file() else []
    known = {_identity(r) for r in filed}
    new = [r for r in records if _identity(r) not in known]
    slots = {_slot(r) for r in new}
    if len(slots) < len(new):
        raise InputError(f"the records to publish into {target} hold one measurement of one commit more than once "
                         "(several runs of a commit given together); publish one run at a time")
    taken = [r for r in filed if _slot(r) in slots]
    if taken and not replace:
        commits = sorted({r["git_commit"] for r in taken})
        runs = sorted({r["run_id"] for r in taken})
        raise InputError(f"{target} already holds {len(taken)} of these measurements for commit "
                         f"{', '.join(c[:12] for c in commits)} (run {', '.join(runs)}); pass --replace to replace "
                         "them with this run's records")
    return _Plan(target, filed, new, taken)


def _apply(plan: _Plan) -> tuple[list[dict], str]:
    if plan.taken:
        slots = {_slot(r) for r in plan.new}
        kept = [r for r in plan.filed if _slot(r) not in slots]
        rewrite_records(plan.target, kept + plan.new)
        return kept + plan.new, f"{len(plan.new)} new records replacing {len(plan.taken)} of the same commit"
    for rec in plan.new:
        append_record(plan.target, rec)
    return plan.filed + plan.new, f"{len(plan.new)} new records"


def run(args) -> int:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", args.name):
        raise InputError(f"--name must be lower-case letters, digits, '.', '_' or '-', got {args.name!r}")
    res = read_records(args.results)
    for p in res.problems:
        print(f"skipped {p}", file=sys.stderr)
    if not res.records:
        raise InputError(f"no readable records in {', '.join(args.results)}")
    by_env: dict[str, list[dict]] = {}
    for rec in res.records:
        by_env.setdefault(env_tag(rec["env"]), []).append(rec)
    into = Path(args.into)
    # Every file is judged before any is written: a refusal leaves all of them as they were.
    plans = [_plan(into / f"{args.name}-{tag}.jsonl", records, args.replace) for tag, records in sorted(by_env.items())]
    for plan, records in zip(plans, [by_env[t] for t in sorted(by_env)], strict=True):
        all_records, what = _apply(plan)
        tables = write_tables(all_records, plan.target.with_suffix(""))
        from bench.records.plots import write_plots  # matplotlib is imported only by the commands that draw

        write_plots(all_records, tables[0].parent)  # the figures beside the tables, from the same records
        print(f"{plan.target}: {what} ({len(records) - len(plan.new)} already filed); tables in {tables[0].parent}")
    return 0
