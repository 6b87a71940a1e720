"""Tables generated from result records only (never typed by hand): markdown, LaTeX and CSV, each with a legend.

Three tables, so that a reader never has to tell a measurement from a quotation by its position in a row:
`quality` (what this harness measured: rFID, PSNR, SSIM, gFID, IS, generation and decoding speed per model),
`published` (numbers quoted from the papers and releases, with their sources, for the models measured) and
`speed` (every speed record: op, batch, precision, inference options, how it was timed, images/sec, the ratio to
the reference-options record of the same run and setting, FLOP counts, memory, device, error).
Numbers from a stand-in Inception are Frechet distances in their own columns and are never called FID. Each
column has one number format, so its digits line up (three significant digits for rates, two decimals for FID).
Markdown files carry the legend under the table, LaTeX files as comments after the tabular, CSV files none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tabulate import tabulate

from bench.records.paper import PUBLISHED, SOURCES
from bench.records.store import current_records
from titok.errors import InputError
from titok.registry import get_spec

_FACTS: dict[tuple[str, str], dict] = {}


# ------------------------------------------------------------------------------------------ numbers
def significant(x: float, digits: int = 3) -> str:
    """`x` with `digits` significant digits in fixed notation: 0.0126, 0.448, 41.0, 900 (never 1.2e-02)."""
    if x == 0:
        return "0"
    x = float(f"{x:.{digits}g}")  # round first, so 9.996 becomes 10.0 and gets one decimal fewer
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def _fixed(decimals: int) -> Callable[[float], str]:
    return lambda x: f"{x:.{decimals}f}"


# One format per column, so that a column's digits are consistent whatever its values.
FORMATS: dict[str, Callable[[float], str]] = {
    "rFID": _fixed(2), "gFID": _fixed(2), "stand-in FD (recon)": _fixed(2), "stand-in FD (gen)": _fixed(2),
    "IS": _fixed(1), "PSNR (dB)": _fixed(2), "SSIM": _fixed(3), "codebook usage (%)": _fixed(1),
    "generate (img/s)": significant, "decode (img/s)": significant, "img/s": significant,
    "seconds per batch": significant, "GFLOP/img": significant, "TFLOP/s": significant,
    "x reference": _fixed(2), "% of peak": _fixed(1), "peak memory (MB)": _fixed(0), "params (M)": _fixed(1),
    "sFID": _fixed(2), "stand-in sFD (gen)": _fixed(2), "precision (k=3)": _fixed(3), "recall (k=3)": _fixed(3),
    "KID": _fixed(4),
}

# What each column means, written once; a table's legend lists the columns it shows.
MEANINGS: dict[str, str] = {
    "model": "the paper's name of the model; (512) marks the 512x512 variants",
    "preset": "the name `titok-bench list` shows and `--model` takes",
    "weights": "`random`: randomly initialised, no checkpoint given; its speed and memory are real, its quality "
               "numbers describe an untrained model. Otherwise the checkpoint's file name and sha256 prefix",
    "resolution": "image side in pixels (square images)",
    "tokens": "tokens per image",
    "codebook": "codebook entries of a VQ tokenizer, or `VAE cN` for continuous tokens of N channels",
    "rFID": "reconstruction FID (FID Inception weights) between the evaluated images and their reconstructions",
    "stand-in FD (recon)": "Frechet distance in the features of a seeded random-weight Inception (the stand-in "
                           "smoke runs and tests use when no Inception weights are given): it checks the pipeline, "
                           "it is NOT FID and compares with nothing published",
    "PSNR (dB)": "peak signal-to-noise ratio of the 8-bit reconstructions",
    "SSIM": "structural similarity of the 8-bit reconstructions (Gaussian window)",
    "codebook usage (%)": "distinct codes used over the evaluated images, as a share of the codebook",
    "images": "images the reconstruction metrics were computed over (the paper's protocol: 50,000)",
    "gFID": "generation FID of class-conditional samples against the reference statistics",
    "IS": "Inception Score of the samples (torch-fidelity's: 1008 logits, 10 splits)",
    "sFID": "ADM's spatial FID: Frechet distance of the first 7 channels of Inception's 17x17 `mixed_6/conv` map "
            "(2023-d), samples against the reference's mu_s/sigma_s",
    "precision (k=3)": "improved precision (Kynkaanniemi et al. 2019, k=3, Inception pool3 2048-d): share of samples "
                 "inside the real images' 3-NN balls",
    "recall (k=3)": "improved recall (k=3, pool3 2048-d): share of real images inside the samples' 3-NN balls",
    "KID": "kernel inception distance (torch-fidelity's: cubic polynomial kernel, 100 subsets), pool3 features",
    "stand-in FD (gen)": "as stand-in FD (recon), for generated samples: NOT FID",
    "stand-in sFD (gen)": "sFID's distance in the stand-in Inception's features: NOT sFID",
    "samples": "samples the generation metrics were computed over (the paper's protocol: 50,000, 50 per class)",
    "generate (img/s)": "images per second end to end (class labels to pixels: sampling, then decoding), "
                        "default inference options",
    "generate timing": "how that rate was timed; `single call`: one timed call with no warm-up, so one-off costs "
                       "(allocation, kernel selection) are inside it and the rate is understated",
    "decode (img/s)": "images per second decoding tokens to pixels, default inference options",
    "peak memory (MB)": "peak memory of the generate (else decode) measurement: GPU allocator peak on CUDA, "
                        "peak resident memory of the whole process (weights included) on CPU",
    "device": "where it ran (a CPU with the threads torch used)",
    "source": "where the numbers are quoted from (below)",
    "op": "`encode` image to tokens, `decode` tokens to image, `sample` class label to tokens, `generate` "
          "sample + decode",
    "steps": "sampling steps of a `sample` or `generate` row (generator forward passes per image; the rate falls "
             "in proportion)",
    "batch": "images per call (after halving on out-of-memory)",
    "precision": "what the row computed in: fp32, bf16 (`InferenceOptions.precision`: autocast inside the model, "
                 "on CPU too; the VQ search stays fp32) or fp16 (CUDA autocast)",
    "options": "inference options: `reference` computes as the original release (softmax written out, no fused "
               "kernels), `default` is every fast option; other labels name the options that differ from reference",
    "img/s": "images per second: batch / median seconds per batch",
    "timing": "median of N timed calls after W warm-up calls, or `single call` (no warm-up: one-off costs "
              "included, rate understated)",
    "x reference": "img/s over the `reference` options' img/s in the same run and setting (a row with no "
                   "reference of its own precision: over the fp32 reference)",
    "seconds per batch": "median seconds per call",
    "GFLOP/img": "floating-point operations counted per image",
    "TFLOP/s": "counted FLOP over time",
    "% of peak": "TFLOP/s as a share of the device's bf16 peak",
    "params (M)": "parameters timed, in millions (generator + tokenizer for sample and generate)",
    "error": "why no number: `not supported` (e.g. fp16 on CPU) or out of memory after backing off",
}


@dataclass(frozen=True)
class Table:
    name: str  # file stem: quality, published, speed
    title: str
    frame: pd.DataFrame  # numbers stay numbers here (the CSV); formatting happens in render()
    notes: tuple[str, ...] = ()  # lines of the legend that are not column meanings
    meanings: tuple[tuple[str, str], ...] = ()  # where a column means something else in this table

    def legend(self) -> list[str]:
        meanings = {**MEANINGS, **dict(self.meanings)}
        return [f"{c}: {meanings[c]}" for c in self.frame.columns if c in meanings] + list(self.notes)


# ------------------------------------------------------------------------------------- the records
def select_records(records: list[dict]) -> list[dict]:
    """The records tables and figures are drawn from: the one place they are filtered before rendering, so a
    table and a figure made from the same file always show the same measurements. Records of tasks no table
    shows (stats, train) are left out; error records stay (the speed table lists them). A file holding several
    commits' runs gives one row per measurement: the latest run's (bench/records/store.py `latest_records`; the earlier
    ones are what `titok-bench history` shows). A measurement a later commit redid under a newer protocol (its
    sampling settings written out, another resize) shows that commit's record only (`current_records`), not one
    row per protocol with the same visible settings."""
    return [r for r in current_records(records) if r.get("task") in ("recon", "gen", "speed")]


def model_facts(name: str) -> dict:
    """Display name, token count and codebook of a preset (tokenizer, or a generator's tokenizer)."""
    key = ("tokenizer", name)
    if key not in _FACTS:
        try:
            spec = get_spec("tokenizer", name)
        except KeyError:
            try:
                gspec = get_spec("generator", name)
            except KeyError:
                return {"display": name}
            spec = get_spec("tokenizer", gspec.tokenizer) if gspec.tokenizer else None
            if spec is None:
                return {"display": gspec.display_name or name}
            facts = dict(model_facts(spec.name), display=gspec.display_name or name)
            _FACTS[key] = facts
            return facts
        from titok.registry import create

        with torch.device("meta"):
            tok = create("tokenizer", name)
        codebook = tok.codebook_size if tok.codebook_size else f"VAE c{tok.token_channels}"
        _FACTS[key] = {"display": spec.display_name or name, "tokens": tok.num_tokens, "codebook": codebook,
                       "resolution": tok.image_size}
    return _FACTS[key]


def device_label(env: dict) -> str:
    """Where a record ran, as tables and figures name it: the GPU, or the CPU with its thread count."""
    name = env.get("device_name") or env.get("device") or ""
    return f"{name}, {env['threads']} threads" if env.get("device") == "cpu" and env.get("threads") else name


def options_label(protocol: dict) -> str:
    """The options' label as this version of the project names them (records keep the label of their day)."""
    from titok.inference import InferenceOptions, describe

    try:
        return describe(InferenceOptions.from_dict(protocol["options"]))
    except (KeyError, TypeError, ValueError):
        return protocol.get("options_label", "")


def timing(record: dict) -> tuple[int | None, int | None]:
    """(timed calls, warm-up calls) of a speed record. Records that carry per-iteration times say how many
    (`metrics.iterations` as a list, or a count `n`); older ones carry the suite's `iters` and `warmup`."""
    m, p = record.get("metrics", {}), record.get("protocol", {})
    its = m.get("iterations", p.get("iterations"))
    n = len(its) if isinstance(its, list) else its.get("n") if isinstance(its, dict) else its
    n = n if n is not None else m.get("n", p.get("n", p.get("iters")))
    return n, p.get("warmup")


def is_single_call(record: dict) -> bool:
    """One timed call and no warm-up: its rate includes one-off costs and is not comparable with warmed rates."""
    n, warmup = timing(record)
    return n == 1 and not warmup


def timing_label(record: dict) -> str:
    n, warmup = timing(record)
    if n is None:
        return ""
    if is_single_call(record):
        return "single call"
    return f"median of {n}, {warmup or 0} warm-up"


def _speed_setting(r: dict) -> tuple:
    p = r["protocol"]
    return p.get("resolution"), p.get("batch_size_used", p.get("batch_size")), p.get("precision") == "fp32"


def default_speed(records: list[dict], op: str) -> dict[tuple[str, str], dict]:
    """Per (model, weights): the speed record of `op` with the default inference options that a paper table
    quotes: fp32 first, then the largest batch. The quality table and the figures both read this choice."""
    chosen: dict[tuple[str, str], dict] = {}
    for r in records:
        if (r["task"] != "speed" or r.get("error") or r["protocol"].get("op") != op
                or options_label(r["protocol"]) not in ("default", "")
                or not r["metrics"].get("images_per_sec")):
            continue
        key = (r["model"], r["weights_tag"])
        best = chosen.get(key)
        rank = (_speed_setting(r)[2], _speed_setting(r)[1] or 0)
        if best is None or rank >= (_speed_setting(best)[2], _speed_setting(best)[1] or 0):
            chosen[key] = r
    return chosen


# ------------------------------------------------------------------------------------------- tables
QUALITY_COLUMNS = ["model", "weights", "resolution", "tokens", "codebook", "rFID", "stand-in FD (recon)",
                   "PSNR (dB)", "SSIM", "codebook usage (%)", "images", "gFID", "sFID", "IS", "precision (k=3)",
                   "recall (k=3)", "KID", "stand-in FD (gen)", "stand-in sFD (gen)", "samples", "generate (img/s)",
                   "generate timing", "decode (img/s)", "peak memory (MB)", "device"]


def quality_table(records: list[dict]) -> pd.DataFrame:
    """What was measured, one row per model and weights: quality, then speed with the default options."""
    order = {key: i for i, key in reversed(list(enumerate((r["model"], r["weights_tag"]) for r in records)))}
    rows: dict[tuple, dict] = {}

    def row(r: dict) -> dict:
        facts = model_facts(r["model"])
        return rows.setdefault((r["model"], r["weights_tag"]), {
            "model": facts["display"], "weights": r["weights_tag"],
            "resolution": r["protocol"].get("resolution") or facts.get("resolution"),
            "tokens": facts.get("tokens"), "codebook": facts.get("codebook")})

    for r in records:
        m, p = r["metrics"], r["protocol"]
        if r.get("error"):
            continue
        if r["task"] == "recon":
            usage = m.get("codebook_usage")
            row(r).update({"rFID": m.get("rfid"), "stand-in FD (recon)": m.get("standin_rfid"),
                           "PSNR (dB)": m.get("psnr"), "SSIM": m.get("ssim"),
                           "codebook usage (%)": 100 * usage if usage is not None else None,
                           "images": p.get("num_images")})
        elif r["task"] == "gen":
            row(r).update({"gFID": m.get("gfid"), "sFID": m.get("sfid"), "IS": m.get("isc_mean"),
                           "precision (k=3)": m.get("precision"), "recall (k=3)": m.get("recall"),
                           "KID": m.get("kid_mean"),
                           "stand-in FD (gen)": m.get("standin_gfid"), "stand-in sFD (gen)": m.get("standin_sfid"),
                           "samples": p.get("num_samples")})
    decoding, generation = default_speed(records, "decode"), default_speed(records, "generate")
    for r in decoding.values():
        row(r).update({"decode (img/s)": r["metrics"]["images_per_sec"],
                       "peak memory (MB)": r["metrics"].get("peak_memory_mb"), "device": device_label(r["env"])})
    for r in generation.values():  # the generate measurement's memory replaces decoding's: it holds both models
        row(r).update({"generate (img/s)": r["metrics"]["images_per_sec"], "generate timing": timing_label(r),
                       "peak memory (MB)": r["metrics"].get("peak_memory_mb"), "device": device_label(r["env"])})
    ordered = [rows[key] for key in sorted(rows, key=order.__getitem__)]  # the order models first appear in
    return _drop_empty(pd.DataFrame(ordered, columns=QUALITY_COLUMNS), keep=("model",))


PUBLISHED_COLUMNS = ["model", "resolution", "tokens", "codebook", "rFID", "gFID", "IS", "generate (img/s)",
                     "device", "source"]


def published_table(records: list[dict]) -> pd.DataFrame:
    """Numbers quoted from papers and releases for the models the records measured (never mixed with them)."""
    measured = {r["model"] for r in records}
    rows = []
    for p in PUBLISHED:
        if p.model not in measured:
            continue
        facts = model_facts(p.model)
        rows.append({"model": p.display or facts["display"], "resolution": p.resolution, "tokens": facts.get("tokens"),
                     "codebook": facts.get("codebook"), "rFID": p.metrics.get("rfid"), "gFID": p.metrics.get("gfid"),
                     "IS": p.metrics.get("isc_mean"), "generate (img/s)": p.metrics.get("images_per_sec"),
                     "device": p.hardware or None, "source": f"[{SOURCES.index(p.source) + 1}]"})
    return _drop_empty(pd.DataFrame(rows, columns=PUBLISHED_COLUMNS), keep=("model", "source"))


SPEED_COLUMNS = ["preset", "op", "steps", "resolution", "batch", "precision", "options", "img/s", "timing",
                 "x reference", "seconds per batch", "GFLOP/img", "TFLOP/s", "% of peak", "peak memory (MB)",
                 "params (M)", "device", "weights", "error"]


def _setting(r: dict, precision: str | None = None) -> tuple:
    """What a speed record measured, inference options aside: records equal in this are one ratio apart."""
    p = r["protocol"]
    return (r.get("run_id"), r["model"], r["weights_tag"], p.get("op"), p.get("resolution"),
            p.get("batch_size_used", p.get("batch_size")), precision or p.get("precision"),
            r["env"].get("device_name"))


def sampling_steps(record: dict) -> int | None:
    """A sample/generate row's sampler steps: generator passes per image, the first thing its rate depends on
    (TiTok-S-128 samples in 64 steps, B-64 in 8, so S-128 generates ~14x slower at about the same size)."""
    if record["protocol"].get("op") not in ("sample", "generate"):
        return None
    return (record["protocol"].get("sampling") or {}).get("num_steps")


def speed_table(records: list[dict]) -> pd.DataFrame:
    speed = [r for r in records if r["task"] == "speed"]
    reference = {_setting(r): r["metrics"]["images_per_sec"] for r in speed
                 if options_label(r["protocol"]) == "reference" and r["metrics"].get("images_per_sec")}
    rows = []
    for r in speed:
        p, m = r["protocol"], r["metrics"]
        ref, ips = reference.get(_setting(r)) or reference.get(_setting(r, "fp32")), m.get("images_per_sec")
        rows.append({"preset": r["model"], "op": p.get("op"), "steps": sampling_steps(r),
                     "resolution": p.get("resolution"),
                     "batch": p.get("batch_size_used", p.get("batch_size")), "precision": p.get("precision"),
                     "options": options_label(p), "img/s": ips, "timing": timing_label(r) if ips else "",
                     "x reference": ips / ref if ref and ips else None, "seconds per batch": m.get("sec_per_batch"),
                     "GFLOP/img": m.get("gflop_per_image"), "TFLOP/s": m.get("achieved_tflops"),
                     "% of peak": 100 * m["peak_fraction"] if m.get("peak_fraction") is not None else None,
                     "peak memory (MB)": m.get("peak_memory_mb"), "params (M)": m.get("params_m"),
                     "device": device_label(r["env"]), "weights": r["weights_tag"], "error": r.get("error", "")})
    return _drop_empty(pd.DataFrame(rows, columns=SPEED_COLUMNS), keep=("preset", "op", "img/s"))


def _drop_empty(df: pd.DataFrame, keep: tuple[str, ...]) -> pd.DataFrame:
    """Leave out the columns no row filled (no FLOP counts, no reference variant, no errors)."""
    filled = [c for c in df.columns if c in keep or df[c].map(lambda v: v not in (None, "") and not pd.isna(v)).any()]
    return df[filled]


def tables(records: list[dict]) -> list[Table]:
    """The three tables with their titles and the legend lines that are not column meanings."""
    shown = select_records(records)
    published = published_table(shown)
    used = sorted({int(s.strip("[]")) for s in published.get("source", [])})
    return [
        Table("quality", "Measured by this harness", quality_table(shown), (
            "Empty cell: not measured. Speeds are the default-options fp32 measurement at the largest batch; "
            "every speed record is in the speed table.",)),
        Table("published", "Published (quoted from the sources below, not measured here)", published,
              tuple(f"[{i}] {SOURCES[i - 1]}" for i in used), meanings=(
                  ("generate (img/s)", "generation throughput as the source reports it (samples/s)"),
                  ("device", "where the source measured that throughput"))),
        Table("speed", "Speed and memory, every measurement", speed_table(shown), meanings=(
            ("peak memory (MB)", "peak memory of the measurement: GPU allocator peak on CUDA, peak resident memory "
                                 "of the whole process (weights included) on CPU"),)),
    ]


# ------------------------------------------------------------------------------------------ render
def _cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    fmt = FORMATS.get(column)
    if fmt is not None:
        return fmt(value)
    return str(int(value)) if float(value).is_integer() else significant(value)


def render(table: Table | pd.DataFrame, fmt: str) -> str:
    """One table as markdown (title, table, legend), LaTeX (tabular, legend as comments) or CSV (numbers only)."""
    if isinstance(table, pd.DataFrame):
        table = Table("table", "", table)
    df = table.frame
    if fmt == "csv":
        return df.to_csv(index=False)
    cells = [[_cell(c, v) for c, v in zip(df.columns, values, strict=True)] for values in df.itertuples(index=False)]
    align = ["right" if pd.api.types.is_numeric_dtype(df[c]) else "left" for c in df.columns]
    if fmt == "md":
        if not len(df):
            return "\n\n".join(part for part in (f"### {table.title}" if table.title else "", "(no rows)") if part)
        body = tabulate(cells, headers=list(df.columns), tablefmt="pipe", disable_numparse=True,
                        colalign=align)
        legend = "\n".join(f"- {line}" for line in table.legend())
        return "\n\n".join(part for part in (f"### {table.title}" if table.title else "", body, legend) if part)
    if fmt == "tex":
        body = tabulate(cells, headers=list(df.columns), tablefmt="latex_booktabs", disable_numparse=True,
                        colalign=align)
        legend = "\n".join(f"% {line}" for line in table.legend())
        return "\n".join(part for part in (f"% {table.title}" if table.title else "", body, legend) if part)
    raise InputError(f"unknown table format {fmt!r}; known: md, tex, csv")


def write_tables(records: list[dict], out_dir: str | Path) -> list[Path]:
    """quality, published and speed tables, each as .md, .tex and .csv, and all three in one tables.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    rendered = tables(records)
    for table in rendered:
        for fmt in ("md", "tex", "csv"):
            path = out_dir / f"{table.name}.{fmt}"
            path.write_text(render(table, fmt) + "\n")
            written.append(path)
    path = out_dir / "tables.md"
    path.write_text("\n\n".join(render(t, "md") for t in rendered) + "\n")
    written.append(path)
    return written
