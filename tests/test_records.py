"""Results records: schema, append-only atomic lines, tolerant reading, environment block."""

from __future__ import annotations

import json

import pytest

from bench.records.store import SCHEMA_VERSION, append_record, make_record, new_run_id, read_records
from bench.run.env import env_tag, environment


def rec(model="m", value=1.0, **kw):
    return make_record(run_id="r1", model=model, task="speed", metrics={"images_per_sec": value},
                       protocol={"op": "encode", "batch_size": 1}, env=environment("cpu"), commit="abc", **kw)


def test_round_trip_and_schema(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, rec("a"))
    append_record(path, rec("b", error="out of memory at batch 8"))
    res = read_records(path)
    assert [r["model"] for r in res.records] == ["a", "b"] and not res.problems
    r = res.records[0]
    assert r["schema_version"] == SCHEMA_VERSION and r["git_commit"] == "abc" and r["weights_tag"] == "random"
    assert {"python", "torch", "device", "device_name", "threads"} <= set(r["env"])
    assert res.records[1]["error"].startswith("out of memory")


def test_non_finite_values_stay_valid_json(tmp_path):
    path = tmp_path / "r.jsonl"
    append_record(path, rec(value=float("inf")))
    line = path.read_text().strip()
    assert json.loads(line)["metrics"]["images_per_sec"] == "inf"


def test_malformed_lines_are_skipped_and_reported(tmp_path):
    path = tmp_path / "r.jsonl"
    append_record(path, rec("a"))
    with open(path, "a") as f:
        f.write('{"truncated": \n')  # what a crash mid-write of some other tool could leave
        f.write('{"model": "no other fields"}\n')
    append_record(path, rec("c"))
    res = read_records(path)
    assert [r["model"] for r in res.records] == ["a", "c"]
    assert len(res.problems) == 2 and ":2:" in res.problems[0] and ":3:" in res.problems[1]


def test_append_never_touches_earlier_records(tmp_path):
    path = tmp_path / "r.jsonl"
    append_record(path, rec("a"))
    before = path.read_bytes()
    append_record(path, rec("b"))
    assert path.read_bytes().startswith(before)
    with pytest.raises(ValueError, match="lacks"):
        append_record(path, {"model": "x"})
    assert path.read_bytes().count(b"\n") == 2


def test_unknown_task_and_run_ids():
    with pytest.raises(ValueError, match="unknown task"):
        make_record(run_id="r", model="m", task="bench", metrics={}, protocol={}, env={})
    assert new_run_id() != new_run_id()


def test_env_tag_is_file_name_safe():
    tag = env_tag(environment("cpu"))
    assert tag.startswith("cpu-") and "torch" in tag and all(c.isalnum() or c in "-." for c in tag)
    xeon = dict(environment("cpu"), cpu="Intel(R) Xeon(R) Platinum 8480C CPU @ 2.00GHz", threads=2, torch="2.13.0+cpu")
    assert env_tag(xeon) == "cpu-intel-xeon-platinum-8480c-2threads-torch2.13.0"
    epyc = dict(xeon, cpu="AMD EPYC 9654 96-Core Processor")
    assert env_tag(epyc) == "cpu-amd-epyc-9654-2threads-torch2.13.0"


def test_optional_noise_fields_and_latest_records(tmp_path):
    from bench.records.store import latest_records, rewrite_records

    a = rec("a", spreads={"sec_per_batch": {"n": 2, "min": 1.0, "median": 1.1, "max": 1.2, "spread": 0.18}},
            machine={"load_avg_1m": 0.3, "loaded": False})
    assert "spreads" not in rec("b") and "machine" not in rec("b")  # absent, not null, when not measured
    old, new = rec("a", value=1.0), rec("a", value=2.0)
    old["time"], new["time"] = "2026-11-28T10:00:00+0000", "2026-11-28T12:00:00+0100"  # 11:00 UTC: the latest
    other_machine = dict(rec("a", value=3.0), env=dict(rec("a")["env"], threads=64))
    kept = latest_records([new, old, other_machine, rec("z")])
    assert [r["metrics"]["images_per_sec"] for r in kept if r["model"] == "a"] == [2.0, 3.0]
    path = tmp_path / "r.jsonl"
    append_record(path, old)
    rewrite_records(path, [a, new])
    res = read_records(path)
    assert [r["metrics"]["images_per_sec"] for r in res.records] == [1.0, 2.0] and not res.problems
    assert res.records[0]["spreads"]["sec_per_batch"]["n"] == 2 and res.records[0]["machine"]["loaded"] is False
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]  # no temporary file left behind
