"""Generation quality: class-balanced samples from a generator, decoded by its tokenizer, scored against
reference statistics (gFID) and by Inception Score.

Sample i has class i % 1000 and its own seed derived from (run seed, i), and is written as `<i>.png`
atomically (temporary file, then rename). A run that stops part-way resumes by skipping the batches already on
disk; any number of processes (`--shard k/n` in the CLI) produce the same bytes as one process would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from bench.data import ImageFolder
from bench.suite import RunSpec
from bench.tasks.common import RunContext, free, load_model, paired_tokenizer
from titok.contract import to_uint8


def sample_seed(run_seed: int, index: int) -> int:
    """Seed of sample `index`: independent of batch size and of how work is split across processes."""
    return (run_seed * 1_000_003 + index) % (2**63 - 1)


def write_png_atomic(path: Path, image: torch.Tensor) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(tmp, format="PNG")
    os.replace(tmp, path)


MANIFEST = "generation.json"


def _check_manifest(out_dir: Path, settings: dict) -> None:
    """A sample folder belongs to one (model, seed, batch size, labels) run; resuming with others would mix runs."""
    path = out_dir / MANIFEST
    if path.is_file():
        saved = json.loads(path.read_text())
        diff = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
        if diff:
            raise ValueError(f"{out_dir} holds samples of another run; differing settings (saved, now): {diff}. "
                             "Use another --out folder, or the same settings to resume.")
    else:
        tmp = path.with_name(f".{MANIFEST}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(settings, indent=2))
        os.replace(tmp, path)


def generate_samples(gen, tok, out_dir: Path, num_samples: int, run_seed: int, batch_size: int,
                     shard: tuple[int, int] = (0, 1), progress: bool = False, sampling: dict | None = None,
                     labels: list[int] | None = None) -> int:
    """Write the samples [0, num_samples) this shard owns that are not on disk yet; returns how many it wrote.

    Sample i has class `labels[i % len(labels)]`, or i % num_classes (class-balanced) without `labels`.
    Work is cut into global batches [j*B, (j+1)*B) and shard k of n takes the batches with j % n == k, so every
    image is computed in the same batch whatever the number of processes or restarts: results are identical
    to the last bit. The batch size is therefore part of the folder's manifest.
    """
    k, n = shard
    if not 0 <= k < n:
        raise ValueError(f"shard must be k/n with 0 <= k < n, got {k}/{n}")
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_manifest(out_dir, {"generator": gen.preset, "tokenizer": tok.preset, "seed": run_seed,
                              "batch_size": batch_size, "labels": labels, "sampling": sampling or {}})
    device = next(gen.parameters()).device
    batches = [list(range(j * batch_size, min((j + 1) * batch_size, num_samples)))
               for j in range(k, -(-num_samples // batch_size), n)]
    todo = [b for b in batches if not all((out_dir / f"{i:06d}.png").is_file() for i in b)]
    written = 0
    for idx in tqdm(todo, desc="sampling", disable=not progress, unit="batch"):
        classes = torch.tensor([labels[i % len(labels)] if labels else i % gen.num_classes for i in idx], device=device)
        with torch.no_grad():
            tokens = gen.generate(classes, seeds=[sample_seed(run_seed, i) for i in idx], **(sampling or {}))
            images = to_uint8(tok.decode(tokens))
        for i, img in zip(idx, images, strict=True):
            if not (out_dir / f"{i:06d}.png").is_file():
                write_png_atomic(out_dir / f"{i:06d}.png", img)
                written += 1
    return written


def run_gen(spec: RunSpec, ctx: RunContext) -> None:
    from bench.metrics import compute_image_metrics
    from bench.tasks.recon import inception_for

    s = spec.settings
    n = min(s["num_samples"], ctx.limit) if ctx.limit else s["num_samples"]
    for preset in spec.models:
        gen, tag = load_model("generator", preset, s["weights"], ctx.device)
        tok, tok_tag = load_model("tokenizer", paired_tokenizer(preset), s["weights"], ctx.device)
        sample_dir = ctx.out_dir / "samples" / f"{preset}-seed{s['seed']}"
        generate_samples(gen, tok, sample_dir, n, s["seed"], s["eval_batch_size"], progress=ctx.progress,
                         sampling=s["sampling"])
        files = sorted(sample_dir.glob("*.png"))[:n]
        r = compute_image_metrics(ImageFolder(sample_dir, limit=n), s["reference"] or None,
                                  inception_weights=inception_for(s, ctx), metrics=("fid", "isc"),
                                  batch_size=s["eval_batch_size"], device=ctx.device, progress=ctx.progress)
        metrics = {k.replace("fid", "gfid"): v for k, v in r.values.items()}
        protocol = {**r.protocol, "num_samples": len(files), "seed": s["seed"], "resolution": tok.image_size,
                    "class_balanced": True, "sampling": {**gen.sampling.to_dict(), **s["sampling"]},
                    "tokenizer": tok.preset, "tokenizer_weights": tok_tag}
        ctx.emit(model=preset, task="gen", metrics=metrics, protocol=protocol, weights_tag=tag)
        free(gen, tok)
