"""Figures drawn from result records (matplotlib, headless): the paper's headline figure and two companions.

- `gfid_vs_throughput`: gFID against generation samples/s on a log axis, as TiTok (arXiv 2406.07550) plots it
  to show its speed at equal quality. Measured points are filled, published ones hollow; one label per model, and
  a dotted line joins a model's measured point to its published one. Models whose speed was measured but not
  their gFID (every smoke run) sit in a strip under the axes at their measured rate.
- `rfid_vs_tokens`: reconstruction FID against tokens per image, the paper's compactness argument.
- `speed_by_options`: images/sec of every speed measurement, one bar per inference-options variant.
A stand-in Inception's distance is never drawn on an FID axis; single-call timings are drawn hollow or hatched.
Figures are built on `matplotlib.figure.Figure` without pyplot, so no display and no global backend are needed,
and the functions return them for inspection.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.records.paper import PUBLISHED
from bench.records.tables import (
    default_speed,
    device_label,
    is_single_call,
    model_facts,
    options_label,
    select_records,
    significant,
    timing_label,
)

FORMATS = ("png", "svg")
PUBLISHED_STYLE = {"marker": "s", "facecolor": "none", "edgecolor": "black", "s": 46, "linewidths": 1.3}
MEASURED_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
RATE_FORMAT = FuncFormatter(lambda x, _: f"{x:g}")  # decades as 0.01, 0.1, 1, 10


def _device_label(r: dict) -> str:
    p = r["protocol"]
    batch = p.get("batch_size_used", p.get("batch_size"))
    return f"{device_label(r['env']) or '?'}, batch {batch}, {p.get('precision')}"


def _note(fig: Figure, lines: list[str]) -> None:
    """Small print under the axes (what was left out, how it was timed), with room kept for it."""
    width = int(fig.get_figwidth() * 17)  # characters of 7-point text per line across the figure
    lines = [wrapped for line in lines for wrapped in textwrap.wrap(line, width)]
    if lines:
        height = (0.02 + 0.11 * len(lines)) / fig.get_figheight()  # inches of 7-point text, as a figure fraction
        fig.get_layout_engine().set(rect=(0, height, 1, 1 - height))
        fig.text(0.01, 0.005, "\n".join(lines), fontsize=7, color="dimgray", va="bottom", ha="left")


def _place_labels(fig: Figure, ax, names: list[tuple[float, float, str]]) -> None:
    """Each name right of its point, nudged up where it would overlap a name below it (a gray line then joins
    it to its point). Called last: the layout has to have fixed the axes' size first."""
    fig.draw_without_rendering()
    box = ax.get_position()
    width_pt, height_pt = (box.width * fig.get_figwidth() * 72, box.height * fig.get_figheight() * 72)
    line, dx = 10 / height_pt, 5 / width_pt  # one line of 8-point text; 5 points right of the point
    to_axes = ax.transData + ax.transAxes.inverted()
    placed: list[tuple[float, float, int]] = []  # (x, y, length) of the names drawn so far, in axes fractions
    for x, y, text in sorted(names, key=lambda n: n[1]):
        xa, ya = to_axes.transform((x, y))
        wanted = top = ya + 0.3 * line
        for px, py, length in placed:  # a name below whose text spans this x pushes this one up
            if px - len(text) * 4.6 / width_pt < xa < px + length * 4.6 / width_pt and top < py + line:
                top = py + line
        placed.append((xa, top, len(text)))
        moved = top - wanted > 0.25 * line
        ax.annotate(text, (x, y), xytext=(xa + dx, top), textcoords="axes fraction", fontsize=8, va="bottom",
                    arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.5} if moved else None)


