"""Tables a reader understands without the code: measured and published apart, a legend under each table, one
number format per column, single-call timings marked."""

from __future__ import annotations

import re

import pytest

from bench.records.tables import (
    MEANINGS,
    default_speed,
    published_table,
    quality_table,
    render,
    significant,
    speed_table,
    tables,
    timing_label,
    write_tables,
)
from tests.records_fixture import records, speed


def _md_rows(md: str) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the first pipe table in a markdown text."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return split[0], split[2:]


@pytest.mark.parametrize(("value", "text"), [(0.002, "0.00200"), (0.00343, "0.00343"), (0.01, "0.0100"),
                                             (0.448, "0.448"), (41.04, "41.0"), (9.996, "10.0"), (900.0, "900"),
                                             (12345.6, "12300"), (0.0, "0")])
def test_significant_digits_in_fixed_notation(value, text):
    assert significant(value) == text


def test_measured_and_published_are_separate_tables(tmp_path):
    recs = records()
    quality, published = quality_table(recs), published_table(recs)
    assert "source" not in quality.columns and "weights" in quality.columns
    assert set(published.model) == {"TiTok-L-32", "TiTok-B-64", "TiTok-S-128", "TiTok-L-64 (512)", "MaskGIT",
                                    "Taming-VQGAN f16-1024"}
    # A published number never lands in the measured table, and the reverse.
    l32 = quality.set_index("model").loc["TiTok-L-32"]
    assert l32["rFID"] == 2.3456 and l32["gFID"] == 3.1
    assert published.set_index("model").loc["TiTok-L-32", "rFID"] == 2.21
    write_tables(recs, tmp_path)
    quality_md, published_md = (tmp_path / "quality.md").read_text(), (tmp_path / "published.md").read_text()
    assert "2.21" not in quality_md and "2.35" in quality_md and "2.35" not in published_md
    both = (tmp_path / "tables.md").read_text()
    assert both.index("### Measured") < both.index("### Published") < both.index("### Speed")
    # Published rows name their source, explained under the table.
    assert "[1] TiTok release README" in published_md and "[4] MaskGIT paper" in published_md


def test_every_column_has_a_legend_line_under_its_table(tmp_path):
    write_tables(records(), tmp_path)
    for name in ("quality", "published", "speed"):
        md = (tmp_path / f"{name}.md").read_text()
        header, _ = _md_rows(md)
        legend = md[md.rindex("|"):]  # everything after the table
        for column in header:
            assert f"- {column}: " in legend, f"{name}.md: no legend line for {column!r}"
        tex = (tmp_path / f"{name}.tex").read_text()
        assert tex.index("\\bottomrule") < tex.index(f"% {header[0]}: ")
    speed_md = (tmp_path / "speed.md").read_text()
    assert "`single call`" in speed_md and "original release" in speed_md


def test_legend_explains_random_weights_and_stand_in(tmp_path):
    write_tables(records(), tmp_path)
    quality = (tmp_path / "quality.md").read_text()
    assert "- weights: `random`: randomly initialised" in quality
    assert "- stand-in FD (recon): " in quality and "NOT FID" in quality
    assert all(name in MEANINGS for name in ("rFID", "gFID", "IS", "generate timing"))


def test_digits_consistent_within_each_column():
    for table in tables(records()):
        header, rows = _md_rows(render(table, "md"))
        for i, column in enumerate(header):
            cells = [row[i] for row in rows if row[i]]
            if column in ("rFID", "gFID", "PSNR (dB)"):
                assert all(re.fullmatch(r"\d+\.\d\d", c) for c in cells), (column, cells)
            if column in ("img/s", "generate (img/s)", "decode (img/s)", "seconds per batch"):
                # three significant digits, fixed notation: 0.0126, 0.300, 41.0 (no 0.3, no 1.26e-02)
                assert all("e" not in c and len(c.lstrip("0.").replace(".", "")) == 3 for c in cells), (column, cells)
            if column == "IS":
                assert all(re.fullmatch(r"\d+\.\d", c) for c in cells), (column, cells)


def test_single_call_timings_are_marked_and_new_style_counts_read():
    single = speed("titok_s128", "generate", 0.0126, iters=1, warmup=0)
    assert timing_label(single) == "single call"
    assert timing_label(speed("titok_l32", "decode", 0.4, iters=3, warmup=1)) == "median of 3, 1 warm-up"
    per_iteration = speed("titok_b64", "generate", 0.26, iters=1, warmup=0,
                          metrics={"iterations": {"n": 5, "min": 30.0, "median": 30.7, "max": 31.9}})
    assert timing_label(per_iteration) == "median of 5, 0 warm-up"  # the record's own count wins over the suite's
    quality = quality_table(records()).set_index("model")
    assert quality.loc["TiTok-S-128", "generate timing"] == "single call"
    assert quality.loc["TiTok-B-64", "generate timing"] == "median of 5, 1 warm-up"
    table = speed_table(records())
    sample = table[(table.preset == "titok_s128") & (table.op == "sample")].iloc[0]
    assert sample["timing"] == "single call"


def test_quoted_speed_is_default_options_fp32_largest_batch():
    chosen = default_speed(records(), "generate")[("titok_l32", "random")]
    assert chosen["protocol"]["batch_size"] == 8 and chosen["metrics"]["images_per_sec"] == 0.30
    assert quality_table(records()).set_index("model").loc["TiTok-L-32", "generate (img/s)"] == 0.30


def test_speed_table_keeps_error_rows_and_ratios():
    table = speed_table(records())
    assert table["error"].str.startswith("not supported").sum() == 1
    l32 = table[(table.preset == "titok_l32") & (table.op == "decode")].set_index("options")
    assert l32.loc["default", "x reference"] == pytest.approx(0.41 / 0.35)
