"""Generation quality: class-balanced samples from a generator, decoded by its tokenizer, scored against
reference statistics (gFID) and by Inception Score.

Sample i has class i % 1000 and its own seed derived from (run seed, i), and is written as `<i>.png`
atomically (a uniquely named temporary file, then rename), so a killed process leaves either the whole PNG or
none. A run that stops part-way resumes by redoing only the batches with a sample missing; a PNG cut short
(power loss after the rename reached the disk before the data) does not count as done. Any number of
processes (`--shard k/n` in the CLI) and any number of restarts produce the same bytes as one process would.
The folder's manifest (`generation.json`) is created atomically, once, by whichever process gets there first;
every other process checks its settings against it, so two runs are never mixed in one folder.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from bench.suite import RunSpec
from bench.tasks.common import (
    RunContext,
    check_tokenizer_file,
    free,
    inception_for,
    load_model,
    paired_tokenizer,
)
from bench.timing import PeakMemory
from titok.contract import to_uint8
from titok.data.files import TMP_SUFFIX, is_complete_png, tmp_name, write_png_atomic
from titok.data.images import ImageFolder
from titok.errors import DataError, InputError
from titok.generators.noise import LEGACY_NOISE_SCHEME, NOISE_SCHEMES
from titok.progress import track
from titok.weights import WeightsError

log = logging.getLogger(__name__)
MANIFEST = "generation.json"


def sample_classes(indices, labels: list[int] | None, num_classes: int) -> np.ndarray:
    """Class of each sample index: `labels[i % len(labels)]` when labels were given, else `i % num_classes`
    (class-balanced). The one rule, used by generation and by `export-npz` to label what generation wrote."""
    idx = np.asarray(indices, dtype=np.int64)
    return np.asarray(labels, dtype=np.int64)[idx % len(labels)] if labels else idx % num_classes


def sample_seed(run_seed: int, index: int) -> int:
    """Seed of sample `index`: independent of batch size and of how work is split across processes."""
    return (run_seed * 1_000_003 + index) % (2**63 - 1)


def sample_path(out_dir: Path, index: int) -> Path:
    return out_dir / f"{index:06d}.png"


def remove_stale_tmp(out_dir: Path, owned: set[int]) -> int:
    """Delete temporary files a killed process left for the samples this shard owns (no one else writes them)."""
    removed = 0
    for tmp in out_dir.glob(f".*.png.*{TMP_SUFFIX}"):
        stem = tmp.name[1:].split(".", 1)[0]
        if stem.isdigit() and int(stem) in owned:
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def read_manifest(folder: Path) -> dict | None:
    """The settings a sample folder was made with (its generation.json), or None where it has none. The one reader
    for generation, `export-npz` and `doctor`: unreadable, or not a JSON object, is a DataError naming the file."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable generation manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: a generation manifest must be a JSON object")
    return manifest


def _normalised(settings: dict) -> dict:
    return json.loads(json.dumps(settings, sort_keys=True))


def _check_manifest(out_dir: Path, settings: dict) -> None:
    """A sample folder belongs to one run (models, weights, seed, batch size, labels, sampling, noise scheme):
    claim it or check it.

    The manifest is written to a temporary file and hard-linked into place, which fails if the file exists: of
    several processes starting at once exactly one creates it, whole, and the others compare against it.
    """
    path = out_dir / MANIFEST
    settings = _normalised(settings)
    if not path.exists():
        tmp = tmp_name(path)
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(settings, indent=2, sort_keys=True))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
                return
            except FileExistsError:
                pass  # another process claimed the folder first: check against its settings below
            except OSError:  # a file system without hard links: rename (last writer wins, still atomic)
                if not path.exists():
                    os.replace(tmp, path)
                    return
        finally:
            tmp.unlink(missing_ok=True)
    try:
        saved = read_manifest(out_dir) or {}
    except DataError as exc:
        raise DataError(f"{exc}; it was not written by this tool, or was damaged. Use another --out folder.") from None
    saved_noise = saved.get("noise", LEGACY_NOISE_SCHEME)  # folders made before the key existed used the legacy one
    if "noise" in settings and saved_noise != settings["noise"]:
        resume = (f" or resume it with the sampling setting noise_scheme = {saved_noise!r}"
                  if saved_noise in NOISE_SCHEMES else "")
        raise InputError(f"{out_dir} holds samples drawn with the noise scheme {saved_noise!r}; this run draws "
                         f"{settings['noise']!r}, and the two never mix in one folder. Use another --out folder "
                         f"(regenerate the samples){resume}.")
    diff = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    if diff:
        raise InputError(f"{out_dir} holds samples of another run; differing settings (saved, now): {diff}. "
                         "Use another --out folder, or the same settings to resume.")