# ------------------------------------------------------------------------------ gFID vs throughput
def gfid_vs_throughput(records: list[dict]) -> Figure:
    """The paper's figure: gFID (y) against generation samples/s (x, log), measured and published told apart."""
    records = select_records(records)
    gfid = {(r["model"], r["weights_tag"]): r for r in records if r["task"] == "gen" and not r.get("error")
            and r["metrics"].get("gfid") is not None}
    speed = default_speed(records, "generate")
    measured = [(key, gfid[key], speed[key]) for key in gfid if key in speed]
    rate_only = [(key, r) for key, r in speed.items() if key not in gfid]
    published = [p for p in PUBLISHED if p.metrics.get("gfid") is not None and p.metrics.get("images_per_sec")]

    fig = Figure(figsize=(7.5, 5.2 + 0.28 * len(rate_only)), layout="constrained")
    if rate_only:
        ax, strip = fig.subplots(2, 1, sharex=True, height_ratios=[4, 0.6 + 0.28 * len(rate_only)])
    else:
        ax, strip = fig.subplots(1, 1), None
    labelled: set[str] = set()
    names: list[tuple[float, float, str]] = []
    devices: dict[str, str] = {}
    for (model, weights), g, s in measured:
        name, device = model_facts(model)["display"], _device_label(s)
        color = devices.setdefault(device, MEASURED_COLORS[len(devices) % len(MEASURED_COLORS)])
        device += ", random weights" if weights == "random" else ""  # a gFID of an untrained model, say so
        x, y = s["metrics"]["images_per_sec"], g["metrics"]["gfid"]
        single = is_single_call(s)
        ax.scatter([x], [y], s=46, color=color, facecolor="none" if single else color, zorder=3,
                   label=f"measured: {device}" + (" (single call)" if single else ""))
        names.append((x, y, name))
        labelled.add(name)
        for p in published:
            if p.model == model:
                ax.plot([x, p.metrics["images_per_sec"]], [y, p.metrics["gfid"]], ":", color="gray", lw=0.8,
                        label="dotted: the same model measured and published")
    for p in published:
        name = p.display or model_facts(p.model)["display"]
        x, y = p.metrics["images_per_sec"], p.metrics["gfid"]
        ax.scatter([x], [y], zorder=3, label=f"published ({p.hardware or 'hardware not stated'})", **PUBLISHED_STYLE)
        if name not in labelled:
            names.append((x, y, name))
            labelled.add(name)
    ax.set_xscale("log")
    ax.set_ylabel("gFID (lower is better)")
    ax.set_title("gFID against generation throughput")
    _dedupe_legend(ax, loc="upper right")
    ax.grid(True, which="major", alpha=0.3)
    if strip is not None:
        for i, (_, r) in enumerate(rate_only):
            color = devices.setdefault(_device_label(r), MEASURED_COLORS[len(devices) % len(MEASURED_COLORS)])
            single = is_single_call(r)
            strip.scatter([r["metrics"]["images_per_sec"]], [i], s=36, color=color,
                          facecolor="none" if single else color,
                          label=f"measured: {_device_label(r)}" + (" (single call)" if single else ""))
        strip.set_yticks(range(len(rate_only)), [model_facts(k[0])["display"] for k, _ in rate_only], fontsize=8)
        strip.set_ylim(len(rate_only) - 0.5, -0.5)
        strip.set_title("speed measured, no gFID in these records", fontsize=9)
        strip.grid(True, axis="x", which="major", alpha=0.3)
        _dedupe_legend(strip, loc="lower right", fontsize=7)
    bottom = strip if strip is not None else ax
    bottom.set_xlabel("generation throughput (samples/s, log scale): class label to pixels")
    _log_axis(bottom.xaxis, [*(s["metrics"]["images_per_sec"] for *_, s in measured),
                             *(r["metrics"]["images_per_sec"] for _, r in rate_only),
                             *(p.metrics["images_per_sec"] for p in published)], right=5)
    unplaced = [model_facts(k[0])["display"] for k in gfid if k not in speed]
    models = {k[0] for k in speed} | {k[0] for k in gfid}
    quoted = [f"{model_facts(p.model)['display']} {p.metrics['gfid']:.2f}" for p in PUBLISHED
              if p.model in models and p.metrics.get("gfid") is not None and not p.metrics.get("images_per_sec")]
    _note(fig, ([f"gFID measured, generation not timed (not drawn): {', '.join(unplaced)}"] if unplaced else [])
          + ([f"published gFID without a published throughput (not drawn): {', '.join(quoted)}"] if quoted else []))
    _place_labels(fig, ax, names)
    return fig


