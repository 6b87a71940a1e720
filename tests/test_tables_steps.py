"""The speed table says how many sampling steps a generator row took: TiTok-S-128 generates ~14x slower than B-64
at about the same parameter count because it samples in 64 steps against 8 (the release's defaults)."""

from __future__ import annotations

from pathlib import Path

from bench.records.store import read_records
from bench.records.tables import render, speed_table, tables

SMOKE = Path(__file__).resolve().parents[1] / "results" / "smoke-cpu-amd-epyc-2threads-torch2.14.1.jsonl"


def test_generator_rows_carry_their_steps_and_tokenizer_rows_none():
    table = speed_table(read_records([str(SMOKE)]).records)
    steps = {(row.preset, row.op): row.steps for row in table.itertuples()}
    assert steps[("titok_s128", "generate")] == 64 and steps[("titok_s128", "sample")] == 64
    assert steps[("titok_b64", "generate")] == 8 and steps[("titok_l32", "generate")] == 8
    assert steps[("maskgit_256", "generate")] == 8  # the MaskGIT paper's 8 at 256
    tokenizer_rows = [v for (_, op), v in steps.items() if op in ("encode", "decode")]
    assert tokenizer_rows and all(v is None or v != v for v in tokenizer_rows)  # empty cell (None or NaN)


def test_steps_column_is_explained_and_rendered():
    speed = next(t for t in tables(read_records([str(SMOKE)]).records) if t.name == "speed")
    assert list(speed.frame.columns)[:3] == ["preset", "op", "steps"]
    assert any(line.startswith("steps: sampling steps") for line in speed.legend())
    md = render(speed, "md")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]
    assert rows[0][:3] == ["preset", "op", "steps"]
    assert ["titok_s128", "generate", "64"] in [row[:3] for row in rows]  # an integer, not 64.0
    assert ["titok_l32", "encode", ""] in [row[:3] for row in rows]
