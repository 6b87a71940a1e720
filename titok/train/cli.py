"""`titok-train`: train TiTok tokenizers (two-stage or single-stage) and generators, alone or under torchrun.

Every setting is a `--section.key=value` override of titok/train/config.py's TrainConfig.

    titok-train --model.task=single_stage --model.preset=titok_tiny_vq --run.out=runs/tiny --schedule.steps=300
    titok-train --model.task=proxy_codes --model.preset=titok_l32 --model.teacher_weights=maskgit-vqgan.bin \
                --data.source=/data/imagenet/train --optim.batch_size=1024 --run.out=runs/l32-stage1
    titok-train --model.task=generator --model.preset=titok_l32 --model.tokenizer_weights=runs/l32/ema.safetensors \
                --data.tokens=runs/l32/tokens.safetensors ...      # pretokenizes into the file if it is missing
    torchrun --nproc_per_node 8 -m titok.train.cli ...                # same global batch, split over 8 processes
    titok-train --resume --run.out=runs/tiny ...                       # continue from the newest checkpoint
    titok-train pretokenize --tokenizer-weights TOK.safetensors --source DIR --out TOKENS.safetensors
    titok-train --list-recipes                                         # the release's recipes, one per model/stage
    titok-train --recipe titok_l32_stage2 --model.init_weights=... --print-config   # a recipe + overrides, resolved
    titok-train --recipe titok_l32_stage1 --estimate --gpu H100        # FLOPs per step and GPU-hours

Bad input (unknown preset or key, wrong type, missing folder or weights file) is one message on stderr and exit
status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from titok.errors import ConfigError, InputError
from titok.train.config import TrainConfig, apply_overrides, load_config


def split_overrides(rest: list[str]) -> list[str]:
    """['--optim.lr=1e-3', '--run.out', 'x'] -> ['optim.lr=1e-3', 'run.out=x']; anything else is an error."""
    out, i = [], 0
    while i < len(rest):
        arg = rest[i]
        if not arg.startswith("--") or "." not in arg.split("=", 1)[0]:
            raise ConfigError(f"unexpected argument {arg!r}; settings are given as --section.key=value")
        if "=" in arg:
            out.append(arg[2:])
        elif i + 1 < len(rest):
            out.append(f"{arg[2:]}={rest[i + 1]}")
            i += 1
        else:
            raise ConfigError(f"{arg} needs a value")
        i += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="titok-train", description=__doc__.split("\n")[0],
                                epilog="settings: --section.key=value with section one of model, data, optim, "
                                       "schedule, loss, run, ckpt, watch (see --print-config); "
                                       "`titok-train pretokenize --help` for the token cache")
    p.add_argument("--config", help="start from this config.json (a previous run's) before the overrides")
    p.add_argument("--recipe", help="start from the release's recipe NAME (see --list-recipes) before the overrides")
    p.add_argument("--list-recipes", action="store_true",
                   help="list the recipes (the release's, and our tiny_cpu) and exit")
    p.add_argument("--estimate", action="store_true", help="print FLOPs per step and GPU-hours of the config and exit")
    p.add_argument("--gpu", default="H100", help="--estimate: the GPU (H100, H100-PCIe, H200, A100)")
    p.add_argument("--utilisation", type=float, default=0.4,
                   help="--estimate: the fraction of the GPU's dense peak assumed (default 0.4)")
    p.add_argument("--num-gpus", type=int, default=8, help="--estimate: GPUs for the wall-clock line (default 8)")
    p.add_argument("--resume", action="store_true", help="continue from run.out/checkpoint.pt")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rank = int(os.environ.get("RANK", "0"))
    if argv[:1] == ["pretokenize"]:
        from titok.train import pretokenize_cli

        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s", force=True)
        return pretokenize_cli.main(argv[1:])
    args, rest = build_parser().parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s", force=True)
    from titok.train import recipes
    from titok.train.loop import preflight, train

    try:
        if args.list_recipes:
            for name in recipes.list_recipes():
                print(f"{name:24s} {recipes.describe(name)}")
            return 0
        if args.config and args.recipe:
            raise ConfigError("give --config or --recipe, not both (overrides go on top of either)")
        config = load_config(args.config) if args.config else TrainConfig()
        if args.recipe:
            config = recipes.load_recipe(args.recipe, config)
        config = apply_overrides(config, split_overrides(rest))
        if args.print_config:
            print(json.dumps(config.to_dict(), indent=2))
            return 0
        if args.estimate:
            from titok.train.estimate import GPUS, estimate, report

            if args.gpu not in GPUS:
                raise ConfigError(f"--gpu {args.gpu!r}: no peak listed; known GPUs: {', '.join(GPUS)}")
            if not 0 < args.utilisation <= 1 or args.num_gpus < 1:
                raise ConfigError("--utilisation must lie in (0, 1] and --num-gpus be >= 1")
            print(report(estimate(config), args.gpu, args.utilisation, args.num_gpus,
                         args.recipe or config.model.preset))
            return 0
        preflight(config, args.resume)
        result = train(config, resume=args.resume)
    except InputError as exc:  # only bad input: a bug of ours keeps its traceback (exit 1)
        print(f"titok-train: {exc}", file=sys.stderr)
        return 2
    if rank == 0:
        print(f"trained {result.step} steps -> {result.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
