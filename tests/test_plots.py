"""Figures from a records fixture: axes (labels, log scales), the points drawn, measured and published told apart,
one label per model, stand-in distances kept off FID axes; the files and the `plot` command."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.records.plots import gfid_vs_throughput, rfid_vs_tokens, speed_by_options, write_plots
from bench.records.store import append_record
from tests.records_fixture import records, speed


def _points(ax, prefix: str) -> set[tuple[float, float]]:
    """(x, y) of the scatter points whose legend label starts with `prefix` (measured / published)."""
    return {(round(float(x), 4), round(float(y), 4)) for c in ax.collections if c.get_label().startswith(prefix)
            for x, y in c.get_offsets()}


def _names(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_gfid_against_throughput_is_the_papers_figure():
    fig = gfid_vs_throughput(records())
    ax, strip = fig.axes
    assert ax.get_xscale() == "log" and strip.get_xscale() == "log"
    assert "gFID" in ax.get_ylabel() and "samples/s" in strip.get_xlabel()
    # Measured: the default-options, fp32, largest-batch rate against the measured gFID.
    assert _points(ax, "measured") == {(0.30, 3.1), (0.26, 2.9), (0.0747, 3.2)}
    # Published: only those with a published throughput (TiTok-L-64 at 512 on an A100, DiT-XL/2).
    assert _points(ax, "published") == {(41.0, 2.74), (0.1, 3.04)}
    names = _names(ax)
    assert sorted(names) == sorted(set(names)) == ["DiT-XL/2", "TiTok-B-64", "TiTok-L-32", "TiTok-L-64 (512)"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("measured: ") for t in legend) and "published (A100)" in legend
    # Models timed but without a gFID sit in the strip below, at their measured rate.
    assert [t.get_text() for t in strip.get_yticklabels()] == ["TiTok-S-128", "MaskGIT"]
    assert _points(strip, "measured") == {(0.0126, 0.0), (0.148, 1.0)}
    single = [c for c in strip.collections if "single call" in c.get_label()]
    assert len(single) == 1 and single[0].get_facecolor().size == 0  # hollow: a single timed call


def test_gfid_figure_without_any_generation_records_still_draws():
    fig = gfid_vs_throughput([r for r in records() if r["task"] == "recon"])
    assert len(fig.axes) == 1 and _points(fig.axes[0], "published") == {(41.0, 2.74), (0.1, 3.04)}
    assert not _points(fig.axes[0], "measured")


def test_rfid_against_tokens_keeps_stand_ins_off_the_fid_axis():
    fig = rfid_vs_tokens(records())
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert "tokens" in ax.get_xlabel() and "rFID" in ax.get_ylabel()
    measured = {(round(x / 2**0.08), y) for x, y in _points(ax, "measured")}  # drawn a little right of x
    assert measured == {(32, 2.3456), (64, 1.9), (256, 8.1)}
    published = _points(ax, "published")
    assert {(32.0, 2.21), (128.0, 0.84), (256.0, 7.94)} <= published
    assert all(y != 12.108 for _, y in measured | published)  # TiTok-S-128 has a stand-in distance only
    assert any("TiTok-S-128" in t.get_text() and "not FID" in t.get_text() for t in fig.texts)
    assert len(_names(ax)) == len(set(_names(ax)))
    assert [t.get_text() for t in ax.get_xticklabels()][:4] == ["32", "64", "128", "256"]


def test_speed_per_option_draws_one_bar_per_variant_and_marks_single_calls():
    fig = speed_by_options(records())
    (ax,) = fig.axes
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert "TiTok-L-32 decode batch 8" in rows and "TiTok-S-128 sample batch 1" in rows
    bars = {(c.get_label(), round(p.get_width(), 4)): p for c in ax.containers for p in c.patches
            if p.get_width() > 0}
    assert ("reference", 0.35) in bars and ("default", 0.41) in bars
    assert bars[("default", 0.0126)].get_hatch() == "////" and not bars[("default", 0.41)].get_hatch()
    assert ax.get_xscale() == "log" and "images per second" in ax.get_xlabel()  # 0.00343 to 0.41: two decades
    assert any("1.17x reference" in t for t in _names(ax))  # 0.41 / 0.35
    narrow = speed_by_options([speed("titok_l32", "decode", 0.35, options="reference"),
                               speed("titok_l32", "decode", 0.41)])
    assert narrow.axes[0].get_xscale() == "linear" and narrow.axes[0].get_xlim()[0] == 0


def test_write_plots_png_and_svg(tmp_path):
    paths = write_plots(records()[:2], tmp_path)  # two speed records: every figure, quickly
    assert sorted(p.name for p in paths) == sorted(f"{n}.{f}" for n in ("gfid_vs_throughput", "rfid_vs_tokens",
                                                                         "speed_by_options") for f in ("png", "svg"))
    for p in paths:
        head = p.read_bytes()[:300]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else b"<svg" in head


def test_plot_command(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    for r in records():
        append_record(path, r)
    assert main(["plot", str(path), "--out", str(tmp_path / "figs"), "--format", "svg"]) == 0
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "gfid_vs_throughput.svg", "rfid_vs_tokens.svg", "speed_by_options.svg"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["plot", str(empty), "--out", str(tmp_path / "x")]) == 2
    assert "no readable records" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plot", str(path), "--out", str(tmp_path), "--format", "pdf"])
