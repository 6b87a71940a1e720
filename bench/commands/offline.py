"""`--offline` for every command that may fetch released files: never touch the network, say what to put where.

The flag sets HF_HUB_OFFLINE=1 for the process (and the DataLoader workers it starts), the switch
huggingface_hub and titok.fetch both honour, so one setting covers hub files, release URLs and the Inception
weights alike; exporting HF_HUB_OFFLINE=1 in the shell does the same without the flag.
"""

from __future__ import annotations

import argparse
import os

from titok.fetch import OFFLINE_ENV

WEIGHTS_HELP = ("a weights file or model directory, or 'released' to fetch the published checkpoint into the cache "
                "on first use (docs/reproduce-paper.md 'Weights: fetched on first use'); default: random weights")
INCEPTION_HELP = ("torch-fidelity Inception weights (.pth), or 'released' to fetch torch-fidelity's file into the "
                  "cache (hash-checked); default: $TITOK_BENCH_INCEPTION_WEIGHTS or the cache")


def add_offline_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--offline", action="store_true",
                        help=f"never use the network (as {OFFLINE_ENV}=1): files not in the cache are an error "
                             "naming where to put them")


def apply_offline(args: argparse.Namespace) -> None:
    if getattr(args, "offline", False):
        os.environ[OFFLINE_ENV] = "1"