# ------------------------------------------------------------------------------------ rFID vs tokens
def rfid_vs_tokens(records: list[dict]) -> Figure:
    """Reconstruction FID (y) against tokens per image (x, log 2): measured filled, published hollow."""
    records = select_records(records)
    measured = {}
    for r in records:
        if r["task"] == "recon" and not r.get("error") and r["metrics"].get("rfid") is not None:
            measured[(r["model"], r["weights_tag"])] = r
    standin_only = sorted({model_facts(r["model"])["display"] for r in records if r["task"] == "recon"
                           and r["metrics"].get("rfid") is None and r["metrics"].get("standin_rfid") is not None})
    fig = Figure(figsize=(7.5, 5.2), layout="constrained")
    ax = fig.subplots()
    labelled: set[str] = set()
    names: list[tuple[float, float, str]] = []
    tokens_seen = []
    for (model, weights), r in measured.items():
        facts = model_facts(model)
        if not facts.get("tokens"):
            continue
        x, y = facts["tokens"] * 2**0.08, r["metrics"]["rfid"]  # a little right of a published point at x
        ax.scatter([x], [y], s=46, color="tab:blue", zorder=3,
                   label=f"measured ({r['protocol'].get('num_images', '?')} images)" if weights != "random" else
                   "measured, random weights")
        tokens_seen.append(facts["tokens"])
        names.append((x, y, facts["display"]))
        labelled.add(facts["display"])
        for p in PUBLISHED:
            if p.model == model and p.metrics.get("rfid") is not None:
                ax.plot([x, facts["tokens"]], [y, p.metrics["rfid"]], ":", color="gray", lw=0.8,
                        label="dotted: the same model measured and published")
    for p in PUBLISHED:
        facts = model_facts(p.model)
        if p.metrics.get("rfid") is None or not facts.get("tokens"):
            continue
        x, y, name = facts["tokens"], p.metrics["rfid"], p.display or facts["display"]
        ax.scatter([x], [y], zorder=3, label="published", **PUBLISHED_STYLE)
        tokens_seen.append(x)
        if name not in labelled:
            names.append((x, y, name))
            labelled.add(name)
    ax.set_xscale("log", base=2)
    if tokens_seen:
        ticks = sorted(set(tokens_seen))
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlim(min(ticks) / 1.4, max(ticks) * 2.2)  # room for the labels right of the points
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("tokens per image (log scale)")
    ax.set_ylabel("rFID (lower is better)")
    ax.set_title("Reconstruction FID against the number of tokens")
    ax.grid(True, alpha=0.3)
    _dedupe_legend(ax, loc="upper left")
    _note(fig, [f"stand-in Inception distances only (not FID, not drawn): {', '.join(standin_only)}"]
          if standin_only else [])
    _place_labels(fig, ax, names)
    return fig


