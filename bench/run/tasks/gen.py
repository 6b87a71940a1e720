"""Generation quality: class-balanced samples from a generator, decoded by its tokenizer, scored against
reference statistics (gFID) and by Inception Score.

Sample i has class i % 1000 and its own seed derived from (run seed, i). Work is cut into global batches
[j*B, (j+1)*B), and process k of n takes the batches with j % n == k (`--shard k/n`, or the torchrun rank), so
every image is computed in the same batch whatever the number of processes or restarts: the same bytes as one
process would make.

Two ways out of the sampler, the same bytes in both (`sample_batch`: `titok.contract.to_uint8` of the decoded
images):
- PNGs (`generate_samples`, the `generate` command, and a suite's gen run with `save_images`): sample i is
  written as `<i>.png` atomically (a uniquely named temporary file, then rename), so a killed process leaves
  either the whole PNG or none. A run that stops part-way resumes by redoing only the batches with a sample
  missing; a PNG cut short (power loss after the rename reached the disk before the data) does not count as done.
  The folder's manifest (`generation.json`) is created atomically, once, by whichever process gets there first;
  every other process checks its settings against it, so two runs are never mixed in one folder.
- in memory (`run_gen`, a suite's gen run): the uint8 batch goes straight to the Inception statistics, which are
  checkpointed per rank (bench/run/tasks/gen_state.py) instead of the images. The PNG route (generate, then score the
  folder in batches of the same B in index order) gives the same features and statistics, bit for bit
  (tests/test_gen_in_memory.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from bench.metrics.distributed import all_gather, broadcast_from_main, rank_batches, together
from bench.run.suite import RunSpec
from bench.run.tasks.common import (
    RunContext,
    check_tokenizer_file,
    free,
    inception_for,
    load_model,
    paired_tokenizer,
)
from bench.run.tasks.gen_state import GenCheckpoint, state_folder
from bench.run.timing import PeakMemory
from titok.contract import to_uint8
from titok.data.files import TMP_SUFFIX, is_complete_png, tmp_name, write_png_atomic
from titok.data.images import open_rgb, pil_to_uint8
from titok.errors import DataError, InputError
from titok.fetch import sha256_of
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


def generation_settings(gen, tok, run_seed: int, batch_size: int, sampling: dict | None = None,
                        labels: list[int] | None = None, weights: dict | None = None) -> dict:
    """Everything a sample's bytes depend on (a sample folder's manifest): models, weights, seed, batch, labels,
    sampling overrides and noise scheme. The noise scheme is kept as "noise" (not among the sampling overrides), so
    a folder started under another scheme resumes by naming it: sampling noise_scheme = that scheme."""
    overrides = {k: v for k, v in (sampling or {}).items() if k != "noise_scheme"}
    scheme = (sampling or {}).get("noise_scheme", gen.sampling.noise_scheme)
    return {"generator": gen.preset, "tokenizer": tok.preset, "seed": run_seed, "batch_size": batch_size,
            "labels": labels, "sampling": overrides, "weights": weights or {}, "noise": scheme}


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
    _check_manifest(out_dir, generation_settings(gen, tok, run_seed, batch_size, sampling, labels, weights))
    batches = [list(b) for b in rank_batches(num_samples, batch_size, k, n)]
    stale = remove_stale_tmp(out_dir, {i for b in batches for i in b})
    if stale:
        log.info("removed %d temporary files left by an interrupted run in %s", stale, out_dir)
    todo = [b for b in batches if not all(is_complete_png(sample_path(out_dir, i)) for i in b)]
    written = 0
    for idx in track(todo, f"generate {gen.preset}", progress, unit="batch"):
        written += _write_pngs(out_dir, idx, sample_batch(gen, tok, idx, run_seed, sampling, labels))
    return written


def sample_batch(gen, tok, idx, run_seed: int, sampling: dict | None = None,
                 labels: list[int] | None = None) -> torch.Tensor:
    """uint8 (B, 3, H, W) samples `idx` (one global batch), on the model's device: what a PNG of each holds.

    The one sampling path of `generate` (PNGs) and of in-memory gFID: classes by `sample_classes`, seeds by
    `sample_seed`, then `titok.contract.to_uint8` of the decoded images, exactly what the PNG writer is given.
    """
    idx = list(idx)
    device = next(gen.parameters()).device
    classes = torch.as_tensor(sample_classes(idx, labels, gen.num_classes), device=device)
    with torch.no_grad():
        tokens = gen.generate(classes, seeds=[sample_seed(run_seed, i) for i in idx], **(sampling or {}))
        decoded = tok.decode(tokens)
    if not torch.isfinite(decoded).all():  # to_uint8 would turn NaN into plausible-looking black pixels
        raise WeightsError(f"{tok.preset} decoded non-finite pixel values (NaN/inf) for samples "
                           f"{idx[0]}..{idx[-1]}; check the tokenizer's weights")
    return to_uint8(decoded)


def _write_pngs(out_dir: Path, idx, images: torch.Tensor) -> int:
    """Write the samples of one batch that are not complete on disk yet (atomically); how many were written."""
    written = 0
    for i, img in zip(idx, images, strict=True):
        if not is_complete_png(sample_path(out_dir, i)):
            write_png_atomic(sample_path(out_dir, i), img)
            written += 1
    return written


def _read_pngs(out_dir: Path, idx) -> torch.Tensor:
    """uint8 (B, 3, H, W) of complete sample PNGs: PNG is lossless, so these are the bytes sampling gave."""
    return torch.stack([pil_to_uint8(open_rgb(sample_path(out_dir, i))) for i in idx])


def missing_samples(out_dir: Path, num_samples: int) -> list[int]:
    """Indices in [0, num_samples) without a complete PNG: a sample set is only scored with none missing."""
    return [i for i in range(num_samples) if not is_complete_png(sample_path(out_dir, i))]


def _gfid(key: str) -> str:
    """Generation FID is gFID: fid -> gfid, standin_fid -> standin_gfid; sFID keeps its name (as ADM's)."""
    return key[: -len("fid")] + "gfid" if key in ("fid", "standin_fid") else key


def run_gen(spec: RunSpec, ctx: RunContext) -> None:
    """Class-balanced samples scored in memory: gFID/sFID/IS (and precision/recall, KID where asked).

    Each rank samples its global batches (distributed.rank_batches at the eval batch size, per-sample seeds,
    so the images are the same at any world size), quantizes them with `to_uint8` as the PNG writer would, and
    feeds them to its Inception statistics at their positions in the whole set; after its last batch every rank
    joins the reduce, and rank 0 scores and emits. No sample touches the disk unless `save_images` is set (then
    they are also written as PNGs, atomically, with the folder's manifest, for ADM export or looking at them;
    scoring stays in memory). Every `checkpoint_every` batches a rank checkpoints its statistics
    (bench/run/tasks/gen_state.py), so a killed run redoes at most that many batches per rank.

    Everything scoring needs (metrics stack, Inception weights, the reference and the protocol it was made
    under) is checked before the first sample, not after hours of sampling.
    """
    from bench.metrics.image_sets import InceptionMetrics
    from bench.metrics.inception import inspect_weights, require_torch_fidelity, resolve_inception_weights
    from bench.metrics.statistics_file import check_protocol, read_protocol, run_protocol

    s = spec.settings
    n = min(s["num_samples"], ctx.limit) if ctx.limit else s["num_samples"]
    if s["checkpoint_every"] < 1:
        raise InputError(f"checkpoint_every must be a number of batches >= 1, got {s['checkpoint_every']}")
    dctx = ctx.dist
    metrics = ("fid", "sfid", "isc", *[m for m in s["metrics"] if m in ("kid", "prc")])
    reference_protocol = {}
    if s["reference"]:
        reference_protocol = read_protocol(s["reference"])  # reads and checks the file itself first
    require_torch_fidelity()
    inception_weights = inception_for(s, ctx)  # collective: rank 0 makes a stand-in, the others wait for it
    extractor = inspect_weights(resolve_inception_weights(inception_weights))
    for preset in ctx.each_model(spec.models, "gen"):
        start, memory = time.perf_counter(), PeakMemory(ctx.device)
        with together(f"gen {preset}: loading"):
            gen, tag = load_model("generator", preset, s["weights"], ctx.device)
            gen_file = s["weights"].get("generator", {}).get(preset)
            tok_name = paired_tokenizer(preset, gen_file)
            check_tokenizer_file(gen_file, s["weights"].get("tokenizer", {}).get(tok_name))
            tok, tok_tag = load_model("tokenizer", tok_name, s["weights"], ctx.device)
            if s["reference"]:  # samples are not prepared: they are made at the tokenizer's size
                check_protocol(s["reference"], reference_protocol, run_protocol(extractor, tok.image_size))
            acc = InceptionMetrics(metrics, inception_weights=inception_weights, device=ctx.device,
                                   reference=s["reference"] or None, num_fake=n, batch_size=s["eval_batch_size"],
                                   bootstrap=s["fid_bootstrap"])
            settings = generation_settings(gen, tok, s["seed"], s["eval_batch_size"], s["sampling"],
                                           weights={"generator": tag, "tokenizer": tok_tag})
            key = {**settings, "num_samples": n, "metrics": sorted(metrics), "bootstrap": s["fid_bootstrap"],
                   "inception": extractor.weights_sha256,
                   "reference": sha256_of(s["reference"]) if s["reference"] else None}
            ckpt = GenCheckpoint(state_folder(ctx.out_dir, preset, s["seed"], key), key, dctx.rank, dctx.world_size)
            ckpt.check_world()
            sample_dir = None
            if s["save_images"]:
                sample_dir = ctx.out_dir / "samples" / f"{preset}-seed{s['seed']}"
                sample_dir.mkdir(parents=True, exist_ok=True)
                _check_manifest(sample_dir, settings)
        with together(f"gen {preset}: sampling and Inception features"):
            sampling_s, scoring_s = _sample_and_score(gen, tok, acc, ckpt, n, s, dctx, sample_dir,
                                                      ctx.progress and dctx.is_main)
        reduce_start = time.perf_counter()
        acc.reduce()  # collective: every rank, once, after its last batch
        with together(f"gen {preset}: scoring"):
            r = acc.result() if dctx.is_main else None
            if r is not None and r.protocol["num_fake"] != n:
                raise RuntimeError(f"gen {preset}: {r.protocol['num_fake']} of {n} samples were scored")
        r = broadcast_from_main(r)
        peaks = all_gather(memory.read())  # peak memory: the largest of any rank's, as recon records it
        values = {_gfid(k): v for k, v in r.values.items()}
        spreads = {_gfid(k): v for k, v in r.spreads.items()} or None
        # This process's own time in this session (a resumed run counts only the batches it redid).
        values.update({"sampling_wall_s": sampling_s,
                       "eval_wall_s": scoring_s + time.perf_counter() - reduce_start,
                       **{k: max(p[k] for p in peaks) for k in peaks[0]}})
        protocol = {**r.protocol, "num_samples": n, "seed": s["seed"], "resolution": tok.image_size,
                    "class_balanced": True, "sampling": {**gen.sampling.to_dict(), **s["sampling"]},
                    "tokenizer": tok.preset, "tokenizer_weights": tok_tag,
                    "reference_protocol": reference_protocol or None}
        log.debug("gen %s: %.1f s from load to record", preset, time.perf_counter() - start)
        ctx.emit(model=preset, task="gen", metrics=values, protocol=protocol, weights_tag=tag, spreads=spreads)
        free(gen, tok, acc)


def _sample_and_score(gen, tok, acc, ckpt: GenCheckpoint, n: int, s: dict, dctx, sample_dir: Path | None,
                      progress: bool) -> tuple[float, float]:
    """This rank's batches: resume from its checkpoint, sample (or read back its complete PNGs) each batch not
    yet in the statistics, feed it at its positions, checkpoint every `checkpoint_every` batches and at the end.
    With PNGs kept, a batch already scored but with a PNG missing is sampled again for its files only.
    Returns (seconds sampling, seconds in Inception and checkpoints)."""
    batch, every = s["eval_batch_size"], s["checkpoint_every"]
    state, done = ckpt.load()
    if state is not None:
        acc.load_state_dict(state)
    done = set(done)
    mine = rank_batches(n, batch, dctx.rank, dctx.world_size)
    if sample_dir is not None:
        remove_stale_tmp(sample_dir, {i for b in mine for i in b})

    def on_disk(idx) -> bool:
        return sample_dir is not None and all(is_complete_png(sample_path(sample_dir, i)) for i in idx)

    todo = [b for b in mine if b.start // batch not in done or (sample_dir is not None and not on_disk(b))]
    if done:
        log.info("gen %s: resuming rank %d from %s (%d of %d batches done)", gen.preset, dctx.rank, ckpt.path,
                 len(done), len(mine))
    sampling_s = scoring_s = 0.0
    fresh = 0
    for idx in track(todo, f"generate+inception {gen.preset}", progress, unit="batch"):
        j, t0 = idx.start // batch, time.perf_counter()
        images = _read_pngs(sample_dir, idx) if j not in done and on_disk(idx) else \
            sample_batch(gen, tok, idx, s["seed"], s["sampling"])
        if sample_dir is not None:
            _write_pngs(sample_dir, idx, images)
        t1 = time.perf_counter()
        sampling_s += t1 - t0
        if j not in done:
            acc.add_fake(images, indices=idx)
            done.add(j)
            fresh += 1
            if fresh % every == 0:
                ckpt.save(acc.state_dict(), sorted(done))
        scoring_s += time.perf_counter() - t1
    if fresh % every:  # the last batches since the previous checkpoint: a rerun after this redoes nothing
        t1 = time.perf_counter()
        ckpt.save(acc.state_dict(), sorted(done))
        scoring_s += time.perf_counter() - t1
    return sampling_s, scoring_s
