"""In-memory gFID: a suite's gen run scores its samples without writing them, and gets the numbers of the PNG path.

The reference in each test is computed here by the other route: the samples written as PNGs (`generate_samples`,
what `titok-bench generate` does), read back from the folder and scored in batches of the same size in index
order (`compute_image_metrics`, what `titok-bench fid` does); or an unbroken run beside a broken one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.records.store import read_records

pytestmark = pytest.mark.metrics
N, B = 12, 5  # three batches, the last one short
TIMING = ("sampling_wall_s", "eval_wall_s", "peak_host_mb", "peak_device_mb")  # how long, not what


def reference_file(path, spatial: bool):
    """A reference with features (KID, precision/recall), far from the tiny model's samples; sFID statistics only
    where asked (each Frechet distance at 2048-d costs seconds, so most tests leave sFID out)."""
    from bench.metrics.statistics_file import write_statistics

    rng = np.random.default_rng(0)
    feats = rng.normal(0.3, 1.0, size=(40, 2048)).astype(np.float32)
    return write_statistics(path, feats.mean(0).astype(np.float64), np.eye(2048), {"what": "test reference"},
                            features=feats, spatial=(rng.normal(size=2023), np.eye(2023)) if spatial else None)


def gen_suite(tmp_path, inception, n=N, batch=B, extra="", spatial=False) -> str:
    path = tmp_path / "gen.toml"
    ref = reference_file(tmp_path / "ref.npz", spatial)
    path.write_text(f'[[run]]\ntask = "gen"\nmodels = ["titok_tiny_bert"]\nnum_samples = {n}\n'
                    f'eval_batch_size = {batch}\nreference = "{ref}"\ninception_weights = "{inception}"\n'
                    f'metrics = ["kid", "prc"]\n{extra}')
    return str(path)


def quality(record) -> dict:
    return {k: v for k, v in record["metrics"].items() if k not in TIMING}


def only_record(out) -> dict:
    records = read_records(out / "results.jsonl").records
    assert len(records) == 1
    return records[0]


def png_path_values(tmp_path, inception, n=N, batch=B, bootstrap=0, score=True) -> tuple[dict, dict, object]:
    """The PNG route: write the samples, read them back in index order, score them in batches of `batch`."""
    from bench.metrics.image_sets import compute_image_metrics
    from bench.run.tasks.common import load_model
    from bench.run.tasks.gen import generate_samples
    from titok.data.images import ImageFolder

    gen, _ = load_model("generator", "titok_tiny_bert", {}, torch.device("cpu"))
    tok, _ = load_model("tokenizer", "titok_tiny_2stage", {}, torch.device("cpu"))
    folder = tmp_path / "png-route"
    assert generate_samples(gen, tok, folder, n, run_seed=0, batch_size=batch) == n
    if not score:
        return {}, {}, folder
    images = ImageFolder(folder, strict=True)
    images.files = [folder / f"{i:06d}.png" for i in range(n)]
    r = compute_image_metrics(images, str(tmp_path / "ref.npz"), inception_weights=inception,
                              metrics=("fid", "sfid", "isc", "kid", "prc"), batch_size=batch, bootstrap=bootstrap)
    rename = {"standin_fid": "standin_gfid"}
    values = {rename.get(k, k): v for k, v in r.values.items()}
    return values, {rename.get(k, k): v for k, v in r.spreads.items()}, folder


@pytest.mark.slow  # eight Frechet distances at 2048-d
def test_in_memory_gfid_equals_the_png_path_bit_for_bit(tmp_path, standin_inception):
    suite = gen_suite(tmp_path, standin_inception, extra="fid_bootstrap = 2\n", spatial=True)
    assert main(["run", "--suite", suite, "--out", str(tmp_path / "mem"), "--quiet"]) == 0
    rec = only_record(tmp_path / "mem")
    assert not (tmp_path / "mem" / "samples").exists()  # nothing written but the statistics' checkpoint
    values, spreads, _ = png_path_values(tmp_path, standin_inception, bootstrap=2)
    # Bitwise: the same uint8 batches (PNG is lossless) meet the same Inception in the same batches, and the sums
    # are taken in the same order, so every float is the same float.
    assert quality(rec) == values
    assert set(values) >= {"standin_gfid", "standin_sfid", "standin_isc_mean", "standin_kid_mean", "standin_precision"}
    assert values["standin_kid_mean"] > 0.01 and values["standin_isc_std"] > 0  # inputs where a slip shows
    assert rec["spreads"] == spreads and rec["protocol"]["num_fake"] == N


def test_save_images_writes_the_png_path_bytes_and_scores_the_same(tmp_path, standin_inception):
    suite = gen_suite(tmp_path, standin_inception)
    out = tmp_path / "kept"
    assert main(["run", "--suite", suite, "--out", str(out), "--quiet", "--save-images"]) == 0
    _, _, folder = png_path_values(tmp_path, standin_inception, score=False)
    first = quality(only_record(out))
    kept = out / "samples" / "titok_tiny_bert-seed0"
    names = sorted(p.name for p in kept.glob("*.png"))
    assert names == sorted(p.name for p in folder.glob("*.png")) and len(names) == N
    assert all((kept / n).read_bytes() == (folder / n).read_bytes() for n in names)
    assert (kept / "generation.json").is_file()
    # A PNG lost after a finished run is made again; the statistics are not fed twice.
    (kept / "000007.png").unlink()
    assert main(["run", "--suite", suite, "--out", str(out), "--quiet", "--save-images"]) == 0
    assert (kept / "000007.png").read_bytes() == (folder / "000007.png").read_bytes()
    second = read_records(out / "results.jsonl").records[1]
    assert quality(second) == first


@pytest.mark.slow  # four runs of the suite
def test_a_run_stopped_part_way_resumes_from_its_checkpoint_to_the_same_numbers(tmp_path, standin_inception,
                                                                                monkeypatch):
    import bench.run.tasks.gen as gen_task

    suite = gen_suite(tmp_path, standin_inception, batch=2, extra="checkpoint_every = 2\n")  # 6 batches
    assert main(["run", "--suite", suite, "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    whole = only_record(tmp_path / "whole")

    real, calls = gen_task.sample_batch, []

    def dies_at_fifth(*args, **kwargs):
        calls.append(list(args[2]))
        if len(calls) == 5:  # batches 1-4 scored, checkpoints after 2 and 4: as if killed now
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(gen_task, "sample_batch", dies_at_fifth)
    out = tmp_path / "broken"
    with pytest.raises(RuntimeError, match="killed"):
        main(["run", "--suite", suite, "--out", str(out), "--quiet"])
    assert not (out / "results.jsonl").exists()
    states = list((out / "gen-state").glob("*/rank0-of1.npz"))
    assert len(states) == 1
    monkeypatch.setattr(gen_task, "sample_batch", lambda *a, **k: calls.append(list(a[2])) or real(*a, **k))
    calls.clear()
    assert main(["run", "--suite", suite, "--out", str(out), "--quiet"]) == 0
    assert calls == [[8, 9], [10, 11]]  # only the batches after the last checkpoint were sampled again
    assert quality(only_record(out)) == quality(whole)
    calls.clear()  # a finished run's state holds every batch: a rerun samples nothing and says the same
    assert main(["run", "--suite", suite, "--out", str(out), "--quiet"]) == 0
    assert calls == [] and quality(read_records(out / "results.jsonl").records[1]) == quality(whole)


def test_checkpoint_every_below_one_is_refused_before_sampling(tmp_path, standin_inception, capsys):
    suite = gen_suite(tmp_path, standin_inception, extra="checkpoint_every = 0\n")
    assert main(["run", "--suite", suite, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "checkpoint_every must be a number of batches >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out" / "gen-state").exists()
