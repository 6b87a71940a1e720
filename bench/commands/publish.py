"""`titok-bench publish`: file a run's records under results/, named by suite and environment, with their tables.

    titok-bench publish out/smoke/results.jsonl --name smoke --into results
    -> results/smoke-cpu-amd-epyc-2threads-torch2.14.1.jsonl   (appended: earlier runs of the suite and env stay)
       results/smoke-cpu-amd-epyc-2threads-torch2.14.1/{quality,published,speed}.{md,tex,csv}, tables.md
       results/smoke-cpu-amd-epyc-2threads-torch2.14.1/{gfid_vs_throughput,rfid_vs_tokens,speed_by_options}.{png,svg}
       (tables and figures from the whole file)

The environment tag comes from the records themselves (CPU model and threads or GPU name, torch version), so numbers
from different machines never share a file and `compare` can pick a baseline by name.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from bench.env import env_tag
from bench.records import append_record, read_records
from bench.tables import write_tables
from titok.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("publish", help="file records under results/<name>-<env>.jsonl and render their tables")
    p.add_argument("results", nargs="+", help="results.jsonl file(s) of finished runs")
    p.add_argument("--name", required=True, help="what was run, e.g. the suite name: smoke, fast-cpu")
    p.add_argument("--into", default="results", help="folder of committed results (default: results)")
    p.set_defaults(func=run)


def _identity(rec: dict) -> tuple:
    """What makes a record the same measurement when a results file is published twice."""
    return rec["run_id"], rec["time"], rec["model"], rec["task"], str(rec["protocol"])


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
    for tag, records in sorted(by_env.items()):
        target = into / f"{args.name}-{tag}.jsonl"
        filed = read_records(target).records if target.is_file() else []
        known = {_identity(r) for r in filed}
        new = [r for r in records if _identity(r) not in known]
        for rec in new:
            append_record(target, rec)
        tables = write_tables(filed + new, into / f"{args.name}-{tag}")
        from bench.plots import write_plots  # matplotlib is imported only by the commands that draw

        write_plots(filed + new, tables[0].parent)  # the figures beside the tables, from the same records
        print(f"{target}: {len(new)} new records ({len(records) - len(new)} already filed); "
              f"tables in {tables[0].parent}")
    return 0
