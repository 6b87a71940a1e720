"""`titok-bench plot`: the figures of a results file, as PNG and SVG.

    titok-bench plot out/smoke/results.jsonl --out out/smoke/plots
    -> gfid_vs_throughput.{png,svg}  rfid_vs_tokens.{png,svg}  speed_by_options.{png,svg}

The same records make the tables (`titok-bench tables`) and `publish` draws both; see bench/records/plots.py for
what each figure shows and how measured and published points are told apart.
"""

from __future__ import annotations

import argparse
import sys

from titok.errors import InputError

FORMATS = ("png", "svg")  # what bench.records.plots writes; that module (and matplotlib) is imported only when drawing


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("plot", help="figures (gFID vs throughput, rFID vs tokens, speed per option) as PNG/SVG")
    p.add_argument("results", nargs="+", help="results.jsonl file(s)")
    p.add_argument("--out", required=True, help="folder for the figures")
    p.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS), help="default: png svg")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from bench.records.plots import write_plots
    from bench.records.store import read_records

    res = read_records(args.results)
    for problem in res.problems:
        print(f"skipped {problem}", file=sys.stderr)
    if not res.records:
        raise InputError(f"no readable records in {', '.join(args.results)}")
    for path in write_plots(res.records, args.out, tuple(args.format)):
        print(path)
    return 0
