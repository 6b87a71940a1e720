"""Tables generated from result records only (never typed by hand): markdown, LaTeX and CSV.

`quality`: the paper's layout (tokenizer, #tokens, codebook, rFID, PSNR, SSIM, generator params, gFID, IS,
images/sec, memory), one row per model measured, plus the published numbers in their own rows marked
"published". Numbers from a stand-in Inception get their own columns, headed as such; they are never FID.
`speed`: every speed record (op, batch, precision, resolution, inference options, images/sec, the ratio to the
reference-options record of the same run and setting, counted GFLOP per image, achieved TFLOP/s and % of the
device's peak, peak memory, device, error).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from tabulate import tabulate

from bench.paper import PUBLISHED
from bench.records import latest_records
from titok.errors import InputError
from titok.registry import get_spec

# A model's row shows end-to-end generation where it was measured (generator + tokenizer parameters), else its
# tokenizer's decoding (tokenizer parameters); the headers say so, since the two are not the same number.
THROUGHPUT, THROUGHPUT_PARAMS = "img/s (generate, else decode)", "params (M) (generate, else tokenizer)"
QUALITY_COLUMNS = ["model", "source", "resolution", "tokens", "codebook", "rFID", "PSNR", "SSIM", "codebook usage",
                   "gFID", "IS",
                   THROUGHPUT_PARAMS, THROUGHPUT, "peak mem (MB)", "rFID (stand-in Inception)",
                   "gFID (stand-in Inception)"]
SPEED_COLUMNS = ["model", "op", "resolution", "batch", "precision", "options", "img/s", "x reference", "sec/batch",
                 "GFLOP/img", "TFLOP/s", "% of peak", "peak mem (MB)", "params (M)", "device", "weights", "error"]
_FACTS: dict[tuple[str, str], dict] = {}


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


def _fmt(x, digits=2):
    if x is None or (isinstance(x, float) and pd.isna(x)):
        return ""
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) >= 10 ** -digits or x == 0 else f"{x:.2e}"
    return str(x)


def quality_table(records: list[dict]) -> pd.DataFrame:
    rows: dict[tuple, dict] = {}
    for r in records:
        if r.get("error") or r["task"] not in ("recon", "gen", "speed"):
            continue
        facts = model_facts(r["model"])
        res = r["protocol"].get("resolution") or facts.get("resolution")
        key = (r["model"], r["weights_tag"], res)
        row = rows.setdefault(key, {"model": facts["display"], "source": f"measured ({r['weights_tag']})",
                                    "resolution": res, "tokens": facts.get("tokens"),
                                    "codebook": facts.get("codebook")})
        m = r["metrics"]
        if r["task"] == "recon":
            row.update({"rFID": m.get("rfid"), "PSNR": m.get("psnr"), "SSIM": m.get("ssim"),
                        "codebook usage": m.get("codebook_usage"), "rFID (stand-in Inception)": m.get("standin_rfid")})
        elif r["task"] == "gen":
            row.update({"gFID": m.get("gfid"), "IS": m.get("isc_mean"),
                        "gFID (stand-in Inception)": m.get("standin_gfid")})
        elif (r["task"] == "speed" and r["protocol"].get("op") in ("generate", "decode")
              and _options_label(r["protocol"]) in ("default", "")):  # the paper table shows the default path
            # The table's throughput column is end-to-end generation, else decoding, at the largest batch.
            if r["protocol"]["op"] == "generate" or row.get("_op") != "generate":
                if r["protocol"].get("precision") == "fp32" or row.get(THROUGHPUT) is None:
                    row.update({THROUGHPUT: m.get("images_per_sec"), "peak mem (MB)": m.get("peak_memory_mb"),
                                THROUGHPUT_PARAMS: m.get("params_m"), "_op": r["protocol"]["op"]})
    measured = list(rows.values())
    for p in PUBLISHED:
        if not any(k[0] == p.model for k in rows):
            continue
        facts = model_facts(p.model)
        measured.append({"model": facts["display"], "source": f"published: {p.source}", "resolution": p.resolution,
                         "tokens": facts.get("tokens"), "codebook": facts.get("codebook"),
                         "rFID": p.metrics.get("rfid"), "gFID": p.metrics.get("gfid"), "IS": p.metrics.get("isc_mean")})
    df = pd.DataFrame(measured, columns=QUALITY_COLUMNS)
    return df.dropna(axis=1, how="all")


def _setting(r: dict) -> tuple:
    """What a speed record measured, inference options aside: records equal in this are one ratio apart."""
    p = r["protocol"]
    return (r.get("run_id"), r["model"], r["weights_tag"], p.get("op"), p.get("resolution"),
            p.get("batch_size_used", p.get("batch_size")), p.get("precision"), r["env"].get("device_name"))


def _options_label(protocol: dict) -> str:
    """The options' label as this version of the project names them (records keep the label of their day)."""
    from titok.inference import InferenceOptions, describe

    try:
        return describe(InferenceOptions.from_dict(protocol["options"]))
    except (KeyError, TypeError, ValueError):
        return protocol.get("options_label", "")


def speed_table(records: list[dict]) -> pd.DataFrame:
    speed = [r for r in records if r["task"] == "speed"]
    reference = {_setting(r): r["metrics"]["images_per_sec"] for r in speed
                 if _options_label(r["protocol"]) == "reference" and r["metrics"].get("images_per_sec")}
    rows = []
    for r in speed:
        p, m = r["protocol"], r["metrics"]
        ref, ips = reference.get(_setting(r)), m.get("images_per_sec")
        rows.append({"model": r["model"], "op": p.get("op"), "resolution": p.get("resolution"),
                     "batch": p.get("batch_size_used", p.get("batch_size")), "precision": p.get("precision"),
                     "options": _options_label(p), "img/s": ips,
                     "x reference": ips / ref if ref and ips else None, "sec/batch": m.get("sec_per_batch"),
                     "GFLOP/img": m.get("gflop_per_image"), "TFLOP/s": m.get("achieved_tflops"),
                     "% of peak": 100 * m["peak_fraction"] if m.get("peak_fraction") is not None else None,
                     "peak mem (MB)": m.get("peak_memory_mb"), "params (M)": m.get("params_m"),
                     "device": r["env"].get("device_name"), "weights": r["weights_tag"], "error": r.get("error", "")})
    df = pd.DataFrame(rows, columns=SPEED_COLUMNS)
    keep = [c for c in SPEED_COLUMNS if c in ("model", "op", "img/s") or df[c].map(lambda v: v not in (None, "")
                                                                                     and not pd.isna(v)).any()]
    return df[keep]  # columns no record filled (no FLOP counts, no reference variant, no errors) are left out


def render(df: pd.DataFrame, fmt: str) -> str:
    shown = df.apply(lambda col: col.map(_fmt)) if len(df) else df
    if fmt == "md":
        return tabulate(shown.values.tolist(), headers=list(shown.columns), tablefmt="pipe")
    if fmt == "tex":
        return tabulate(shown.values.tolist(), headers=list(shown.columns), tablefmt="latex_booktabs")
    if fmt == "csv":
        return df.to_csv(index=False)
    raise InputError(f"unknown table format {fmt!r}; known: md, tex, csv")


def write_tables(records: list[dict], out_dir: str | Path) -> list[Path]:
    records = latest_records(records)  # one row per measurement: the latest run's (see bench/records.py)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in (("quality", quality_table(records)), ("speed", speed_table(records))):
        for fmt in ("md", "tex", "csv"):
            path = out_dir / f"{name}.{fmt}"
            path.write_text(render(df, fmt) + "\n")
            written.append(path)
    return written
