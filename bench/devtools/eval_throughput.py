"""Inception feature extraction over a folder of PNGs: ours against torch-fidelity and clean-fid (issue 22, part 4).

    python -m bench.devtools.eval_throughput --out results/eval-throughput-TAG.md  (metrics env)

What is timed is each tool's call that extracts the Inception features of every image of one folder once and
reduces them to the statistics an FID or IS needs, in the tool's own pipeline (its file listing, decoding,
resize, DataLoader and batching), from the call to its result, the network's construction included (the
tool's modules are imported before the clock starts):
- ours: `InceptionMetrics(("fid",))` fed by `iter_image_batches(ImageFolder(DIR))`, then its mu/sigma: the loop
  behind `titok-bench fid DIR REF.npz` and `titok-bench stats` (images read as stored, no --image-size);
- torch-fidelity 0.4.0: `calculate_metrics(input1=DIR, isc=True, feature_extractor_weights_path=W, cache=False)`:
  one input, so one extraction (a `fid=True` call needs a second input, and against cached statistics it adds a
  2048 x 2048 matrix square root that is not feature extraction and would swamp a short run);
- clean-fid 0.1.35: `get_folder_features(DIR, NET, mode="clean")` then `np.mean`/`np.cov`, which is what
  `compute_fid(DIR, ...)` does (its `fid_folder`) before it loads reference statistics and takes the Frechet
  distance: its file list, its ResizeDataset (the "clean" PIL bicubic resize to 299 in the DataLoader workers).

One Inception network for all three: no internet, so the stand-in weights (`make_standin_inception_weights`,
seeded random values with the real keys) go through the real loading path: `--inception-weights` for ours,
`feature_extractor_weights_path` for torch-fidelity. clean-fid's network is swapped for `CleanFidInception`,
passed as `get_folder_features`'s model, which is where compute_fid puts its `custom_feat_extractor`:
torch-fidelity's module loaded from the same file by `bench.metrics.inception.load_inception`, entered after its resize,
at the step clean-fid's own wrapper (InceptionV3W, clean mode) starts from: x -> (x - 128) / 128 -> the layers
-> 2048 pool features. Speed does not depend on weight values; every number here is labelled "stand-in weights".

Each measurement is a fresh process (`--child`), so its peak RSS (VmHWM) is its own; the DataLoader workers'
largest peak is read from getrusage(RUSAGE_CHILDREN) inside it. Tools run interleaved (A B C A B C ...) at N
images for `--rounds` rounds, then one interleaved round at 16N for memory against image count; each tool uses
its own default number of decoding workers unless --workers sets all that allow it (torch-fidelity has no such
argument). Same batch size and torch thread count for all.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOOLS = ("ours", "torch-fidelity", "clean-fid")
REFERENCES = ("torch-fidelity", "clean-fid")
INCEPTION_INPUT = 299


# ------------------------------------------------------------------------------------------------ image sets
def write_image_set(folder: Path, size: int, count: int, seed: int) -> Path:
    """`count` PNGs of `size` x `size`: seeded crops (a third to all of the short side), flips and rotations of
    scikit-image's bundled colour photographs, prepared to `size` by the default protocol. Photographs, so that
    PNG decoding costs what it costs on real images (flat synthetic pictures compress, and decode, far faster)."""
    from PIL import Image

    from titok.data.images import _skimage_photos
    from titok.data.prepare import DEFAULT_PREPARATION, get_preparation, to_rgb

    folder.mkdir(parents=True, exist_ok=True)
    prepare = get_preparation(DEFAULT_PREPARATION)
    photos = [to_rgb(Image.open(p)) for p in _skimage_photos()]
    rng = np.random.default_rng(seed)
    for i in range(count):
        img = photos[int(rng.integers(len(photos)))]
        w, h = img.size
        side = int(min(w, h) * rng.uniform(1 / 3, 1.0))
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        img = img.crop((left, top, left + side, top + side))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = img.rotate(90 * int(rng.integers(4)))
        prepare(img, size).save(folder / f"{i:06d}.png")
    return folder


def first_images(source: Path, folder: Path, count: int) -> Path:
    """A folder holding the first `count` images of `source` (hard links where the file system allows)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.png"))[:count]:
        target = folder / path.name
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
    return folder


