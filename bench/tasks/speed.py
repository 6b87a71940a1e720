"""Speed and memory: images/sec of tokenizer encode/decode, generator token sampling and end-to-end
generation (sample + decode), per batch size, precision and inference-option variant, with peak memory
(bench/timing.py). Each option variant is its own record, so every fast-path gain is a ratio measured in
one run against the reference path (`options = [{...reference...}, {}]` in a suite; see bench/suites/fast-cpu.toml).
"""

from __future__ import annotations

import logging

import torch

from bench.suite import OPS, RunSpec
from bench.tasks.common import PRECISIONS, RunContext, free, load_model, paired_tokenizer, parameter_millions
from bench.timing import measure_with_backoff
from titok.contract import autocast_context
from titok.inference import InferenceOptions, apply_inference_options, describe

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


def _measure_one(ctx: RunContext, preset: str, tag: str, protocol: dict, metrics: dict, make, warmup: int,
                 iters: int, bs: int) -> None:
    try:
        timing, note = measure_with_backoff(make, bs, ctx.device, warmup, iters)
    except Exception as exc:  # one broken measurement is recorded, the suite goes on
        log.exception("%s %s failed", preset, protocol["op"])
        ctx.emit(model=preset, task="speed", metrics={}, protocol=protocol, weights_tag=tag,
                 error=f"{type(exc).__name__}: {exc}"[:500])
        return
    if timing is not None:
        metrics.update(timing.as_metrics())
        protocol["batch_size_used"] = timing.batch_size
        protocol["memory_source"] = timing.memory_source
    ctx.emit(model=preset, task="speed", metrics=metrics, protocol=protocol, weights_tag=tag, error=note)


def run_speed(spec: RunSpec, ctx: RunContext) -> None:
    s = spec.settings
    kind = s["kind"]
    ops = s["ops"] or list(OPS[kind])
    variants = [InferenceOptions.parse(v) for v in s["options"]]
    for preset in spec.models:
        model, tag = load_model(kind, preset, s["weights"], ctx.device)
        tok = tok_tag = None
        if kind == "generator" and "generate" in ops:
            tok, tok_tag = load_model("tokenizer", paired_tokenizer(preset), s["weights"], ctx.device)
        resolution = (tok or model).image_size if hasattr(tok or model, "image_size") else None
        for options in variants:
            protocol_base = {"kind": kind, "resolution": resolution, "warmup": s["warmup"], "iters": s["iters"],
                             "options": options.to_dict(), "options_label": describe(options),
                             "device": ctx.device.type}
            try:
                for m in (model, tok):
                    if m is not None:
                        apply_inference_options(m, options)
            except ValueError as exc:  # e.g. CUDA graphs on a CPU: "not supported", recorded per op
                for op in ops:
                    ctx.emit(model=preset, task="speed", metrics={}, weights_tag=tag, error=str(exc),
                             protocol={**protocol_base, "op": op})
                continue
            for op in ops:
                for precision in s["precisions"]:
                    for bs in s["batch_sizes"]:
                        protocol = {"op": op, **protocol_base, "batch_size": bs, "precision": precision}
                        if kind == "generator":
                            protocol["sampling"] = {**model.sampling.to_dict(), **s["sampling"]}
                            protocol["tokenizer"] = tok.preset if tok is not None else None
                            protocol["tokenizer_weights"] = tok_tag
                        metrics = {"params_m": parameter_millions(model) + (parameter_millions(tok) if tok else 0)}
                        if precision not in PRECISIONS:
                            ctx.emit(model=preset, task="speed", metrics={}, protocol=protocol, weights_tag=tag,
                                     error=f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
                            continue
                        if precision != "fp32" and ctx.device.type != "cuda":
                            ctx.emit(model=preset, task="speed", metrics={}, protocol=protocol, weights_tag=tag,
                                     error=f"not supported: {precision} autocast is measured on CUDA only")
                            continue
                        dtype = PRECISIONS[precision]
                        make = (_tokenizer_op(model, op, ctx.device, dtype) if kind == "tokenizer"
                                else _generator_op(model, tok, op, ctx.device, dtype, s["sampling"]))
                        _measure_one(ctx, preset, tag, protocol, metrics, make, s["warmup"], s["iters"], bs)
        free(model, tok)
