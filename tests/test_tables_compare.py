"""Tables from records (paper rows marked, stand-ins never called FID) and regression comparison."""

from __future__ import annotations

import copy

from bench.cli import main
from bench.records.compare import compare
from bench.records.store import append_record, make_record, read_records
from bench.records.tables import Table, published_table, quality_table, render, speed_table, write_tables
from bench.run.env import env_tag, environment

ENV = environment("cpu")


def speed(model, ips, op="decode", mem=100.0):
    return make_record(run_id="r", model=model, task="speed", commit="c", env=ENV,
                       metrics={"images_per_sec": ips, "sec_per_batch": 1 / ips, "peak_memory_mb": mem},
                       protocol={"op": op, "batch_size": 1, "precision": "fp32", "resolution": 256})


def recon(model, key="standin_rfid", value=3.0):
    return make_record(run_id="r", model=model, task="recon", commit="c", env=ENV,
                       metrics={key: value, "psnr": 20.0, "ssim": 0.5},
                       protocol={"data": "builtin:skimage", "resolution": 256, "extractor": {"standin": True}})


def test_quality_table_keeps_stand_ins_apart_and_published_rows_out():
    df = quality_table([recon("titok_l32"), speed("titok_l32", 2.0)])
    assert len(df) == 1  # measured only: the published numbers are their own table
    measured = df.iloc[0]
    assert measured["model"] == "TiTok-L-32" and measured["tokens"] == 32 and measured["codebook"] == 4096
    assert measured["stand-in FD (recon)"] == 3.0 and "rFID" not in df.columns
    published = published_table([recon("titok_l32")])
    assert list(published.model) == ["TiTok-L-32"] and published.iloc[0]["rFID"] == 2.21
    assert published.iloc[0]["source"] == "[1]"
    md = render(Table("quality", "Measured", df), "md")
    assert "stand-in FD (recon)" in md and "NOT FID" in md
    assert "\\toprule" in render(Table("quality", "Measured", df), "tex")


def test_real_fid_goes_in_the_fid_column():
    df = quality_table([recon("titok_b64", key="rfid", value=1.8)])
    assert df.iloc[0]["rFID"] == 1.8


def test_speed_table_keeps_errors():
    bad = speed("titok_l32", 1.0)
    bad["error"] = "not supported: bf16 autocast is measured on CUDA only"
    df = speed_table([speed("titok_b64", 3.0), bad])
    assert list(df["img/s"])[0] == 3.0 and "not supported" in list(df["error"])[1]


def test_write_tables_all_formats(tmp_path):
    paths = write_tables([recon("titok_l32"), speed("titok_l32", 2.0)], tmp_path)
    expected = sorted([f"{n}.{f}" for n in ("quality", "published", "speed") for f in ("md", "tex", "csv")]
                      + ["tables.md"])
    assert sorted(p.name for p in paths) == expected
    assert "TiTok-L-32" in (tmp_path / "quality.csv").read_text()


def test_compare_judges_single_numbers_with_the_wider_tolerance(tmp_path, capsys):
    """Records with one number per measurement (no iterations kept) are judged on medians with 25% tolerance:
    throughput is reported once (not again as seconds per batch), and the row says the base has no spread."""
    base = [speed("titok_l32", 10.0), speed("titok_b64", 8.0), recon("titok_l32")]
    same = copy.deepcopy(base)
    slower, drifted = copy.deepcopy(base), copy.deepcopy(base)
    for recs, ips in ((slower, 7.0), (drifted, 9.0)):  # a planted 30% drop; a 10% drift
        recs[0]["metrics"]["images_per_sec"], recs[0]["metrics"]["sec_per_batch"] = ips, 1 / ips
    assert not compare(same, base).regressions
    rep = compare(slower, base)
    assert [c.metric for c in rep.regressions] == ["images_per_sec"] and rep.matched == 3
    assert "base has no spread" in rep.regressions[0].note
    assert not compare(drifted, base).regressions
    assert not compare(slower, base, speed_tolerance=0.5).regressions

    for name, recs in (("base", base), ("same", same), ("slower", slower)):
        for r in recs:
            append_record(tmp_path / f"{name}.jsonl", r)
    assert main(["compare", str(tmp_path / "same.jsonl"), str(tmp_path / "base.jsonl")]) == 0
    assert main(["compare", str(tmp_path / "slower.jsonl"), str(tmp_path / "base.jsonl")]) == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_compare_does_not_match_different_protocols(tmp_path, capsys):
    a, b = speed("titok_l32", 10.0), speed("titok_l32", 5.0)
    b["protocol"]["batch_size"] = 8
    rep = compare([b], [a])
    assert rep.matched == 0 and rep.only_new and rep.only_base and not rep.regressions
    append_record(tmp_path / "a.jsonl", a)
    append_record(tmp_path / "b.jsonl", b)
    # Nothing matched is not a pass: exit 2, naming the field that differs.
    assert main(["compare", str(tmp_path / "b.jsonl"), str(tmp_path / "a.jsonl")]) == 2
    assert "batch_size 8 here vs 1 in the base" in capsys.readouterr().err


