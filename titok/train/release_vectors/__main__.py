"""`python -m titok.train.release_vectors --vectors DIR [--only FILE,...]`: PASS/FAIL per training vector."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from titok.train.release_vectors import run_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m titok.train.release_vectors", description=__doc__)
    parser.add_argument("--vectors", type=Path, required=True,
                        help="a recording of the release's training components (e.g. ../shared/parity/vectors-train)")
    parser.add_argument("--only", default=None, help="comma-separated file names from the folder's index.json")
    args = parser.parse_args(argv)
    if not (args.vectors / "index.json").is_file():
        print(f"error: {args.vectors}/index.json not found: --vectors takes a folder recorded by record_train.py",
              file=sys.stderr)
        return 2
    only = set(args.only.split(",")) if args.only else None
    results = run_all(args.vectors, only)
    for r in results:
        print(r.line())
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed}/{len(results)} passed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    raise SystemExit(main())
