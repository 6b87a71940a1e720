"""Speed and memory: images/sec of tokenizer encode/decode, generator token sampling and end-to-end
generation (sample + decode), per batch size, precision and inference-option variant, with peak memory
(bench/run/timing.py), and counted FLOPs per image with the achieved TFLOP/s and fraction of the device's peak
(bench/run/flops.py). bf16 runs through `InferenceOptions.precision` (bf16 autocast inside the heavy methods, on CPU
too; fp16 stays CUDA-only autocast around the call); a variant `{"precision": "bf16"}` beside `{}` times bf16
against fp32 interleaved in one run. Every record's `precision` says what it computed in. Each option variant is its own
record, timed in rounds interleaved with the other variants,
so every fast-path gain is a ratio measured in one run against the reference path (`options = [{...}, {}]` in a
suite; see bench/run/suites/fast-cpu.toml). Every record keeps its per-iteration times (`spreads.sec_per_batch`) and
the machine's state (`machine`, bench/run/machine.py); a run on a loaded machine warns, and `compare` reads both.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import torch

from bench.run.flops import count_flops, utilisation_metrics
from bench.run.machine import machine_state, warn_if_loaded, worst_of
from bench.run.suite import OPS, RunSpec
from bench.run.tasks.common import PRECISIONS, RunContext, free, load_model, paired_tokenizer, parameter_millions
from bench.run.timing import measure_variants_with_backoff
from titok.contract import autocast_context
from titok.errors import NotSupportedError
from titok.inference import PRECISIONS as OPTION_PRECISIONS
from titok.inference import InferenceOptions, apply_inference_options, describe
from titok.progress import Progress, number

log = logging.getLogger(__name__)


def _images(n: int, size: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g).to(device)


def _tokenizer_op(tok, op: str, device, dtype):
    def make(bs: int):
        x = _images(bs, tok.image_size, device)
        with torch.no_grad(), autocast_context(device, dtype):
            codes = tok.encode(x)

        def encode():
            with torch.no_grad(), autocast_context(device, dtype):
                return tok.encode(x)

        def decode():
            with torch.no_grad(), autocast_context(device, dtype):
                return tok.decode(codes)

        return encode if op == "encode" else decode
    return make


def _generator_op(gen, tok, op: str, device, dtype, sampling: dict):
    def make(bs: int):
        labels = torch.arange(bs, device=device) % gen.num_classes
        seeds = list(range(bs))

        def sample():
            with torch.no_grad(), autocast_context(device, dtype):
                return gen.generate(labels, seeds=seeds, **sampling)

        def generate():
            with torch.no_grad(), autocast_context(device, dtype):
                return tok.decode(gen.generate(labels, seeds=seeds, **sampling))

        return sample if op == "sample" else generate
    return make


def _flops_per_image(make, options: InferenceOptions, cache: dict, key: tuple) -> float | None:
    """One image's counted FLOPs. Compiled variants compute what the eager ones do: reuse their count."""
    eager_key = (*key, dataclasses.replace(options, compile=False, cuda_graphs=False))
    if eager_key not in cache:
        if options.compile or options.cuda_graphs:
            return None  # counting would trace the compiled graph again; measure an eager variant first
        try:
            cache[eager_key] = float(count_flops(make(1)))
        except Exception as exc:  # the count is extra information; its failure must not lose the timing
            log.warning("could not count FLOPs of %s: %s", key, exc)
            cache[eager_key] = None
    return cache[eager_key]


def _emit(ctx: RunContext, preset: str, tag: str, protocol: dict, metrics: dict | None = None,
          error: str | None = None, **extra) -> None:
    ctx.emit(model=preset, task="speed", metrics=metrics or {}, protocol=protocol, weights_tag=tag, error=error,
             **extra)


def in_precision(options: InferenceOptions, precision: str) -> tuple[InferenceOptions, str]:
    """(options to run, precision to record) for one suite precision: bf16 goes into the options (the model's
    own autocast), fp16 stays an autocast around the call; a variant that asks for bf16 itself is recorded so."""
    if precision in OPTION_PRECISIONS and precision != "fp32":
        options = dataclasses.replace(options, precision=precision)
    return options, (options.precision if options.precision != "fp32" else precision)


def options_protocol(options: InferenceOptions) -> dict:
    """The options as records keep them: precision is the protocol's own `precision` field, not an option (so
    records of runs before the option existed keep their measurement keys)."""
    kept = options.to_dict()
    kept.pop("precision", None)
    return {"options": kept, "options_label": describe(dataclasses.replace(options, precision="fp32"))}


def _apply(models, options: InferenceOptions):
    def switch():
        for m in models:
            apply_inference_options(m, options)
    return switch


def run_speed(spec: RunSpec, ctx: RunContext) -> None:
    s = spec.settings
    kind = s["kind"]
    ops = s["ops"] or list(OPS[kind])
    variants = [InferenceOptions.parse(v) for v in s["options"]]
    flop_counts: dict[tuple, float | None] = {}
    total = len(spec.models) * len(ops) * len(s["precisions"]) * len(s["batch_sizes"])
    with Progress(total, f"speed ({kind}s)", "measurements", ctx.progress, every=True) as progress:
        for preset in spec.models:
            _speed_of_preset(ctx, s, kind, ops, variants, flop_counts, preset, progress)