# ------------------------------------------------------------------------------------------ clean-fid's network
def clean_fid_inception(weights: str):
    """clean-fid's feature network swapped for torch-fidelity's Inception (loaded by our checked path)."""
    import torch
    from torch import nn

    from bench.metrics.inception import load_inception

    class CleanFidInception(nn.Module):
        """float (B, 3, 299, 299) in [0, 255] (clean-fid's resized batch) -> (B, 2048) pool features."""

        LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                  "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                  "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")

        def __init__(self, extractor: nn.Module):
            super().__init__()
            self.extractor = extractor

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-2:] != (INCEPTION_INPUT, INCEPTION_INPUT):
                raise ValueError(f"clean-fid hands the network {INCEPTION_INPUT}x{INCEPTION_INPUT} images, got "
                                 f"{tuple(x.shape)}")
            x = (x - 128) / 128
            for name in self.LAYERS:
                x = getattr(self.extractor, name)(x)
            return torch.flatten(x, 1)

    return CleanFidInception(load_inception(weights)[0]).eval()


# ------------------------------------------------------------------------------------------------ one measurement
def _count_inception_images():
    """(counter, trace, hook handle): a global forward hook counting the images that pass through a top-level
    Inception module, one count for all three tools whoever builds the module; after each batch it appends
    (images so far, VmRSS MiB, VmHWM MiB) to the trace, so memory against image count is seen within one run."""
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    seen, trace = [0], []

    def hook(module, inputs, output):
        # clean-fid's wrapper calls torch-fidelity's layers, never its forward: no image is counted twice
        if isinstance(module, FeatureExtractorInceptionV3) or type(module).__name__ == "CleanFidInception":
            seen[0] += inputs[0].shape[0]
            status = _vm_status()
            trace.append((seen[0], round(status["VmRSS"] / 1024), round(status["VmHWM"] / 1024)))

    return seen, trace, torch.nn.modules.module.register_module_forward_hook(hook)


