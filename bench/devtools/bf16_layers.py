"""Which part of a tokenizer carries bf16's error: the stand-in FID with one region at a time kept in fp32.

    PYTHONPATH=. OMP_NUM_THREADS=1 python -m bench.devtools.bf16_layers   (the metrics env: FID needs it)
    PYTHONPATH=. OMP_NUM_THREADS=1 python -m bench.devtools.bf16_layers --speed   (speed kept? titok_b64 decode at 256)

The same set-up as bench.devtools.bf16_check's stand-in FID (titok_tiny_2stage, random weights, 32x32, smooth synthetic
images, seeded random Inception weights: NOT FID), with the real set's features computed once. Each variant runs
the tokenizer under bf16 precision with the named submodules (or methods) run in fp32 (autocast off, inputs cast
to float32), and reports its stand-in FID, the share of encoded tokens equal to fp32's, and the difference from
fp32 in units of the fp32 value's bootstrap std, and the uint8 reconstructions' agreement with fp32's. Every
variant but the one named "with no layer kept fp32" also keeps the layers marked KEEP_FP32 (titok/inference.py) in
fp32, as the precision option does; with --plain none does but the option's own row.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import tempfile
from pathlib import Path

import torch

import titok
from bench.devtools.bf16_check import _images
from titok.contract import to_uint8
from titok.inference import KEEP_FP32, apply_inference_options


def _fp32(method):
    @functools.wraps(method)
    def run(*args, **kwargs):
        args = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        with torch.autocast(device_type="cpu", enabled=False):
            return method(*args, **kwargs)
    return run


@contextlib.contextmanager
def fp32_regions(targets):
    """Run each (object, method name) in fp32 inside the block."""
    for obj, name in targets:
        setattr(obj, name, _fp32(getattr(obj, name)))
    try:
        yield
    finally:
        for obj, name in targets:
            del obj.__dict__[name]


NOTHING_KEPT = "bf16 with no layer kept fp32"
OPTION = "bf16 (the option: KEEP_FP32 layers in fp32)"


@contextlib.contextmanager
def nothing_kept(model, on: bool):
    """Inside the block (when `on`), no module keeps float32 under bf16 (their KEEP_FP32 marks cleared)."""
    marked = [m for m in model.modules() if getattr(m, KEEP_FP32, False)] if on else []
    for m in marked:
        setattr(m, KEEP_FP32, False)
    try:
        yield
    finally:
        for m in marked:
            setattr(m, KEEP_FP32, True)


def variants(tok) -> dict[str, list]:
    enc, dec = tok.encoder, tok.decoder
    return {
        NOTHING_KEPT: [],
        OPTION: [],
        "encoder fp32": [(enc, "forward")],
        "decoder + pixel decoder fp32": [(dec, "forward"), (tok.pixel_decoder, "forward")],
        "ViT decoder fp32": [(dec, "forward")],
        "pixel decoder fp32": [(tok.pixel_decoder, "forward")],
        "encoder attention fp32": [(b.attn, "forward") for b in enc.transformer],
        "encoder MLP fp32": [(b.mlp, "forward") for b in enc.transformer],
        "encoder patch_embed fp32": [(enc.patch_embed, "forward")],
        "pixel decoder conv_in fp32": [(tok.pixel_decoder.conv_in, "forward")],
        "encoder last block fp32": [(enc.transformer[-1], "forward")],
        "pixel decoder conv_out fp32": [(tok.pixel_decoder.conv_out, "forward")],
        "pixel decoder GroupNorms fp32": [(m, "forward") for m in tok.pixel_decoder.modules()
                                          if isinstance(m, torch.nn.GroupNorm)],
        "pixel decoder mid blocks fp32": [(b, "forward") for b in tok.pixel_decoder.mid],
        **{f"pixel decoder up[{i}] blocks fp32": [(b, "forward") for b in level.block]
           for i, level in enumerate(tok.pixel_decoder.up)},
    }


@torch.no_grad()
def decode_probe(n: int) -> list[dict]:
    """The image set's variety and the decode of `n` random code sequences (distinct inputs, whatever the encoder
    does): how many distinct code sequences the synthetic images encode to; what the pixel decoder's first
    convolution sees under bf16 (mean |value|, std over the sequences); uint8 agreement with fp32 of bf16 decodes
    with and without the KEEP_FP32 layers."""
    from titok.contract import to_uint8

    torch.manual_seed(0)
    tok = titok.load_tokenizer("titok_tiny_2stage").eval()
    rows = [{"images": n, "distinct_code_sequences": len({tuple(r) for r in
                                                          tok.encode(_images(n, tok.image_size, 2)).tolist()})}]
    codes = torch.randint(0, tok.codebook_size, (n, tok.num_tokens), generator=torch.Generator().manual_seed(3))
    ref = to_uint8(tok.decode(codes)).float()
    seen = {}
    h = tok.pixel_decoder.conv_in.register_forward_pre_hook(lambda _m, i: seen.update(x=i[0].float()))
    for name in (NOTHING_KEPT, OPTION):
        with nothing_kept(tok, name == NOTHING_KEPT):
            apply_inference_options(tok, {"precision": "bf16"})
        r = to_uint8(tok.decode(codes)).float()
        rows.append({"random_code_sequences": n, "variant": name, "uint8_mean_abs_diff": float((r - ref).abs().mean()),
                     "uint8_equal": float((r == ref).float().mean()),
                     "conv_in_input_mean_abs": float(seen["x"].abs().mean()),
                     "conv_in_input_std_over_sequences": float(seen["x"].std(0).mean())})
    h.remove()
    apply_inference_options(tok, {})
    return rows


@torch.no_grad()
def keep_speed(preset: str = "titok_b64", rounds: int = 3) -> None:
    """Decode at batch 1: fp32, bf16 as the option runs it, and bf16 with no layer kept fp32, alternating round by
    round (order flipped every round); prints each variant's per-round speed-up over fp32 and its pixel diff."""
    import statistics
    import time

    torch.manual_seed(0)
    tok = titok.load_tokenizer(preset).eval()
    codes = torch.randint(0, tok.codebook_size, (1, tok.num_tokens), generator=torch.Generator().manual_seed(0))
    names = ["fp32", "bf16", NOTHING_KEPT]

    def run(name):
        with nothing_kept(tok, name == NOTHING_KEPT):
            apply_inference_options(tok, {"precision": "fp32" if name == "fp32" else "bf16"})
        t0 = time.perf_counter()
        out = tok.decode(codes)
        return out, time.perf_counter() - t0

    out = {n: run(n)[0] for n in names}  # warm-up, and the outputs compared
    secs = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            secs[n].append(run(n)[1])
    for n in names:
        ratios = [a / b for a, b in zip(secs["fp32"], secs[n], strict=True)]
        print(json.dumps({"preset": preset, "op": "decode", "batch": 1, "variant": n,
                          "speedup_median": statistics.median(ratios), "speedups": ratios,
                          "max_abs_diff": float((out[n] - out["fp32"]).abs().max()),
                          "mean_abs_diff": float((out[n] - out["fp32"]).abs().mean())}), flush=True)
    apply_inference_options(tok, {})


