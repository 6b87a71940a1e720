"""`titok-bench compare NEW BASE`: judge a run against a baseline; exit 1 only on real regressions.

    titok-bench compare out/smoke/results.jsonl results/smoke-cpu-amd-epyc-2threads-torch2.14.1.jsonl

One line per judged measurement (one metric per kind), most severe first, after a summary line; unchanged ones
only with --all. The noise rule is in bench/records/compare.py: speed beyond both records' own spreads, "machine loaded"
and "environment differs" where those are the honest answer, FID within its recorded uncertainty not a
regression. A comparison that matched too little of the base is an error (exit 2) saying why.
"""

from __future__ import annotations

import sys

from bench.records.compare import (
    HOST_MEMORY_TOLERANCE,
    MEMORY_TOLERANCE,
    MIN_MATCHED_SHARE,
    SPEED_TOLERANCE,
    UNCHANGED,
    CoverageError,
    compare,
)
from bench.records.store import read_records
from titok.errors import InputError


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError(text)
    return value


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="judge NEW results against BASE; exit 1 on a regression, 2 if too little "
                       "matched")
    p.add_argument("new", nargs="+", help="results file(s) of the new run")
    p.add_argument("base", help="the baseline results file")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="relative change allowed for quality metrics (default 0.05)")
    p.add_argument("--speed-tolerance", type=float, default=SPEED_TOLERANCE,
                   help=f"how far beyond both records' spreads a speed change must go (default {SPEED_TOLERANCE})")
    p.add_argument("--memory-tolerance", type=float, default=None,
                   help=f"relative change allowed for peak memory (default {MEMORY_TOLERANCE} for a GPU's allocator "
                   f"peak, {HOST_MEMORY_TOLERANCE} for a CPU's peak resident set)")
    p.add_argument("--metric-tolerance", action="append", metavar="NAME=VALUE", help="per metric, e.g. psnr=0.01")
    p.add_argument("--min-matched", type=_share, default=MIN_MATCHED_SHARE,
                   help=f"share of base measurements that must match (default {MIN_MATCHED_SHARE})")
    p.add_argument("--all", action="store_true", help="also list unchanged measurements, and the base's older-"
                   "protocol records left out")
    p.set_defaults(func=run)


def parse_metric_tolerances(items: list[str] | None) -> dict[str, float]:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise InputError(f"--metric-tolerance wants NAME=NUMBER, got {item!r}")
    return out


def run(args) -> int:
    per_metric = parse_metric_tolerances(args.metric_tolerance)
    new, base = read_records(args.new), read_records(args.base)
    for p in new.problems + base.problems:
        print(f"skipped {p}", file=sys.stderr)
    rep = compare(new.records, base.records, args.tolerance, per_metric, args.speed_tolerance, args.memory_tolerance)
    why = rep.coverage_error(args.min_matched)
    if why:
        raise CoverageError(why)
    print(rep.summary())
    for row in rep.rows:
        if args.all or row.verdict != UNCHANGED:
            print(row.line())
    for s in rep.only_base:
        print(f"{'base only':<20} {s}")
    for s in rep.only_new:
        print(f"{'new only':<20} {s}")
    for s in rep.retired if args.all else ():
        print(f"{'older protocol':<20} {s}")
    return 1 if rep.regressions else 0
