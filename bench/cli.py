"""`titok-bench`: run benchmark suites, render tables, compare results, compute FID, generate, reconstruct.

    titok-bench run --suite smoke --out out/smoke          # the main job (CPU, no external files)
    titok-bench tables out/smoke/results.jsonl --out out/smoke/tables
    titok-bench compare NEW.jsonl BASE.jsonl --tolerance 0.05
    titok-bench fid FOLDER_A FOLDER_OR_STATS_B --inception-weights PATH
    titok-bench stats IMAGENET_VAL --out val256.npz --image-size 256 --inception-weights PATH
    titok-bench generate --model titok_l32 --num 8 --out samples/
    titok-bench reconstruct --model titok_l32 --input builtin:skimage --out recon/    # --input DIR keeps names
    titok-bench publish out/smoke/results.jsonl --name smoke --into results
    titok-bench list
Long commands report progress on stderr (a bar on a terminal, plain lines in a log); --quiet silences it.
Bad input (unknown presets or suite keys, missing or corrupt files, empty folders, checkpoints for another preset,
statistics of the wrong shape, non-finite values) is one message on stderr and exit status 2, never a traceback:
those are the `titok.errors.InputError`s, raised where the input is judged. Anything else is a bug of ours and
ends with its traceback and exit status 1.
Where images are read (`run`, `reconstruct`, `fid`), an unreadable file is skipped and counted, or fatal with --strict.
`run`, `fid`, `stats` and `generate` also run under torchrun, split over its ranks (docs/scale.md):
    torchrun --standalone --nproc_per_node 8 -m bench run --suite paper-256 --device cuda --out out/paper
Rank 0 prints, shows progress and writes every output; an error on any rank ends every rank, and rank 0 says which.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import sys
from pathlib import Path

import torch

from bench.commands import bisect as bisect_command
from bench.commands import compare as compare_command
from bench.commands import doctor as doctor_command
from bench.commands import export_npz as export_npz_command
from bench.commands import fid as fid_command
from bench.commands import history as history_command
from bench.commands import plot as plot_command
from bench.commands import publish as publish_command
from bench.commands import stats as stats_command
from bench.commands.argtypes import class_labels, output_folder, positive_int, shard
from bench.commands.offline import INCEPTION_HELP, WEIGHTS_HELP, add_offline_flag, apply_offline
from titok.errors import DataError, InputError
from titok.progress import track
from titok.train.distributed import DistContext

log = logging.getLogger("titok-bench")


def _device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but torch sees no CUDA device")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"--device {name!r}: {str(exc).splitlines()[0]}") from None


def _dist(args) -> DistContext:
    """This process's place among torchrun's ranks, as `main` joined it (rank 0 of 1 outside torchrun)."""
    from bench.run.tasks.common import single_process

    return getattr(args, "dist_context", None) or single_process(args.device)


def _report_skipped(what: str, count: int, total: int, kept_in: str = "counted in the record's protocol.skipped"
                    ) -> None:
    if count:
        print(f"titok-bench: skipped {count} unreadable images of {total} in {what} ({kept_in}; "
              "use --strict to make them an error)", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ run
def cmd_run(args) -> int:
    from bench.metrics.distributed import broadcast_from_main
    from bench.records.store import git_commit, new_run_id
    from bench.records.tables import write_tables
    from bench.run.env import run_environment
    from bench.run.suite import check_paths, load_suite, select_models
    from bench.run.tasks.common import RunContext, measured_on_main
    from bench.run.tasks.gen import run_gen
    from bench.run.tasks.recon import run_recon
    from bench.run.tasks.speed import run_speed
    from bench.run.tasks.stats import run_stats
    from bench.run.tasks.train_speed import run_train_speed

    suite = load_suite(args.suite, args.set or [], builtin_vars={"OUT_DIR": str(Path(args.out).expanduser())})
    if args.model:
        suite = select_models(suite, args.model)
    for r in suite.runs:
        if args.inception_weights:
            r.settings["inception_weights"] = args.inception_weights
        if args.strict:
            r.settings["strict"] = True
        if args.save_images:
            r.settings["save_images"] = True
    check_paths(suite)
    device = _device(args.device)
    out = output_folder(args.out)
    dist_ctx = _dist(args)
    ctx = RunContext(out, broadcast_from_main(new_run_id()), device, run_environment(device, dist_ctx.world_size),
                     git_commit(), progress=not args.quiet and dist_ctx.is_main, limit=args.limit, dist=dist_ctx)
    if ctx.is_main:
        (out / f"suite-{ctx.run_id}.resolved.json").write_text(json.dumps(
            {"source": suite.source, "device": str(device), "limit": args.limit, "world_size": dist_ctx.world_size,
             **suite.resolved}, indent=2))
    tasks = {"speed": measured_on_main(run_speed), "recon": run_recon, "gen": run_gen, "stats": run_stats,
             "train": measured_on_main(run_train_speed)}
    ranks = f" x {dist_ctx.world_size} ranks" if dist_ctx.distributed else ""
    print(f"suite {suite.name}: {len(suite.runs)} runs on {device}{ranks} -> {ctx.results_path}")
    for spec in track(suite.runs, f"suite {suite.name}", ctx.progress, unit="runs", every=True,
                      label=lambda spec: f"{spec.task} of " + (spec.models[0] if len(spec.models) == 1
                                                               else f"{len(spec.models)} models")):
        print(f"  {spec.task}: {', '.join(spec.models)}", flush=True)
        done = len(ctx.records)
        try:
            tasks[spec.task](spec, ctx)
        except Exception:
            if ctx.is_main:
                print(f"titok-bench run: stopped; {len(ctx.records)} complete records were written to "
                      f"{ctx.results_path}", file=sys.stderr)
            raise
        for r in ctx.records[done:] if ctx.is_main else ():
            _report_skipped(f"{r['protocol'].get('data')} ({r['model']})", r["protocol"].get("skipped", 0),
                            r["protocol"].get("num_images", 0) + r["protocol"].get("skipped", 0))
    if not ctx.is_main:
        return 0
    written = write_tables(ctx.records, out / "tables")
    errors = [r for r in ctx.records if r.get("error")]
    print(f"{len(ctx.records)} records ({len(errors)} with an error field) -> {ctx.results_path}")
    print(f"tables -> {written[0].parent}")
    return 0


# ------------------------------------------------------------------------------------------- tables
def cmd_tables(args) -> int:
    from bench.records.store import read_records
    from bench.records.tables import write_tables

    res = read_records(args.results)
    for p in res.problems:
        print(f"skipped {p}", file=sys.stderr)
    if not res.records:
        print(f"titok-bench tables: error: no readable records in {', '.join(args.results)}", file=sys.stderr)
        return 2
    for path in write_tables(res.records, args.out):
        print(path)
    return 0


# ---------------------------------------------------------------------------------------- generate
def cmd_generate(args) -> int:
    from bench.metrics.distributed import all_gather, barrier, together
    from bench.run.tasks.common import check_tokenizer_file, load_model, paired_tokenizer, weights_metadata
    from bench.run.tasks.gen import generate_samples, missing_samples

    dist_ctx = _dist(args)
    if dist_ctx.distributed and args.shard is not None:
        k, n = args.shard
        raise InputError(f"--shard is set by torchrun's ranks ({dist_ctx.world_size} here); drop --shard {k}/{n}, "
                         "or run one process per shard without torchrun")
    shard = (dist_ctx.rank, dist_ctx.world_size) if dist_ctx.distributed else args.shard or (0, 1)
    device = _device(args.device)
    model = args.model or weights_metadata(args.weights).get("titok_bench.preset")
    if not model:
        raise InputError("generate needs --model, or --weights of a generator trained here (which names its preset)")
    weights = {"generator": {model: args.weights}, "tokenizer": {}}
    gen, gen_tag = load_model("generator", model, weights, device)
    tok_name = paired_tokenizer(model, args.weights)  # a generator trained here names its own tokenizer
    check_tokenizer_file(args.weights, args.tokenizer_weights)
    # Released generator weights model the released tokenizer's codes: pair them unless told otherwise.
    weights["tokenizer"][tok_name] = args.tokenizer_weights or ("released" if args.weights == "released" else None)
    tok, tok_tag = load_model("tokenizer", tok_name, weights, device)
    labels = args.labels
    num = args.num or (len(labels) if labels else 8)
    out = output_folder(args.out)
    with together("generate"):  # one rank's failure (a full disk, a folder of another run) ends every rank
        made = generate_samples(gen, tok, out, num, args.seed, args.batch_size, shard,
                                progress=not args.quiet and dist_ctx.is_main, labels=labels,
                                weights={"generator": gen_tag, "tokenizer": tok_tag})
    made = sum(all_gather(made))
    barrier()  # every rank's files are on disk before rank 0 counts them
    missing = missing_samples(Path(args.out), num)
    print(f"wrote {made} new samples to {args.out} ({num - len(missing)} of {num} on disk"
          + (", the rest belong to other shards)" if missing else ")"))
    return 0


def cmd_reconstruct(args) -> int:
    from bench.records.output_names import names_in_reading_order
    from bench.run.tasks.common import load_model
    from titok.data.files import write_png_atomic
    from titok.data.images import iter_image_batches, open_dataset

    device = _device(args.device)
    tok, _ = load_model("tokenizer", args.model, {"tokenizer": {args.model: args.weights}}, device)
    data = open_dataset(args.input, tok.image_size, limit=args.limit, strict=args.strict)
    out = output_folder(args.out)
    names = names_in_reading_order(data)  # photos/cat.jpg -> recon/cat.png; built-in sets: 000000.png, ...
    i = 0
    for batch, _ in iter_image_batches(data, args.batch_size, not args.quiet, desc="reconstruct"):
        for img in tok.reconstruct(batch, batch_size=args.batch_size):
            path = out / next(names)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png_atomic(path, img)
            i += 1
    skipped = len(getattr(data, "skipped", []))
    if not i:
        raise DataError(f"{args.input}: none of the {len(data)} images could be read ({skipped} skipped)")
    _report_skipped(args.input, skipped, len(data), kept_in="each named in a warning above; no record is written")
    print(f"wrote {i} reconstructions to {out}" + (f" ({skipped} unreadable images skipped)" if skipped else ""))
    return 0


def cmd_list(args) -> int:
    from bench.run.suite import builtin_suites
    from titok.registry import get_spec, list_presets

    for kind in ("tokenizer", "generator"):
        print(f"{kind}s:")
        for name in list_presets(kind, include_test=args.all):
            spec = get_spec(kind, name)
            print(f"  {name:30s} {spec.family:10s} {spec.display_name}{'  [' + spec.notes + ']' if spec.notes else ''}")
    print("suites: " + ", ".join(builtin_suites()))
    return 0


# --------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="titok-bench", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a benchmark suite")
    p.add_argument("--suite", required=True, help="built-in suite name (see `list`) or a .toml file")
    p.add_argument("--out", required=True, help="output folder: results.jsonl, tables/, resolved suite")
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=positive_int, default=None, help="cap images/samples per run (quick looks)")
    p.add_argument("--model", action="append", metavar="PRESET",
                   help="run only this model's runs of the suite (repeatable), e.g. --model titok_l32")
    p.add_argument("--inception-weights", default=None, help=INCEPTION_HELP + " (for every metric of the suite)")
    add_offline_flag(p)
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error instead of skipped")
    p.add_argument("--save-images", action="store_true",
                   help="gen runs also write their samples as PNGs (scoring is in memory either way)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a suite value, e.g. --set defaults.iters=5 --set vars.IMAGENET_VAL=/data/val")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("tables", help="render tables (md, tex, csv) from results files")
    p.add_argument("results", nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_tables)

    compare_command.add_parser(sub)
    history_command.add_parser(sub)
    bisect_command.add_parser(sub)
    fid_command.add_parser(sub)
    publish_command.add_parser(sub)
    plot_command.add_parser(sub)
    stats_command.add_parser(sub)
    export_npz_command.add_parser(sub)
    doctor_command.add_parser(sub)

    p = sub.add_parser("generate", help="class-conditional samples to PNG (resumable, shardable)")
    p.add_argument("--model", default=None, help="generator preset (default: the one a trained --weights file names)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--labels", type=class_labels, help="comma-separated ImageNet class ids, cycled")
    # --num-samples: under torchrun `--num` is refused by torchrun's own parser (a prefix of its --numa-binding).
    p.add_argument("--num", "--num-samples", dest="num", type=positive_int, default=None,
                   help="number of samples (default: one per label, or 8); --num-samples under torchrun")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--tokenizer-weights", default=None,
                   help=WEIGHTS_HELP + "; with --weights released the paired tokenizer's released weights")
    add_offline_flag(p)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--shard", type=shard, default=None,
                   help="k/n: this process writes the batches j with j %% n == k (restart any shard to resume); "
                        "default 0/1; under torchrun each rank is one shard, so --shard is refused there")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("reconstruct", help="images through a tokenizer and back, to PNG")
    p.add_argument("--model", required=True, help="tokenizer preset")
    p.add_argument("--input", required=True, help="image folder or builtin:skimage / builtin:procedural")
    p.add_argument("--out", required=True)
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    add_offline_flag(p)
    p.add_argument("--limit", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error instead of skipped")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("list", help="list presets and built-in suites")
    p.add_argument("--all", action="store_true", help="include the tiny test presets")
    p.set_defaults(func=cmd_list)

    for command in sub.choices.values():  # on every subcommand, so it goes where users type it: `run --quiet`
        command.add_argument("-q", "--quiet", action="store_true",
                             help="no progress on stderr (a live bar on a terminal, one line per block in a log)")
    return parser


# Commands that run under torchrun, split over its ranks; the others are single-process tools.
DISTRIBUTED = ("run", "fid", "stats", "generate")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # force: this process's stderr now, not a stream an earlier configuration bound (titok-train's, or a caller's)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s",
                        force=True)
    apply_offline(args)
    if args.command in DISTRIBUTED:
        return _run_distributed(args)
    return _run(args)


def _run(args, quiet_errors: bool = False) -> int:
    """The command; bad input is one line on stderr and exit status 2 (`quiet_errors`: exit status only)."""
    from bench.metrics.distributed import RankFailure

    try:
        status = args.func(args)
        sys.stdout.flush()  # a reader that left early (`list | head`) is met here, not at interpreter exit
        return status
    except InputError as exc:  # only bad input: a bug of ours keeps its traceback (exit 1)
        if not quiet_errors:
            print(f"titok-bench {args.command}: error: {exc}", file=sys.stderr)
        _rank_0_has_spoken(exc)
        return 2
    except RankFailure as exc:
        if exc.__cause__ is not None and not isinstance(exc.__cause__, InputError):
            raise  # this rank's own bug: its traceback is printed here, the one place it can be read
        if not quiet_errors:  # another rank's bug: that rank prints its traceback; here, which rank and what
            print(f"titok-bench {args.command}: error: {exc}", file=sys.stderr)
        _rank_0_has_spoken(exc)
        return 1
    except BrokenPipeError:
        if not _stdout_reader_gone():  # another pipe broke (a worker, a socket): a bug, with its traceback
            raise
        return _reader_left()


def _rank_0_has_spoken(exc: Exception) -> None:
    """After an error every rank agreed on (distributed.together), meet once more: torchrun stops the other
    ranks as soon as one exits with an error, which could cut rank 0 off before its message is out."""
    from bench.metrics.distributed import RankFailure, barrier

    if isinstance(exc, RankFailure):
        with contextlib.suppress(Exception):  # a rank gone meanwhile: nothing more to wait for
            barrier()


def _run_distributed(args) -> int:
    """A command that torchrun may have started N times: join the process group (a no-op outside torchrun), run,
    leave it. Rank 0 speaks for the run: the other ranks print nothing to stdout, log errors only, and leave the
    error message to rank 0, which names every failed rank (bench.metrics.distributed.together). A rank's own bug still
    prints its traceback there, the one place it can be read."""
    from bench.metrics.distributed import launched, start, stop

    if not launched():
        return _run(args)
    try:
        _device(args.device)  # "cuda" on a machine without one: the same message as outside torchrun
        dist_ctx = start(args.device)
    except InputError as exc:
        print(f"titok-bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    args.dist_context, args.device = dist_ctx, str(dist_ctx.device)
    try:
        if dist_ctx.is_main:
            return _run(args)
        logging.getLogger().setLevel(logging.ERROR)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            return _run(args, quiet_errors=True)
    finally:
        stop(dist_ctx)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports an error on its writing end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (captured in-process) or no poll
        return False


def _reader_left() -> int:
    """stdout's reader closed the pipe (`titok-bench list --all | head`): stop quietly, as `yes | head` does.

    Python would otherwise print a traceback and, at exit, a second error while flushing what is left, so stdout
    is pointed at /dev/null first. The status is the shell's for a process ended by SIGPIPE (128 + 13).
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