def test_tables_command_skips_malformed_lines(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    append_record(path, recon("titok_l32"))
    with open(path, "a") as f:
        f.write("garbage\n")
    assert main(["tables", str(path), "--out", str(tmp_path / "t")]) == 0
    assert "skipped" in capsys.readouterr().err
    assert len(read_records(path).records) == 1


def test_publish_files_records_by_environment_once(tmp_path, capsys):
    gpu_env = dict(ENV, device="cuda", device_name="NVIDIA H100 80GB HBM3", torch="2.14.1+cu128")
    gpu = make_record(run_id="g", model="titok_l32", task="speed", commit="c", env=gpu_env,
                      metrics={"images_per_sec": 900.0}, protocol={"op": "generate", "batch_size": 64})
    out = tmp_path / "out.jsonl"
    for rec in (speed("titok_l32", 2.0), recon("titok_l32"), gpu):
        append_record(out, rec)
    into = tmp_path / "results"
    assert main(["publish", str(out), "--name", "smoke", "--into", str(into)]) == 0
    files = sorted(p.name for p in into.glob("*.jsonl"))
    assert files == [f"smoke-{env_tag(ENV)}.jsonl",
                     "smoke-nvidia-h100-80gb-hbm3-torch2.14.1.jsonl"]
    cpu_file = into / files[0]
    assert len(read_records(cpu_file).records) == 2
    assert (into / files[0].removesuffix(".jsonl") / "speed.md").is_file()
    # The figures are drawn beside the tables, from the same records.
    for figure in ("gfid_vs_throughput", "rfid_vs_tokens", "speed_by_options"):
        for fmt in ("png", "svg"):
            assert (into / files[0].removesuffix(".jsonl") / f"{figure}.{fmt}").stat().st_size > 0
    # Publishing the same run again adds nothing; a bad name is a usage error.
    assert main(["publish", str(out), "--name", "smoke", "--into", str(into)]) == 0
    assert len(read_records(cpu_file).records) == 2 and "0 new records" in capsys.readouterr().out
    assert main(["publish", str(out), "--name", "../x", "--into", str(into)]) == 2


def test_publish_never_duplicates_a_commit_and_tables_show_the_latest(tmp_path, capsys):
    into = tmp_path / "results"
    target = into / f"smoke-{env_tag(ENV)}.jsonl"

    def run(name, commit, ips, when):
        path = tmp_path / f"{name}.jsonl"
        for model in ("titok_l32", "titok_b64"):
            rec = speed(model, ips)
            rec.update(run_id=name, git_commit=commit, time=when)
            append_record(path, rec)
        return str(path)

    first = run("run1", "aaa", 2.0, "2026-11-28T10:00:00+0000")
    rerun = run("run2", "aaa", 3.0, "2026-11-28T11:00:00+0000")  # the same commit measured again
    assert main(["publish", first, "--name", "smoke", "--into", str(into)]) == 0
    assert main(["publish", rerun, "--name", "smoke", "--into", str(into)]) == 2
    assert "--replace" in capsys.readouterr().err
    assert [r["run_id"] for r in read_records(target).records] == ["run1", "run1"]  # refused: nothing written
    assert main(["publish", rerun, "--name", "smoke", "--into", str(into), "--replace"]) == 0
    assert [r["run_id"] for r in read_records(target).records] == ["run2", "run2"]  # one set, the new one
    later = run("run3", "bbb", 4.0, "2026-11-28T12:00:00+0000")  # another commit: history grows
    assert main(["publish", later, "--name", "smoke", "--into", str(into)]) == 0
    assert [r["git_commit"] for r in read_records(target).records] == ["aaa", "aaa", "bbb", "bbb"]
    table = (target.with_suffix("") / "speed.csv").read_text()
    assert table.count("titok_l32") == 1 and "4.0" in table and "3.0" not in table  # one row: the latest
