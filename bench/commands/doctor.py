"""`titok-bench doctor [SAMPLES] [--reference STATS]`: the stack, and a folder checked against the paper's protocol.

    titok-bench doctor                                   # torch, CUDA, GPU, NVML, metrics stack, Inception, caches
    titok-bench doctor out/p256/samples/titok_l32-seed0 --reference VIRTUAL_imagenet256_labeled.npz
    titok-bench doctor recon/ --expect 50000 --json
    titok-bench doctor titok_l32.npz                    # an ADM-format sample batch (export-npz, guided-diffusion)

Each finding says what it does to FID (bench/checks/diagnose.py). Exit status 0 when the folder follows the protocol
(warnings allowed), 1 when a check found a problem, 2 on bad input (a missing folder, an unreadable file).
"""

from __future__ import annotations

import argparse
import json

from bench.commands.argtypes import positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("doctor", help="the stack, and a sample/reconstruction folder against the paper protocol")
    p.add_argument("samples", nargs="?", default=None, help="a folder of samples (generation.json beside them) or "
                   "reconstructions, or an ADM-format sample .npz (export-npz); omit to report the stack only")
    p.add_argument("--reference", default=None, help="reference statistics (.npz) the folder is scored against")
    p.add_argument("--expect", type=positive_int, default=50_000,
                   help="the sample count the protocol asks for (default 50,000: the paper's; class balance "
                        "then means EXPECT / 1000 per ImageNet class)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from bench.checks.diagnose import Protocol, check_folder, check_sample_npz
    from bench.checks.stack import stack_report

    stack, inception_sha = stack_report()
    report = None
    if args.samples is not None:
        check = check_sample_npz if args.samples.endswith(".npz") else check_folder
        report = check(args.samples, Protocol(num_samples=args.expect), args.reference, inception_sha)
    problems = len(report.problems) if report else 0
    if args.json:
        findings = [{"check": f.check, "level": f.level, "message": f.message, "fid_effect": f.effect}
                    for f in (report.findings if report else [])]
        print(json.dumps({"stack": stack, "samples": args.samples, "findings": findings, "problems": problems}))
        return 1 if problems else 0
    print("stack")
    for line in stack:
        print(f"  {line}")
    if report is None:
        return 0
    print(f"\n{report.path}  (protocol: {args.expect:,} samples, class-balanced)")
    explained = set()
    for f in report.findings:
        print(f"  {f.level.upper() if f.level != 'ok' else 'ok':8s} {f.check}: {f.message}")
        if f.effect and f.check not in explained:
            explained.add(f.check)
            print(f"  {'':8s} what it does to FID: {f.effect}")
    warnings = sum(f.level == "warn" for f in report.findings)
    verdict = "follows the paper's protocol" if not problems else "does not follow the paper's protocol"
    print(f"\n{problems} problem(s), {warnings} warning(s): {report.path} {verdict}")
    return 1 if problems else 0