# ------------------------------------------------------------------------------ speed per options
def speed_by_options(records: list[dict]) -> Figure:
    """Images/sec of every speed setting (model, op, batch, precision, device), one bar per inference-options
    variant, with its ratio to the `reference` variant of the same setting; hatched bars are single timed calls."""
    records = [r for r in select_records(records) if r["task"] == "speed" and not r.get("error")
               and r["metrics"].get("images_per_sec")]
    settings: dict[tuple, dict[str, dict]] = {}
    for r in records:
        p = r["protocol"]
        key = (r["model"], p.get("op"), p.get("batch_size_used", p.get("batch_size")), p.get("precision"),
               device_label(r["env"]))
        settings.setdefault(key, {})[options_label(p) or "?"] = r
    labels = sorted({o for v in settings.values() for o in v}, key=lambda o: (o != "reference", o != "default", o))
    colors = {o: MEASURED_COLORS[i % len(MEASURED_COLORS)] for i, o in enumerate(labels)}
    # Parts of the setting every row shares go to the title, the rest to the row names.
    shared = [len({k[i] for k in settings}) == 1 for i in range(5)]
    parts = (lambda v: v, lambda v: v, lambda v: f"batch {v}", lambda v: v, lambda v: v)
    fig = Figure(figsize=(8, 1.8 + 0.3 * sum(max(1, len(v)) for v in settings.values())), layout="constrained")
    ax = fig.subplots()
    rates = [r["metrics"]["images_per_sec"] for r in records]
    logscale = bool(rates) and max(rates) / min(rates) > 20  # a linear axis from 0 reads better within a decade
    for row, variants in enumerate(settings.values()):
        present = [o for o in labels if o in variants]
        height = 0.8 / len(present)
        reference = variants.get("reference")
        for j, option in enumerate(present):
            r = variants[option]
            rate = r["metrics"]["images_per_sec"]
            y = row - 0.4 + height * (j + 0.5)
            single = is_single_call(r)
            ax.barh([y], [rate], height=height * 0.9, color=colors[option], hatch="////" if single else None,
                    edgecolor="white" if single else colors[option], label=option)
            text = significant(rate)
            if reference is not None and option != "reference":
                text += f"  ({rate / reference['metrics']['images_per_sec']:.2f}x reference)"
            ax.annotate(text, (rate, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    names = [" ".join([model_facts(k[0])["display"]] + [str(f(v)) for f, v, same in zip(parts[1:4], k[1:4],
                                                                                         shared[1:4], strict=True)
                                                           if not same]) for k in settings]
    ax.set_yticks(range(len(settings)), names, fontsize=8)
    ax.set_ylim(len(settings) - 0.5, -0.5)
    if logscale:
        ax.set_xscale("log")
        _log_axis(ax.xaxis, rates, right=3)
        ax.set_xlabel("images per second (log scale)")
    else:
        ax.set_xlim(0, max(rates, default=1) * 1.45)
        ax.set_xlabel("images per second")
    common = [str(f(v)) for f, v, same in zip(parts[1:], next(iter(settings), (None,) * 5)[1:], shared[1:],
                                              strict=True) if same and v is not None]
    # The settings on a line of their own: beside the title they ran past the figure's edge with long device names.
    ax.set_title("Speed per inference option" + (f"\n({', '.join(common)})" if common else ""))
    ax.grid(True, axis="x", alpha=0.3)
    if any(is_single_call(r) for r in records):
        ax.barh([0], [0], color="lightgray", hatch="////", edgecolor="white", label="hatched: single call")
    _dedupe_legend(ax, loc="lower right", fontsize=7, title="inference options")
    if not settings:
        ax.text(0.5, 0.5, "no speed records", ha="center", va="center", transform=ax.transAxes)
    timings = sorted({timing_label(r) for r in records} - {""})
    _note(fig, [f"timed as: {'; '.join(timings)}. Image size: 256 unless the name says (512)."] if timings else [])
    return fig


# --------------------------------------------------------------------------------------- helpers
def _dedupe_legend(ax, **kwargs) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique: dict = {}
    for label, handle in zip(labels, handles, strict=True):
        unique.setdefault(label, handle)
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=kwargs.pop("fontsize", 8), **kwargs)


def _log_axis(axis, values: list[float], right: float = 1.6) -> None:
    """Decades as major ticks written as plain numbers (0.01, 0.1, 1, 10), with room for labels on the right."""
    values = [v for v in values if v and v > 0]
    if values:
        (axis.axes.set_xlim if axis.axis_name == "x" else axis.axes.set_ylim)(min(values) / 1.6, max(values) * right)
    axis.set_major_locator(LogLocator(base=10))
    axis.set_major_formatter(RATE_FORMAT)
    axis.set_minor_formatter(NullFormatter())


FIGURES = {"gfid_vs_throughput": gfid_vs_throughput, "rfid_vs_tokens": rfid_vs_tokens,
           "speed_by_options": speed_by_options}


def write_plots(records: list[dict], out_dir: str | Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Every figure as OUT/<name>.png and .svg (150 dpi PNG for a README, SVG for a paper)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in FIGURES.items():
        fig = draw(records)
        for fmt in formats:
            path = out_dir / f"{name}.{fmt}"
            # SVG text stays text (small files, editable in a paper); no date and fixed ids, so a figure redrawn
            # from the same records is the same file.
            with rc_context({"svg.fonttype": "none", "svg.hashsalt": "titok-bench"}):
                fig.savefig(path, dpi=150, metadata={"Date": None} if fmt == "svg" else None)
            written.append(path)
    return written
