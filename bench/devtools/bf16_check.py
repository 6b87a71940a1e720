"""bf16 against fp32 inference on this machine, in one run: speed ratios and agreement (`InferenceOptions.precision`).

    PYTHONPATH=. OMP_NUM_THREADS=1 python -m bench.devtools.bf16_check --out results   (the metrics env: FID needs it)

Speed: encode, decode and generate (sample + decode) at 256 with titok_b64 and titok_l32, RANDOM weights (speed
does not depend on the values). fp32 and bf16 calls alternate round by round, the order flipped every round, so a
shared, loaded machine slows both alike; the table gives the median of the per-round ratios fp32 s / bf16 s and
their range, never absolute times alone.

Agreement on the same calls: the share of tokens equal (encode; generate from the same seeds), the max and mean
absolute difference of decoded pixels on [0, 1], and the share of uint8 pixels equal after rounding.

FID: a STAND-IN FID (seeded random Inception weights, bench.metrics.inception.make_standin_inception_weights; not FID)
of titok_tiny_2stage reconstructions (random weights, the same layer types at 32x32) of smooth synthetic
images against the images themselves, fp32 and bf16, with the fp32 value's Poisson-bootstrap std
(bench.metrics.image_sets.InceptionMetrics(bootstrap=R)). At 256 one fp32 decode takes ~10 s per image per thread
here, so a few hundred 256-pixel images per precision did not fit the run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import titok
from bench.run.env import env_tag, environment
from titok.contract import to_uint8
from titok.inference import apply_inference_options, cpu_bf16_flags, cpu_capability

PRECISIONS = ("fp32", "bf16")


def _paired(calls: dict[str, callable], model_list, rounds: int) -> tuple[dict[str, list[float]], dict]:
    """Time `calls[p]()` for fp32 and bf16 in alternating order, one warm-up each; (seconds per precision, last
    outputs per precision)."""
    out, secs = {}, {p: [] for p in PRECISIONS}
    for p in PRECISIONS:  # warm-up, and the outputs the agreement figures compare
        for m in model_list:
            apply_inference_options(m, {"precision": p})
        out[p] = calls[p]()
    for r in range(rounds):
        for p in (PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]):
            for m in model_list:
                apply_inference_options(m, {"precision": p})
            t0 = time.perf_counter()
            calls[p]()
            secs[p].append(time.perf_counter() - t0)
    for m in model_list:
        apply_inference_options(m, {})
    return secs, out


def _ratio(secs: dict[str, list[float]]) -> dict:
    ratios = [a / b for a, b in zip(secs["fp32"], secs["bf16"], strict=True)]
    return {"speedup": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
            "fp32_s": statistics.median(secs["fp32"]), "bf16_s": statistics.median(secs["bf16"]), "rounds": len(ratios)}


def _pixels(a: torch.Tensor, b: torch.Tensor) -> dict:
    d = (a.float() - b.float()).abs()
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
            "uint8_equal": float((to_uint8(a) == to_uint8(b)).float().mean())}


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth synthetic images in [0, 1]: 4x4 random colours, bilinearly upsampled (tokenizers see structure)."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(size, size), mode="bilinear",
                         align_corners=False).clamp(0, 1)


@torch.no_grad()
def tokenizer_rows(preset: str, enc_batch: int, dec_batch: int, rounds: int) -> list[dict]:
    torch.manual_seed(0)
    tok = titok.load_tokenizer(preset).eval()
    x = _images(enc_batch, tok.image_size, 1)
    secs, codes = _paired({p: (lambda: tok.encode(x)) for p in PRECISIONS}, [tok], rounds)
    enc = {"model": preset, "op": "encode", "batch": enc_batch, **_ratio(secs),
           "tokens_equal": float((codes["fp32"] == codes["bf16"]).float().mean()), "tokens": codes["fp32"].numel()}
    c = codes["fp32"][:dec_batch]
    secs, images = _paired({p: (lambda: tok.decode(c)) for p in PRECISIONS}, [tok], rounds)
    dec = {"model": preset, "op": "decode", "batch": dec_batch, **_ratio(secs), **_pixels(images["fp32"],
                                                                                           images["bf16"])}
    return [enc, dec]


@torch.no_grad()
def generate_row(preset: str, batch: int, rounds: int) -> dict:
    torch.manual_seed(0)
    gen = titok.load_generator(preset).eval()
    torch.manual_seed(0)
    tok = titok.load_tokenizer(gen.tokenizer_preset).eval()
    labels, seeds = torch.arange(batch) * 7 % gen.num_classes, list(range(batch))

    def generate():
        tokens = gen.generate(labels, seeds=seeds)
        return tokens, tok.decode(tokens)

    secs, out = _paired({p: generate for p in PRECISIONS}, [gen, tok], rounds)
    (t32, i32), (t16, i16) = out["fp32"], out["bf16"]
    return {"model": preset, "op": "generate", "batch": batch, **_ratio(secs),
            "tokens_equal": float((t32 == t16).float().mean()), "tokens": t32.numel(), **_pixels(i32, i16)}


@torch.no_grad()
def standin_fid(n: int, bootstrap: int, workdir: Path) -> dict:
    from bench.metrics.image_sets import InceptionMetrics
    from bench.metrics.inception import make_standin_inception_weights

    weights = make_standin_inception_weights(workdir / "standin-inception.pth", seed=0)
    torch.manual_seed(0)
    tok = titok.load_tokenizer("titok_tiny_2stage").eval()
    real = _images(n, tok.image_size, 2)
    result, real_features = {}, None
    for p in PRECISIONS:
        apply_inference_options(tok, {"precision": p})
        rec = torch.cat([tok.reconstruct(real[i:i + 64]) for i in range(0, n, 64)])
        m = InceptionMetrics(("fid",), inception_weights=weights, bootstrap=bootstrap)
        if real_features is None:  # the real set's features once: the same images for both precisions
            for i in range(0, n, 64):
                m.add_real(to_uint8(real[i:i + 64]))
            real_features = m.real
        m.real = real_features
        for i in range(0, n, 64):
            m.add_fake(rec[i:i + 64])
        r = m.result()
        result[p] = {"standin_fid": r.values["standin_fid"], "bootstrap_std": r.spreads["standin_fid"]["std"]}
        result[p + "_images"] = rec
    apply_inference_options(tok, {})
    diff = result["bf16"]["standin_fid"] - result["fp32"]["standin_fid"]
    return {"model": "titok_tiny_2stage", "images": n, "bootstrap_replicates": bootstrap,
            "fp32": result["fp32"], "bf16": result["bf16"], "bf16_minus_fp32": diff,
            "within_fp32_spread": abs(diff) <= result["fp32"]["bootstrap_std"],
            **_pixels(result["fp32_images"].float() / 255, result["bf16_images"].float() / 255)}


def markdown(report: dict, command: str) -> str:
    env = report["env"]
    lines = [f"# bf16 vs fp32 inference on {env['device_name']}, {env['threads']} threads",
             "", f"Command: `{command}`", "",
             f"torch {env['torch']}; CPU bf16 flags: {', '.join(report['cpu_bf16_flags']) or 'none'}; torch CPU "
             f"capability {report['cpu_capability']}. RANDOM weights (speed does not depend on them; agreement "
             "figures on trained weights will differ). fp32 and bf16 calls alternate, order flipped each round, "
             "on a machine shared with other jobs: read the ratios, not the seconds.", "",
             "| model | op | batch | bf16 speed-up (median, range) | fp32 s | bf16 s | tokens equal | "
             "decode max abs diff | mean abs diff | uint8 equal |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        tokens = f"{100 * r['tokens_equal']:.1f}% of {r['tokens']}" if "tokens_equal" in r else ""
        pix = (f"{r['max_abs_diff']:.4f} | {r['mean_abs_diff']:.5f} | {100 * r['uint8_equal']:.1f}%"
               if "max_abs_diff" in r else " | | ")
        lines.append(f"| {r['model']} | {r['op']} | {r['batch']} | {r['speedup']:.2f}x ({r['speedup_min']:.2f}-"
                     f"{r['speedup_max']:.2f}, {r['rounds']} rounds) | {r['fp32_s']:.2f} | {r['bf16_s']:.2f} | "
                     f"{tokens} | {pix} |")
    f = report.get("fid")
    if f:
        lines += ["", f"Stand-in FID (seeded random Inception weights: NOT FID) of {f['model']} reconstructions "
                  f"(random weights, 32x32) of {f['images']} smooth synthetic images against those images, "
                  f"{f['bootstrap_replicates']} Poisson-bootstrap replicates:", "",
                  "| precision | standin_fid | bootstrap std |", "|---|---|---|",
                  f"| fp32 | {f['fp32']['standin_fid']:.4f} | {f['fp32']['bootstrap_std']:.4f} |",
                  f"| bf16 | {f['bf16']['standin_fid']:.4f} | {f['bf16']['bootstrap_std']:.4f} |", "",
                  f"bf16 - fp32 = {f['bf16_minus_fp32']:+.4f}: "
                  f"{'within' if f['within_fp32_spread'] else 'OUTSIDE'} one fp32 bootstrap std. Reconstructions: "
                  f"max abs diff {f['max_abs_diff']:.4f}, {100 * f['uint8_equal']:.1f}% of uint8 pixels equal."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--encode-batch", type=int, default=4)
    ap.add_argument("--decode-batch", type=int, default=1)
    ap.add_argument("--generate-batch", type=int, default=1)
    ap.add_argument("--presets", default="titok_b64,titok_l32")
    ap.add_argument("--fid-images", type=int, default=256, help="0 skips the stand-in FID")
    ap.add_argument("--bootstrap", type=int, default=20)
    a = ap.parse_args(argv)
    env = environment("cpu")
    report = {"env": env, "cpu_bf16_flags": cpu_bf16_flags(), "cpu_capability": cpu_capability(),
              "weights": "random", "rows": []}
    for preset in filter(None, a.presets.split(",")):  # --presets "": the stand-in FID alone
        for row in tokenizer_rows(preset, a.encode_batch, a.decode_batch, a.rounds):
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
        row = generate_row(preset, a.generate_batch, a.rounds)
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
    if a.fid_images:
        with tempfile.TemporaryDirectory() as tmp:
            report["fid"] = standin_fid(a.fid_images, a.bootstrap, Path(tmp))
        print(json.dumps(report["fid"]), flush=True)
    command = "PYTHONPATH=. OMP_NUM_THREADS=1 python -m bench.devtools.bf16_check " + shlex.join(argv or sys.argv[1:])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bf16-vs-fp32-{env_tag(env)}"
    Path(f"{stem}.json").write_text(json.dumps({**report, "command": command}, indent=1) + "\n")
    Path(f"{stem}.md").write_text(markdown(report, command))
    print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