def _vm_status() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process in KiB (0 where /proc does not say)."""
    out = {"VmRSS": 0, "VmHWM": 0}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in out:
                out[key] = int(line.split()[1])
    return out


def run_tool(tool: str, folder: str, weights: str, batch: int, workers: int | None) -> tuple[str, int]:
    """Features of every image of `folder` by `tool`'s own call, reduced to the statistic the call ends with;
    (a short summary of that statistic, workers used)."""
    if tool == "ours":
        from bench.metrics.image_sets import InceptionMetrics
        from titok.data.images import ImageFolder, default_num_workers, iter_image_batches

        acc = InceptionMetrics(("fid",), inception_weights=weights, batch_size=batch)
        for images, _ in iter_image_batches(ImageFolder(folder), batch, num_workers=workers):
            acc.add_fake(images)
        mu, sigma = acc.fake_statistics()
        used = default_num_workers() if workers is None else workers
        return f"mu.mean {mu.mean():.6g} tr(sigma) {np.trace(sigma):.6g}", used
    if tool == "torch-fidelity":
        import multiprocessing

        import torch_fidelity

        out = torch_fidelity.calculate_metrics(input1=folder, isc=True, feature_extractor_weights_path=weights,
                                               batch_size=batch, cuda=False, cache=False, verbose=False)
        # its DataLoader's worker count (utils.get_featuresdict_from_dataset); no argument sets it
        return f"isc {out['inception_score_mean']:.6g}", min(4, 2 * multiprocessing.cpu_count())
    if tool == "clean-fid":
        import inspect

        import torch
        from cleanfid import fid as cfid

        workers = inspect.signature(cfid.compute_fid).parameters["num_workers"].default if workers is None else workers
        net = clean_fid_inception(weights)
        feats = cfid.get_folder_features(folder, net, num_workers=workers, batch_size=batch,
                                         device=torch.device("cpu"), mode="clean", verbose=False)
        mu, sigma = np.mean(feats, axis=0), np.cov(feats, rowvar=False)  # what its fid_folder does next
        return f"mu.mean {mu.mean():.6g} tr(sigma) {np.trace(sigma):.6g}", workers
    raise ValueError(f"unknown tool {tool!r}; known: {', '.join(TOOLS)}")


def _import_tool(tool: str) -> None:
    """The tool's modules, imported before the clock starts: import time is the interpreter's, not throughput."""
    import importlib

    for name in {"ours": ("bench.metrics.image_sets", "titok.data.images"), "torch-fidelity": ("torch_fidelity",),
                 "clean-fid": ("cleanfid.fid", "bench.metrics.inception")}[tool]:
        importlib.import_module(name)


def child(spec: dict) -> dict:
    """One measurement in this (fresh) process: the tool's call timed (after its imports), its images counted,
    its peak memory."""
    import torch

    torch.set_num_threads(spec["threads"])
    _import_tool(spec["tool"])
    seen, trace, handle = _count_inception_images()
    try:
        t0 = time.perf_counter()
        summary, workers = run_tool(spec["tool"], spec["folder"], spec["weights"], spec["batch"], spec["workers"])
        seconds = time.perf_counter() - t0
    finally:
        handle.remove()
    return {"tool": spec["tool"], "seconds": seconds, "images": seen[0], "statistic": summary, "workers": workers,
            "peak_rss_mib": _vm_status()["VmHWM"] / 1024, "trace": trace,
            "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def measure(spec: dict, in_process: bool = False) -> dict:
    """`child(spec)` in a fresh interpreter; adds the whole process's wall time. `in_process` (for tests) runs it
    here instead: quick, but the peak memory is then this process's so far, not the tool's."""
    if in_process:
        t0 = time.perf_counter()
        return {**child(spec), "process_seconds": time.perf_counter() - t0}
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.devtools.eval_throughput", "--child", json.dumps(spec)],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['tool']} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_seconds": wall}


# ------------------------------------------------------------------------------------------------ the benchmark
def prepare(work: Path, sizes: list[int], count: int, scale: int) -> dict:
    """Image sets of N and scale*N images per size (the N set: the first N of the other): {size: {n: folder}}."""
    sets = {}
    for size in sizes:
        base = work / str(size)
        full = base / f"n{count * scale}"
        if len(list(full.glob("*.png"))) != count * scale:
            write_image_set(full, size, count * scale, seed=size)
        sets[size] = {count: str(first_images(full, base / f"n{count}", count)), count * scale: str(full)}
    return sets


def run_benchmark(a: argparse.Namespace, work: Path) -> dict:
    from bench.metrics.inception import make_standin_inception_weights
    from bench.run.env import env_tag, environment
    from bench.run.machine import machine_state

    weights = str(make_standin_inception_weights(work / "inception-standin.pth", seed=0))
    sets = prepare(work, a.sizes, a.count, a.scale)
    base = {"weights": weights, "batch": a.batch, "threads": a.threads, "workers": a.workers}
    res = {"env_tag": env_tag(environment("cpu")), "env": environment("cpu"), "machine_before": machine_state(),
           "batch": a.batch, "threads": a.threads, "count": a.count, "scale": a.scale, "rounds": a.rounds,
           "runs": []}
    warm = first_images(Path(sets[a.sizes[0]][a.count]), work / "warm-up", 2)
    for _ in range(a.warmup):  # code, libraries and the images into the OS's cache
        for tool in TOOLS:
            measure({**base, "tool": tool, "folder": str(warm)}, a.in_process)
    plan = [(r, n) for r in range(a.rounds) for n in (a.count,)] + [(a.rounds, a.count * a.scale)]
    for r, n in plan:
        for size in a.sizes:
            for tool in TOOLS:
                out = measure({**base, "tool": tool, "folder": sets[size][n]}, a.in_process)
                res["runs"].append({"round": r, "size": size, "n": n, **out})
                print(json.dumps(res["runs"][-1]), flush=True)
    res["machine_after"] = machine_state()
    return res


def summarize(res: dict) -> list[dict]:
    """One row per (size, n, tool): medians over rounds, speed relative to the faster reference."""
    rows = []
    for size in sorted({r["size"] for r in res["runs"]}):
        for n in sorted({r["n"] for r in res["runs"]}):
            by_tool = {t: [r for r in res["runs"] if (r["size"], r["n"], r["tool"]) == (size, n, t)] for t in TOOLS}
            med = {t: statistics.median(r["seconds"] for r in runs) for t, runs in by_tool.items() if runs}
            if not med:
                continue
            fastest_ref = min(med[t] for t in REFERENCES if t in med)
            for t, runs in by_tool.items():
                rows.append({"size": size, "n": n, "tool": t, "runs": len(runs), "median_s": med[t],
                             "images_per_s": n / med[t], "speed_vs_faster_reference": fastest_ref / med[t],
                             "process_s": statistics.median(r["process_seconds"] for r in runs),
                             "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                             "worker_peak_rss_mib": max(r["worker_peak_rss_mib"] for r in runs),
                             "workers": runs[0]["workers"], "images": sorted({r["images"] for r in runs}),
                             "statistic": runs[0]["statistic"]})
    return rows


def _markdown(res: dict, rows: list[dict], command: str, commit: str) -> str:
    m0, m1 = res["machine_before"], res["machine_after"]
    lines = [f"# Eval throughput: ours vs torch-fidelity vs clean-fid ({res['env_tag']}), stand-in weights", "",
             f"Command: `{command}`", "", f"Commit: {commit}", "",
             f"Load average (1 min / 5 min) before: {m0['load_avg_1m']:.2f} / {m0['load_avg_5m']:.2f}, after: "
             f"{m1['load_avg_1m']:.2f} / {m1['load_avg_5m']:.2f}, on {m0['cores']} cores ({m0['cpu_model']}); "
             f"torch {res['env']['torch']}, {res['threads']} torch thread(s) per process, batch {res['batch']}.", "",
             "Stand-in weights (seeded random Inception values, the real network): speeds are the network's, the FID "
             "statistics are not FID's. Each row: the median over rounds of the tool's call (folder -> features -> "
             "statistics) in a fresh process; speed vs faster reference = the faster of torch-fidelity and "
             "clean-fid's median seconds / this tool's (above 1: faster). Peak RSS: the process's VmHWM; workers: "
             "the largest DataLoader worker's (it counts pages shared with the main process).", "",
             "| size | images | tool | runs | median s | images/s | speed vs faster reference | process s | "
             "peak RSS MiB | worker peak MiB | workers | images through Inception | its statistic (stand-in) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['n']} | {r['tool']} | {r['runs']} | {r['median_s']:.1f} | "
                     f"{r['images_per_s']:.2f} | {r['speed_vs_faster_reference']:.3f} | {r['process_s']:.1f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['worker_peak_rss_mib']:.0f} | {r['workers']} | "
                     f"{'/'.join(map(str, r['images']))} | {r['statistic']} |")
    counts = sorted({r["n"] for r in rows})
    if len(counts) == 2:
        lo_n, hi_n = counts
        lines += ["", f"## Against image count: N = {lo_n}, {hi_n}", "",
                  f"Marginal images/s = {hi_n - lo_n} / (seconds at {hi_n} - median seconds at {lo_n}): the "
                  "steady rate, without the fixed cost of building the network and starting the workers.", "",
                  f"| size | tool | peak RSS MiB at {lo_n} | at {hi_n} | growth MiB | marginal images/s | "
                  "speed vs faster reference |", "|---|---|---|---|---|---|---|"]
        for size in sorted({r["size"] for r in rows}):
            pick = {(t, n): next(r for r in rows if (r["size"], r["n"], r["tool"]) == (size, n, t))
                    for t in TOOLS for n in counts}
            rate = {t: (hi_n - lo_n) / max(pick[t, hi_n]["median_s"] - pick[t, lo_n]["median_s"], 1e-9)
                    for t in TOOLS}
            best = max(rate[t] for t in REFERENCES)
            for t in TOOLS:
                lo, hi = pick[t, lo_n], pick[t, hi_n]
                lines.append(f"| {size} | {t} | {lo['peak_rss_mib']:.0f} | {hi['peak_rss_mib']:.0f} | "
                             f"{hi['peak_rss_mib'] - lo['peak_rss_mib']:+.0f} | {rate[t]:.2f} | {rate[t] / best:.3f} |")
    biggest = max(r["n"] for r in res["runs"])
    lines += ["", f"## Peak RSS (VmHWM, MiB) after each batch, runs of {biggest} images", "",
              "After each Inception forward pass, read in the measured process: flat once the allocator has warmed up "
              "means memory does not grow with the image count.", "",
              "| size | tool | VmHWM MiB after batch 1, 2, ... |", "|---|---|---|"]
    for r in res["runs"]:
        if r["n"] == biggest and r.get("trace"):
            lines.append(f"| {r['size']} | {r['tool']} | {' '.join(str(hwm) for _, _, hwm in r['trace'])} |")
    lines += ["", "Raw results:", "", "```json", json.dumps(res, indent=1), "```", ""]
    return "\n".join(lines)


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" (with uncommitted changes)" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, help="folder where the image sets are written once and reused "
                                               "(default: a temporary folder, removed at the end)")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--count", type=int, default=16, help="N: images per timed run (the memory round uses 16N)")
    p.add_argument("--scale", type=int, default=16, help="the memory round's image count is scale x N")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds at N")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads in each measured process")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding workers for ours and clean-fid (default: each tool's own default)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds of each tool on 2 images first")
    p.add_argument("--in-process", action="store_true",
                   help="for tests: measure in this process (fast; peak memory then not per tool)")
    p.add_argument("--out", type=Path, help="write the markdown report here (the command goes in it)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return 0
    import torch

    torch.set_num_threads(a.threads)  # the environment tag names the measured processes' thread count
    commit = _commit()
    work = a.images or Path(tempfile.mkdtemp(prefix="eval-throughput-"))
    try:
        res = run_benchmark(a, work)
    finally:
        if a.images is None:
            shutil.rmtree(work, ignore_errors=True)
    rows = summarize(res)
    res["rows"] = rows
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(_markdown(res, rows, "python -m bench.devtools.eval_throughput " + shlex.join(argv), commit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