def generate_samples(gen, tok, out_dir: Path, num_samples: int, run_seed: int, batch_size: int,
                     shard: tuple[int, int] = (0, 1), progress: bool = False, sampling: dict | None = None,
                     labels: list[int] | None = None, weights: dict | None = None) -> int:
    """Write the samples [0, num_samples) this shard owns that are not on disk yet; returns how many it wrote.

    Sample i has class `labels[i % len(labels)]`, or i % num_classes (class-balanced) without `labels`.
    Work is cut into global batches [j*B, (j+1)*B) and shard k of n takes the batches with j % n == k, so every
    image is computed in the same batch whatever the number of processes or restarts: results are identical
    to the last bit. The batch size is therefore part of the folder's manifest, as are the weights tags.
    """
    k, n = shard
    if not 0 <= k < n:
        raise InputError(f"shard must be k/n with 0 <= k < n, got {k}/{n}")
    if batch_size < 1 or num_samples < 0:
        raise InputError(f"need batch size >= 1 and a sample count >= 0, got {batch_size} and {num_samples}")
    bad = [c for c in labels or [] if not 0 <= c < gen.num_classes]
    if labels is not None and (not labels or bad):
        raise InputError(f"class labels must be in [0, {gen.num_classes}) for {gen.preset}; got {bad or 'none'}")
    out_dir.mkdir(parents=True, exist_ok=True)
    # The noise scheme is kept as "noise" (not among the sampling overrides), so a folder started under another
    # scheme resumes by naming it: sampling noise_scheme = that scheme.
    overrides = {k: v for k, v in (sampling or {}).items() if k != "noise_scheme"}
    scheme = (sampling or {}).get("noise_scheme", gen.sampling.noise_scheme)
    _check_manifest(out_dir, {"generator": gen.preset, "tokenizer": tok.preset, "seed": run_seed,
                              "batch_size": batch_size, "labels": labels, "sampling": overrides,
                              "weights": weights or {}, "noise": scheme})
    device = next(gen.parameters()).device
    batches = [list(range(j * batch_size, min((j + 1) * batch_size, num_samples)))
               for j in range(k, -(-num_samples // batch_size), n)]
    stale = remove_stale_tmp(out_dir, {i for b in batches for i in b})
    if stale:
        log.info("removed %d temporary files left by an interrupted run in %s", stale, out_dir)
    todo = [b for b in batches if not all(is_complete_png(sample_path(out_dir, i)) for i in b)]
    written = 0
    for idx in track(todo, f"generate {gen.preset}", progress, unit="batch"):
        classes = torch.as_tensor(sample_classes(idx, labels, gen.num_classes), device=device)
        with torch.no_grad():
            tokens = gen.generate(classes, seeds=[sample_seed(run_seed, i) for i in idx], **(sampling or {}))
            decoded = tok.decode(tokens)
        if not torch.isfinite(decoded).all():  # to_uint8 would turn NaN into plausible-looking black pixels
            raise WeightsError(f"{tok.preset} decoded non-finite pixel values (NaN/inf) for samples "
                               f"{idx[0]}..{idx[-1]}; check the tokenizer's weights")
        for i, img in zip(idx, to_uint8(decoded), strict=True):
            if not is_complete_png(sample_path(out_dir, i)):
                write_png_atomic(sample_path(out_dir, i), img)
                written += 1
    return written


def missing_samples(out_dir: Path, num_samples: int) -> list[int]:
    """Indices in [0, num_samples) without a complete PNG: a sample set is only scored with none missing."""
    return [i for i in range(num_samples) if not is_complete_png(sample_path(out_dir, i))]


def _gfid(key: str) -> str:
    """Generation FID is gFID: fid -> gfid, standin_fid -> standin_gfid; sFID keeps its name (as ADM's)."""
    return key[: -len("fid")] + "gfid" if key in ("fid", "standin_fid") else key


def run_gen(spec: RunSpec, ctx: RunContext) -> None:
    """Class-balanced samples, then gFID/IS (and precision/recall, KID where asked) streamed over them.

    Everything scoring needs (metrics stack, Inception weights, the reference and the protocol it was made
    under) is checked before the first sample, not after hours of sampling.
    """
    from bench.inception import inspect_weights, require_torch_fidelity, resolve_inception_weights
    from bench.metrics import compute_image_metrics
    from bench.statistics_file import check_protocol, read_protocol, run_protocol

    s = spec.settings
    n = min(s["num_samples"], ctx.limit) if ctx.limit else s["num_samples"]
    metrics = ("fid", "sfid", "isc", *[m for m in s["metrics"] if m in ("kid", "prc")])
    reference_protocol = {}
    if s["reference"]:
        reference_protocol = read_protocol(s["reference"])  # reads and checks the file itself first
    require_torch_fidelity()
    inception_weights = inception_for(s, ctx)
    extractor = inspect_weights(resolve_inception_weights(inception_weights))
    for preset in ctx.each_model(spec.models, "gen"):
        start, memory = time.perf_counter(), PeakMemory(ctx.device)
        gen, tag = load_model("generator", preset, s["weights"], ctx.device)
        gen_file = s["weights"].get("generator", {}).get(preset)
        tok_name = paired_tokenizer(preset, gen_file)
        check_tokenizer_file(gen_file, s["weights"].get("tokenizer", {}).get(tok_name))
        tok, tok_tag = load_model("tokenizer", tok_name, s["weights"], ctx.device)
        if s["reference"]:  # samples are not prepared: they are made at the tokenizer's size
            check_protocol(s["reference"], reference_protocol, run_protocol(extractor, tok.image_size))
        sample_dir = ctx.out_dir / "samples" / f"{preset}-seed{s['seed']}"
        generate_samples(gen, tok, sample_dir, n, s["seed"], s["eval_batch_size"], progress=ctx.progress,
                         sampling=s["sampling"], weights={"generator": tag, "tokenizer": tok_tag})
        missing = missing_samples(sample_dir, n)
        if missing:
            raise RuntimeError(f"{sample_dir}: {len(missing)} of {n} samples missing after generation "
                               f"(first: {missing[0]}); not scoring an incomplete set")
        sampled = time.perf_counter()
        samples = ImageFolder(sample_dir, strict=True)  # our own files: any unreadable one is an error
        samples.files = [sample_path(sample_dir, i) for i in range(n)]
        r = compute_image_metrics(samples, s["reference"] or None, inception_weights=inception_weights,
                                  metrics=metrics, batch_size=s["eval_batch_size"], device=ctx.device,
                                  progress=ctx.progress, bootstrap=s["fid_bootstrap"])
        values = {_gfid(k): v for k, v in r.values.items()}
        spreads = {_gfid(k): v for k, v in r.spreads.items()} or None
        values.update({"sampling_wall_s": sampled - start, "eval_wall_s": time.perf_counter() - sampled,
                       **memory.read()})
        protocol = {**r.protocol, "num_samples": n, "seed": s["seed"], "resolution": tok.image_size,
                    "class_balanced": True, "sampling": {**gen.sampling.to_dict(), **s["sampling"]},
                    "tokenizer": tok.preset, "tokenizer_weights": tok_tag,
                    "reference_protocol": reference_protocol or None}
        ctx.emit(model=preset, task="gen", metrics=values, protocol=protocol, weights_tag=tag, spreads=spreads)
        free(gen, tok)
