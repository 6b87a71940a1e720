"""The eval-throughput benchmark (bench.devtools.eval_throughput) runs end to end on a tiny folder and writes its
report: every tool, every size and count, each tool's images all through the Inception network. Not a timed test."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.metrics


def _table_rows(text: str) -> list[list[str]]:
    first = text.split("\n## ")[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in first.splitlines()
            if re.match(r"\| \d+ \| \d+ \| ", line)]


def test_report_has_every_tool_and_equal_feature_counts(tmp_path):
    from bench.devtools.eval_throughput import TOOLS, main

    out = tmp_path / "report.md"
    argv = ["--images", str(tmp_path / "sets"), "--sizes", "40", "--count", "2", "--scale", "2", "--rounds", "1",
            "--batch", "2", "--workers", "0", "--warmup", "0", "--in-process", "--out", str(out)]
    assert main(argv) == 0
    text = out.read_text()
    assert "python -m bench.devtools.eval_throughput --images" in text and "--count 2" in text
    assert "stand-in weights" in text and "Load average" in text and "Commit: " in text
    rows = _table_rows(text)
    # size, images, tool, runs, ..., images through Inception (column 12)
    assert sorted((r[0], r[1], r[2]) for r in rows) == sorted((s, n, t) for s in ("40",) for n in ("2", "4")
                                                               for t in TOOLS)
    for r in rows:
        assert r[11] == r[1], f"{r[2]} passed {r[11]} images through Inception for a folder of {r[1]}"
    assert len(list((tmp_path / "sets" / "40" / "n4").glob("*.png"))) == 4
    memory = text.split("## Against image count")[1].split("Raw results")[0]
    assert all(f"| 40 | {t} |" in memory for t in TOOLS)
    trace = text.split("after each batch, runs of 4 images")[1].split("Raw results")[0]
    for t in TOOLS:  # batch 2 over 4 images: two peaks read, one after each forward pass
        (line,) = [line for line in trace.splitlines() if line.startswith(f"| 40 | {t} |")]
        assert len(line.split("|")[3].split()) == 2, line