@torch.no_grad()
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--bootstrap", type=int, default=20)
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--speed", action="store_true", help="only the decode speed of titok_b64 with and without "
                    "the layers kept fp32")
    ap.add_argument("--plain", action="store_true", help="every variant but the option's without the KEEP_FP32 "
                    "layers (the search that found them)")
    ap.add_argument("--no-fid", action="store_true", help="tokens and uint8 pixels only (no Inception: seconds)")
    a = ap.parse_args(argv)
    if a.speed:
        keep_speed()
        return 0
    if a.no_fid:
        for row in decode_probe(a.images):
            print(json.dumps(row), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        from bench.metrics.inception import make_standin_inception_weights

        weights = None if a.no_fid else make_standin_inception_weights(Path(tmp) / "standin-inception.pth", seed=0)
        torch.manual_seed(0)
        tok = titok.load_tokenizer("titok_tiny_2stage").eval()
        real = _images(a.images, tok.image_size, 2)
        chunks = [real[i:i + 64] for i in range(0, a.images, 64)]
        real_features, ref_codes, ref, ref_rec = None, None, None, None
        todo = [("fp32", [])] + [(k, v) for k, v in variants(tok).items()
                                 if not a.only or k in a.only.split(",")]
        for name, targets in todo:
            with nothing_kept(tok, name == NOTHING_KEPT or (a.plain and name != OPTION)):
                apply_inference_options(tok, {"precision": "fp32" if name == "fp32" else "bf16"})
            with fp32_regions(targets):
                codes = torch.cat([tok.encode(c) for c in chunks])
                rec = torch.cat([tok.reconstruct(c) for c in chunks])
            if ref_rec is None:
                ref_rec, ref_codes = rec, codes
            row = {"variant": name, "tokens_equal": float((codes == ref_codes).float().mean()),
                   "uint8_equal": float((rec == ref_rec).float().mean()),
                   "uint8_mean_abs_diff": float((rec.float() - ref_rec.float()).abs().mean())}
            if a.no_fid:
                print(json.dumps(row), flush=True)
                continue
            from bench.metrics.image_sets import InceptionMetrics

            m = InceptionMetrics(("fid",), inception_weights=weights, bootstrap=a.bootstrap)
            if real_features is None:
                for c in chunks:
                    m.add_real(to_uint8(c))
                real_features = m.real
            m.real = real_features
            for i in range(0, a.images, 64):
                m.add_fake(rec[i:i + 64])
            r = m.result()
            fid, std = r.values["standin_fid"], r.spreads["standin_fid"]["std"]
            if ref is None:
                ref = (fid, std)
            row.update(standin_fid=fid, bootstrap_std=std, minus_fp32_in_fp32_stds=(fid - ref[0]) / ref[1])
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
