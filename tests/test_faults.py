"""Long runs survive faults and bad input: nothing lost, nothing silently wrong.

Sampling killed with SIGKILL part-way (one process, and one of two shards) resumes to byte-identical images;
records are whole or absent and readers skip damaged lines; every kind of bad input through the CLI is one
message on stderr and exit status 2, never a traceback or a partial record; checkpoints, statistics and
suite files are read as data, never run as code.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import titok
from bench.cli import main
from bench.records.store import append_record, make_record, read_records
from bench.run.suite import load_suite
from bench.run.tasks.gen import _check_manifest
from tests.untrusted import RunsCode
from titok.data.images import ImageFolder
from titok.errors import InputError
from titok.registry import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
NUM, BATCH = 64, 2  # 32 batches of the tiny generator: a few seconds, long enough to be killed part-way
GENERATE = ["generate", "--model", "titok_tiny_bert", "--num", str(NUM), "--batch-size", str(BATCH), "--seed", "5"]
TIMEOUT = 120  # no subprocess may outlive this: a hang fails the test instead of stalling the suite


# ------------------------------------------------------------------------------------------------ helpers
def pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


def spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"{proc.args} did not finish in {TIMEOUT} s")
    assert proc.returncode == 0, err
    return out


def kill_when(proc: subprocess.Popen, count) -> None:
    """SIGKILL `proc` as soon as `count()` >= 1 says enough samples exist (or fail if it never gets there)."""
    deadline = time.monotonic() + TIMEOUT
    while not count():
        if proc.poll() is not None:
            pytest.fail(f"{proc.args} ended (status {proc.returncode}) before it could be killed: "
                        f"{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{proc.args} wrote too few samples in {TIMEOUT} s")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, bytes]:
    """The reference: the same run in one go, in-process."""
    out = tmp_path_factory.mktemp("uninterrupted")
    assert main([*GENERATE, "--out", str(out)]) == 0
    files = pngs(out)
    assert len(files) == NUM
    return {p.name: p.read_bytes() for p in files}


def assert_identical(folder: Path, reference: dict[str, bytes]) -> None:
    files = pngs(folder)
    assert [p.name for p in files] == sorted(reference)  # no gaps, no duplicates, nothing extra
    for p in files:
        assert p.read_bytes() == reference[p.name], p.name
    assert leftovers(folder) == []  # no temporary file survives a completed run


# --------------------------------------------------------------------------- 1. resumable, killable sampling
def test_killed_run_resumes_to_identical_images(tmp_path, uninterrupted, capsys):
    out = tmp_path / "samples"
    proc = spawn([*GENERATE, "--out", str(out)])
    kill_when(proc, lambda: len(pngs(out)) >= 8)
    done = len(pngs(out))
    assert 8 <= done < NUM, "the run finished before the kill: make it longer"
    # What else a crash can leave: a temporary file of a sample not yet renamed, and (power loss after the
    # rename reached the disk but the data did not) a PNG cut short. Neither may count as a sample.
    (out / f".{NUM - 1:06d}.png.4242-deadbeef.tmp").write_bytes(b"\x89PNG half")
    cut = pngs(out)[3]
    cut.write_bytes(cut.read_bytes()[:40])
    assert len(ImageFolder(out).files) == len(pngs(out))  # no reader takes a temporary file for a sample
    stdout = finish(spawn([*GENERATE, "--out", str(out)]))
    assert f"wrote {NUM - done + 1} new samples" in stdout  # everything missing, and the cut PNG, nothing more
    assert_identical(out, uninterrupted)
    assert main([*GENERATE, "--out", str(out)]) == 0  # a finished run stays done
    assert "wrote 0 new samples" in capsys.readouterr().out


def test_killed_shard_resumes_to_identical_images(tmp_path, uninterrupted):
    out = tmp_path / "samples"
    # Both shards start at once on an empty folder: they race to create the manifest.
    first = spawn([*GENERATE, "--out", str(out), "--shard", "0/2"])
    second = spawn([*GENERATE, "--out", str(out), "--shard", "1/2"])
    kill_when(second, lambda: sum((int(p.stem) // BATCH) % 2 == 1 for p in pngs(out)) >= 4)
    finish(first)
    owned_by_second = {f"{i:06d}.png" for i in range(NUM) if (i // BATCH) % 2 == 1}
    on_disk = {p.name for p in pngs(out)}
    assert owned_by_second - on_disk, "the killed shard finished anyway: make the run longer"
    assert {n for n in uninterrupted if n not in owned_by_second} <= on_disk  # the other shard is complete
    assert "wrote" in finish(spawn([*GENERATE, "--out", str(out), "--shard", "1/2"]))
    assert_identical(out, uninterrupted)
    assert json.loads((out / "generation.json").read_text())["batch_size"] == BATCH


def test_manifest_is_claimed_by_exactly_one_of_concurrent_runs(tmp_path):
    """Processes starting at once with different settings: one claims the folder, the rest are refused."""
    for rnd in range(5):
        folder = tmp_path / f"r{rnd}"
        folder.mkdir()
        barrier, outcome = threading.Barrier(8), {}

        def claim(seed: int, folder=folder, barrier=barrier, outcome=outcome) -> None:
            barrier.wait()
            try:
                _check_manifest(folder, {"generator": "g", "seed": seed})
                outcome[seed] = "ok"
            except InputError as exc:
                outcome[seed] = str(exc)

        threads = [threading.Thread(target=claim, args=(s,)) for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        winners = [s for s, o in outcome.items() if o == "ok"]
        assert len(outcome) == 8 and len(winners) == 1
        assert all("holds samples of another run" in o for s, o in outcome.items() if s != winners[0])
        assert json.loads((folder / "generation.json").read_text())["seed"] == winners[0]
        assert leftovers(folder) == []
    # Same settings from many processes: all go ahead (the two-shard start above relies on it).
    _check_manifest(folder, {"generator": "g", "seed": winners[0]})


def test_damaged_manifest_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "samples"
    out.mkdir()
    (out / "generation.json").write_text('{"generator": "titok_tiny_bert", "se')
    assert main([*GENERATE, "--out", str(out)]) == 2
    assert "unreadable generation manifest" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- 2. append-only records
def record(model: str = "titok_tiny_vq", **metrics) -> dict:
    return make_record(run_id="r", model=model, task="speed", metrics=metrics or {"images_per_sec": 10.0},
                       protocol={"op": "encode", "batch_size": 1, "resolution": 32}, env={"device_name": "cpu"},
                       commit="abc")


def test_half_written_last_line_never_swallows_the_next_record(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record("a"))
    with open(path, "a") as f:
        f.write(json.dumps(record("half"))[:70])  # a writer killed mid-line: no newline
    before = path.read_bytes()
    append_record(path, record("b"))
    assert path.read_bytes().startswith(before)  # earlier bytes untouched
    res = read_records(path)
    assert [r["model"] for r in res.records] == ["a", "b"]
    assert len(res.problems) == 1 and ":2: not JSON" in res.problems[0]


def test_failed_write_leaves_no_partial_record(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    append_record(path, record("a"))
    before = path.read_bytes()
    real_write = os.write

    def disk_full(fd, data):  # half the line reaches the file, then the disk is full
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space"):
        append_record(path, record("b"))
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_bytes() == before  # whole or not at all
    append_record(path, record("c"))
    assert [r["model"] for r in read_records(path).records] == ["a", "c"] and not read_records(path).problems


def test_tables_and_compare_skip_and_report_damaged_lines(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    append_record(path, record("titok_tiny_vq"))
    with open(path, "a") as f:
        f.write(json.dumps({**record("typed"), "metrics": "fast"}) + "\n")  # every field, wrong type
        f.write(json.dumps({**record("newer"), "schema_version": "2"}) + "\n")
        f.write(json.dumps(record("titok_tiny_vae"))[:90])  # the crash's half line, last
    assert main(["tables", str(path), "--out", str(tmp_path / "tables")]) == 0
    err = capsys.readouterr().err
    assert ":2: not a results record (metrics is not an object)" in err
    assert ":3: not a results record (schema_version is not an integer)" in err and ":4: not JSON" in err
    assert "titok_tiny_vq" in (tmp_path / "tables" / "speed.md").read_text()
    assert main(["compare", str(path), str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("skipped") == 6 and "1 of 1 base measurements matched" in captured.out


def tiny_suite(tmp_path: Path, extra: str) -> str:
    path = tmp_path / "suite.toml"
    path.write_text('[suite]\nname = "faults"\n[defaults]\niters = 1\nwarmup = 0\n'
                    '[[run]]\ntask = "speed"\nmodels = ["titok_tiny_vq"]\nops = ["decode"]\n' + extra)
    return str(path)


def test_failing_run_keeps_complete_records_only(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    suite = tiny_suite(tmp_path, f'[[run]]\ntask = "recon"\nmodels = ["titok_tiny_vq"]\ndata = "{empty}"\n'
                                 'metrics = ["psnr"]\n')
    out = tmp_path / "out"
    assert main(["run", "--suite", suite, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no images" in err and "1 complete records were written" in err and "Traceback" not in err
    res = read_records(out / "results.jsonl")
    assert not res.problems and [r["task"] for r in res.records] == ["speed"]


# ------------------------------------------------------------------------------------------ 3. bad input
@pytest.fixture
def messy_folder(tmp_path) -> Path:
    """Good images in every awkward mode and size, one corrupt file and one truncated PNG."""
    folder = tmp_path / "messy"
    folder.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (48, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(folder / "a_gray.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "b_cmyk.jpg")
    Image.fromarray(rgb[:40, :33]).convert("RGBA").save(folder / "c_rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "d_gray16.png")
    (folder / "e_corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    Image.fromarray(rgb).save(folder / "f_truncated.png")
    (folder / "f_truncated.png").write_bytes((folder / "f_truncated.png").read_bytes()[:300])
    return folder


def test_bad_images_are_skipped_counted_and_reported(tmp_path, messy_folder, capsys):
    out = tmp_path / "recon"
    assert main(["reconstruct", "--model", "titok_tiny_vq", "--input", str(messy_folder), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 unreadable images of 6" in err and "--strict" in err
    assert len(pngs(out)) == 4 and all(Image.open(p).size == (32, 32) for p in pngs(out))
    assert main(["reconstruct", "--model", "titok_tiny_vq", "--input", str(messy_folder), "--out", str(out),
                 "--strict"]) == 2
    assert "unreadable image" in capsys.readouterr().err


def test_run_records_the_skipped_count_or_stops_under_strict(tmp_path, messy_folder, capsys):
    suite = tiny_suite(tmp_path, f'[[run]]\ntask = "recon"\nmodels = ["titok_tiny_vae"]\ndata = "{messy_folder}"\n'
                                 'metrics = ["psnr", "ssim"]\n')
    assert main(["run", "--suite", suite, "--out", str(tmp_path / "lenient")]) == 0
    assert "skipped 2 unreadable images of 6" in capsys.readouterr().err
    recon = [r for r in read_records(tmp_path / "lenient" / "results.jsonl").records if r["task"] == "recon"]
    assert len(recon) == 1 and recon[0]["protocol"]["skipped"] == 2 and recon[0]["protocol"]["num_images"] == 4
    assert main(["run", "--suite", suite, "--out", str(tmp_path / "strict"), "--strict"]) == 2
    assert "unreadable image" in capsys.readouterr().err
    res = read_records(tmp_path / "strict" / "results.jsonl")
    assert not res.problems and all(r["task"] == "speed" for r in res.records)  # no partial recon record


def test_empty_and_unreadable_folders(tmp_path, capsys):
    empty, junk = tmp_path / "empty", tmp_path / "junk"
    empty.mkdir()
    junk.mkdir()
    (empty / "notes.txt").write_text("not an image")
    for i in range(3):
        (junk / f"{i}.png").write_bytes(b"garbage")
    args = ["reconstruct", "--model", "titok_tiny_vq", "--out", str(tmp_path / "o"), "--input"]
    assert main([*args, str(empty)]) == 2
    assert "no images" in capsys.readouterr().err
    assert main([*args, str(junk)]) == 2
    assert "none of the 3 images could be read" in capsys.readouterr().err


@pytest.fixture(scope="module")
def vq_tokenizer():
    torch.manual_seed(0)
    return titok.load_tokenizer("titok_tiny_vq")


def test_checkpoints_for_another_model_truncated_or_non_finite(tmp_path, vq_tokenizer, capsys):
    ours = save_checkpoint(vq_tokenizer, tmp_path / "vq.safetensors", kind="tokenizer")
    plain = tmp_path / "vq.bin"
    torch.save(vq_tokenizer.state_dict(), plain)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(ours.read_bytes()[: ours.stat().st_size // 2])
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"hello, not a checkpoint at all")
    nan = tmp_path / "nan.bin"
    torch.save({k: v.clone().fill_(float("nan")) if v.is_floating_point() else v
                for k, v in vq_tokenizer.state_dict().items()}, nan)
    recon = ["reconstruct", "--input", "builtin:procedural", "--limit", "2", "--out", str(tmp_path / "o")]
    cases = [
        (["--model", "titok_tiny_vae", "--weights", str(ours)], "is a checkpoint for preset 'titok_tiny_vq'"),
        (["--model", "titok_tiny_vae", "--weights", str(plain)], "does not fit titok_tiny_vae"),
        (["--model", "titok_tiny_vq", "--weights", str(truncated)], "truncated or corrupt"),
        (["--model", "titok_tiny_vq", "--weights", str(garbage)], "truncated or corrupt"),
        (["--model", "titok_tiny_vq", "--weights", str(nan)], "non-finite values"),
    ]
    for extra, message in cases:
        assert main([*recon, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and err.startswith("titok-bench reconstruct: error:"), err
    assert main(["generate", "--model", "titok_tiny_bert", "--weights", str(ours), "--out", str(tmp_path / "g")]) == 2
    assert "tokenizer checkpoint, not a generator" in capsys.readouterr().err


def test_non_finite_logits_and_pixels_stop_generation(tmp_path, capsys):
    torch.manual_seed(0)
    gen = titok.load_generator("titok_tiny_bert")
    sd = gen.state_dict()
    sd["model.lm_head.weight"] = torch.full_like(sd["model.lm_head.weight"], 3e38)  # finite, but overflows
    blown = tmp_path / "blown.safetensors"
    gen.load_state_dict(sd)
    save_checkpoint(gen, blown, kind="generator")
    out = tmp_path / "g"
    assert main(["generate", "--model", "titok_tiny_bert", "--weights", str(blown), "--out", str(out)]) == 2
    assert "non-finite generator logits" in capsys.readouterr().err
    assert pngs(out) == []  # nothing plausible-looking was written
    tok = titok.load_tokenizer("titok_tiny_2stage")
    sd = tok.state_dict()
    sd["pixel_decoder.conv_out.weight"] = torch.full_like(sd["pixel_decoder.conv_out.weight"], 3e38)
    tok.load_state_dict(sd)
    save_checkpoint(tok, tmp_path / "tok.safetensors", kind="tokenizer")
    assert main(["generate", "--model", "titok_tiny_bert", "--tokenizer-weights", str(tmp_path / "tok.safetensors"),
                 "--num", "2", "--out", str(tmp_path / "g2")]) == 2
    assert "decoded non-finite pixel values" in capsys.readouterr().err
    assert pngs(tmp_path / "g2") == []


def test_non_finite_features_are_an_error():
    from bench.metrics.base import MetricError
    from bench.metrics.image_sets import extract_features

    def nan_extractor(x):  # what an Inception with damaged weights hands back
        return torch.full((x.shape[0], 2048), float("nan")), torch.zeros(x.shape[0], 1008)

    with pytest.raises(MetricError, match="non-finite Inception pool features"):
        extract_features(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), nan_extractor)


@pytest.fixture
def two_images(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    return folder


def test_statistics_files_of_the_wrong_kind(tmp_path, two_images, capsys):
    bad = {
        "short.npz": (lambda p: np.savez(p, mu=np.zeros(10), sigma=np.eye(10)), "expected mu (2048,)"),
        "nokeys.npz": (lambda p: np.savez(p, arr_0=np.zeros(3)), "needs arrays 'mu' and 'sigma'"),
        "nan.npz": (lambda p: np.savez(p, mu=np.full(2048, np.nan), sigma=np.eye(2048)), "non-finite"),
        "array.npz": (lambda p: p.write_bytes(_npy_bytes(np.zeros(2048))), "must be an .npz archive"),
        "cut.npz": (lambda p: p.write_bytes(b"PK\x03\x04 cut short"), "not a readable .npz"),
        "pickled.npz": (lambda p: np.savez(p, mu=np.array([{"a": 1}], dtype=object), sigma=np.eye(2)),
                        "not a readable .npz"),
    }
    for name, (write, message) in bad.items():
        path = tmp_path / name
        write(path)
        assert main(["fid", str(two_images), str(path)]) == 2, name
        err = capsys.readouterr().err
        assert message in err and err.startswith("titok-bench fid: error:"), (name, err)


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_wrong_reference_fails_before_any_sampling(tmp_path, capsys):
    ref = tmp_path / "ref.npz"
    np.savez(ref, mu=np.zeros(10), sigma=np.eye(10))
    suite = tmp_path / "gen.toml"
    suite.write_text(f'[[run]]\ntask = "gen"\nmodels = ["titok_tiny_bert"]\nreference = "{ref}"\nnum_samples = 4\n')
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "out")]) == 2
    assert "expected mu (2048,)" in capsys.readouterr().err
    assert not (tmp_path / "out" / "samples").exists()


@pytest.mark.parametrize("argv,message", [
    (["reconstruct", "--model", "titok_tiny_nope", "--input", "builtin:procedural", "--out", "o"],
     "known: maskgit_torch_vqgan_256, .*maskgit_vqgan_f16_1024, .*titok_tiny_vq"),
    (["generate", "--model", "titok_tiny_nope", "--out", "o"], "known: .*titok_tiny_bert"),
    (["generate", "--model", "titok_tiny_bert", "--labels", "1,5000", "--out", "o"], r"must be in \[0, 1000\)"),
    (["run", "--suite", "smoke", "--out", "o", "--set", "defaults.itres=1"], "unknown key.*known: kind"),
    (["run", "--suite", "smoke", "--out", "o", "--device", "tpu9"], "--device 'tpu9'"),
    (["run", "--suite", "no-such-suite", "--out", "o"], "built-in: .*smoke"),
])
def test_unknown_names_list_the_known_ones(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert re.search(message, err), err


@pytest.mark.parametrize("argv", [
    ["generate", "--model", "titok_tiny_bert", "--out", "o", "--shard", "2/2"],
    ["generate", "--model", "titok_tiny_bert", "--out", "o", "--shard", "half"],
    ["generate", "--model", "titok_tiny_bert", "--out", "o", "--labels", "1,x"],
    ["generate", "--model", "titok_tiny_bert", "--out", "o", "--batch-size", "0"],
    ["reconstruct", "--model", "titok_tiny_vq", "--input", "i", "--out", "o", "--limit", "-3"],
    ["fid", "a", "b", "--batch-size", "0"],
])
def test_malformed_arguments_are_usage_errors(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "error: argument" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_output_path_that_is_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a folder")
    assert main(["reconstruct", "--model", "titok_tiny_vq", "--input", "builtin:procedural", "--limit", "1",
                 "--out", str(tmp_path / "taken")]) == 2
    assert "error:" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ 4. untrusted files
def test_pickled_code_in_a_checkpoint_is_never_run(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    savers = {"evil.bin": lambda p, o: p.write_bytes(pickle.dumps(o)), "evil.pt": lambda p, o: torch.save(o, p)}
    for name, save in savers.items():
        path = tmp_path / name
        save(path, {"latent_tokens": RunsCode(marker)})
        assert main(["reconstruct", "--model", "titok_tiny_vq", "--weights", str(path), "--input",
                     "builtin:procedural", "--limit", "1", "--out", str(tmp_path / "o")]) == 2
        assert "refusing to unpickle" in capsys.readouterr().err
    assert not marker.exists()


def test_suite_files_are_data_never_code(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    code = f"__import__('os').system('touch {marker}')"
    python_file = tmp_path / "suite.toml"
    python_file.write_text(f"import os\n{code}\n")
    assert main(["run", "--suite", str(python_file), "--out", str(tmp_path / "o")]) == 2
    assert "invalid TOML" in capsys.readouterr().err
    as_value = tmp_path / "value.toml"
    as_value.write_text(f'[[run]]\ntask = "speed"\nmodels = ["{code}"]\n')
    assert main(["run", "--suite", str(as_value), "--out", str(tmp_path / "o")]) == 2
    assert "unknown tokenizer preset" in capsys.readouterr().err
    assert main(["run", "--suite", "smoke", "--out", str(tmp_path / "o"), "--set", f"defaults.iters={code}"]) == 2
    assert "expected int" in capsys.readouterr().err
    # A value that looks like code stays a string, wherever it comes from (file, --set, a variable).
    var = tmp_path / "var.toml"
    var.write_text('[vars]\nX = "1"\n[[run]]\ntask = "recon"\nmodels = ["titok_tiny_vq"]\ndata = "${X}"\n')
    suite = load_suite(str(var), [f"vars.X={code}", f"suite.name={code}"])
    assert suite.runs[0].settings["data"] == code and suite.name == code
    assert not marker.exists()


# ------------------------------------------------------------- the same through the real Inception loading path
def _tampered_standin(standin: Path, folder: Path, change) -> Path:
    """A copy of the stand-in Inception changed by `change(state_dict)`, re-marked as a stand-in (sidecar hash)."""
    from bench.metrics.inception import STANDIN_SUFFIX, sha256_of

    path = folder / "tampered.pth"
    obj = change(torch.load(standin, weights_only=True))
    if isinstance(obj, bytes):
        path.write_bytes(obj)
    else:
        torch.save(obj, path)
    Path(str(path) + STANDIN_SUFFIX).write_text(json.dumps({"standin": True, "seed": 0, "sha256": sha256_of(path)}))
    return path


@pytest.mark.metrics
def test_nan_inception_features_are_an_error_not_an_fid(tmp_path, image_folders, standin_inception, capsys):
    a, b = image_folders

    def poison(sd):
        sd["fc.weight"][0, 0] = float("nan")
        return sd

    weights = _tampered_standin(standin_inception, tmp_path, poison)
    assert main(["fid", str(a), str(b), "--inception-weights", str(weights)]) == 2
    assert "non-finite Inception logits_unbiased features" in capsys.readouterr().err


@pytest.mark.metrics
def test_pickled_code_as_inception_weights_is_never_run(tmp_path, image_folders, standin_inception, capsys):
    a, b = image_folders
    marker = tmp_path / "PWNED"
    weights = _tampered_standin(standin_inception, tmp_path,
                                lambda sd: pickle.dumps({**sd, "fc.bias": RunsCode(marker)}))
    assert main(["fid", str(a), str(b), "--inception-weights", str(weights)]) == 2
    assert "refusing an Inception weights file" in capsys.readouterr().err
    assert not marker.exists()


def _reference(path: Path) -> Path:
    from bench.metrics.statistics_file import write_statistics

    rng = np.random.default_rng(0)
    write_statistics(path, rng.normal(size=2048), np.eye(2048), {"what": "test reference"})
    return path


def gen_suite(tmp_path: Path) -> str:
    path = tmp_path / "gen.toml"
    path.write_text(f'[[run]]\ntask = "gen"\nmodels = ["titok_tiny_bert"]\nnum_samples = 10\neval_batch_size = 5\n'
                    f'reference = "{_reference(tmp_path / "ref.npz")}"\n')
    return str(path)


def test_missing_metrics_stack_fails_before_sampling(tmp_path, capsys):
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("checks the core stack without torch-fidelity (tox -e py); the metrics env runs the gen suite")
    assert main(["run", "--suite", gen_suite(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "metrics need torch-fidelity" in capsys.readouterr().err
    assert not (tmp_path / "out" / "samples").exists()


@pytest.mark.metrics
def test_rerun_of_a_gen_suite_reuses_its_samples(tmp_path, capsys):
    suite, out = gen_suite(tmp_path), tmp_path / "out"
    assert main(["run", "--suite", suite, "--out", str(out), "--save-images"]) == 0
    samples = out / "samples" / "titok_tiny_bert-seed0"
    first = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in pngs(samples)}
    (samples / "000002.png").unlink()  # as if the first run had been killed before this sample
    assert main(["run", "--suite", suite, "--out", str(out), "--save-images"]) == 0
    again = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in pngs(samples)}
    assert set(again) == set(first) and again["000002.png"][1] == first["000002.png"][1]
    assert all(again[n] == first[n] for n in first if n != "000002.png")  # the others were not redone
    records = read_records(out / "results.jsonl").records
    timing = ("sampling_wall_s", "eval_wall_s", "peak_host_mb", "peak_device_mb")  # how long, not what
    quality = [{k: v for k, v in r["metrics"].items() if k not in timing} for r in records]
    assert len(records) == 2 and quality[0] == quality[1]
    assert records[0]["protocol"]["num_samples"] == 10 and "standin_gfid" in records[0]["metrics"]


@pytest.mark.metrics
def test_fid_skips_and_reports_bad_images_or_stops_under_strict(messy_folder, image_folders, standin_inception,
                                                                 capsys):
    _, b = image_folders
    args = ["fid", str(messy_folder), str(b), "--inception-weights", str(standin_inception), "--image-size", "32"]
    assert main([*args, "--json"]) == 0
    captured = capsys.readouterr()
    assert "skipped 2 unreadable images" in captured.err and json.loads(captured.out)["skipped"] == 2
    assert main([*args, "--strict"]) == 2
    assert "unreadable image" in capsys.readouterr().err