def _speed_of_preset(ctx, s, kind, ops, variants, flop_counts, preset, progress) -> None:
    """Every (op, precision, batch size) of one preset; one progress line per measurement."""
    model, tag = load_model(kind, preset, s["weights"], ctx.device)
    tok = tok_tag = None
    if kind == "generator" and "generate" in ops:
        tok, tok_tag = load_model("tokenizer", paired_tokenizer(preset), s["weights"], ctx.device)
    models = [m for m in (model, tok) if m is not None]
    resolution = (tok or model).image_size if hasattr(tok or model, "image_size") else None
    params = sum(parameter_millions(m) for m in models)

    emit = functools.partial(_emit, ctx, preset, tag)
    for op in ops:
        for precision in s["precisions"]:
            for bs in s["batch_sizes"]:
                base = {"op": op, "kind": kind, "resolution": resolution, "batch_size": bs, "precision": precision,
                        "warmup": s["warmup"], "iters": s["iters"], "device": ctx.device.type,
                        "interleaved": len(variants) > 1}
                if kind == "generator":
                    base["sampling"] = {**model.sampling.to_dict(), **s["sampling"]}
                    base["tokenizer"] = tok.preset if tok is not None else None
                    base["tokenizer_weights"] = tok_tag
                error = None
                if precision not in PRECISIONS:
                    error = f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}"
                    run = [(o, precision) for o in variants]
                else:
                    run = [in_precision(o, precision) for o in variants]
                if not error and precision == "fp16" and ctx.device.type != "cuda":
                    error = "not supported: fp16 autocast is measured on CUDA only"
                protocols = [{**base, "precision": p, **options_protocol(o)} for o, p in run]
                variants_run = [o for o, _ in run]
                first = len(ctx.records)
                if error:
                    for protocol in protocols:
                        emit(protocol, error=error)
                else:
                    _measure_variants(ctx, s, models, variants_run, protocols, op, precision, bs, params,
                                      flop_counts, emit, preset)
                progress.update(1, item=f"{preset} {op} batch {bs} {precision}: "
                                + _outcome(ctx.records[first:]))
    free(model, tok)


def _outcome(records: list[dict]) -> str:
    """What a measurement's records say, for its progress line: images/sec per variant, or the error."""
    said = []
    for r in records:
        label = r["protocol"].get("options_label", "") if len(records) > 1 else ""
        value = r["metrics"].get("images_per_sec")
        said.append((f"{label} " if label else "") + (f"{number(value)} img/s" if value is not None
                                                      else (r.get("error") or "no result")[:80]))
    return "; ".join(said) or "no record"


def _measure_variants(ctx, s, models, variants, protocols, op, precision, bs, params, flop_counts, emit, preset):
    """Every options variant of one (op, precision, batch size), timed in interleaved rounds."""
    dtype = None if precision in OPTION_PRECISIONS else PRECISIONS[precision]  # bf16 lives in the options
    model, tok = models[0], (models[1] if len(models) > 1 else None)
    make = (_tokenizer_op(model, op, ctx.device, dtype) if s["kind"] == "tokenizer"
            else _generator_op(model, tok, op, ctx.device, dtype, s["sampling"]))
    usable, flops = [], []
    for options, protocol in zip(variants, protocols, strict=True):
        try:
            _apply(models, options)()
        except NotSupportedError as exc:  # e.g. CUDA graphs on a CPU: "not supported", recorded, the others go on
            emit(protocol, error=str(exc))
            continue
        usable.append((options, protocol))
        flops.append(_flops_per_image(make, options, flop_counts, (preset, op, precision))
                     if s["count_flops"] else None)
    if not usable:
        return
    prepare = [_apply(models, options) for options, _ in usable]
    before = machine_state()
    try:
        timings, note = measure_variants_with_backoff(lambda b: [make(b)] * len(usable), bs, ctx.device,
                                                      s["warmup"], s["iters"], prepare)
    except Exception as exc:  # one broken measurement is recorded, the suite goes on
        log.exception("%s %s failed", preset, op)
        for _, protocol in usable:
            emit(protocol, error=f"{type(exc).__name__}: {exc}"[:500])
        return
    machine = worst_of(before, machine_state())
    warn_if_loaded(machine, f"{preset} {op} batch {bs}")
    for i, (_, protocol) in enumerate(usable):
        metrics, spreads = {"params_m": params}, None
        if timings is not None:
            t = timings[i]
            metrics.update(t.as_metrics())
            if flops[i]:
                metrics.update(utilisation_metrics(flops[i], t.items_per_sec, ctx.env.get("device_name"),
                                                   protocol["precision"]))
            protocol["batch_size_used"] = t.batch_size
            protocol["memory_source"] = t.memory_source
            spreads = {"sec_per_batch": t.iterations()}
        emit(protocol, metrics, note, spreads=spreads, machine=machine)
