"""Training at scale (titok/train: sources, pretokenize, checkpoint rotation, progress, evaluation): ImageNet's
folder layout and the release's tar shards read the same images, pretokenization over 2 processes equals 1 and
resumes from its parts, checkpoints rotate and a resume logs each step once, 2 processes equal 1 on the
gradients before clipping (accumulation, discriminator on), and a trained tokenizer + generator pair goes
from stage 1 to `titok-bench generate`. CPU, tiny presets."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from bench import cli as bench_cli
from bench.run.tasks.common import paired_tokenizer
from titok.fetch import sha256_of
from titok.train import checkpoint as ckpt_io
from titok.train import cli
from titok.train.config import TrainConfig, apply_overrides
from titok.train.data import split_holdout
from titok.train.loop import train
from titok.train.pretokenize import part_path, views
from titok.train.sources import ListedImages, list_folder, list_shards

SYNSETS = ("n01440764", "n01443537", "n02102040")  # three ImageNet classes, deliberately not created in order


def make_config(out, *overrides: str) -> TrainConfig:
    base = [f"run.out={out}", "run.image_every=0", "run.log_every=1", "data.limit=16", "optim.lr=1e-3",
            "run.threads=1", "watch.tensorboard=false"]
    return apply_overrides(TrainConfig(), [*base, *overrides])


def png_bytes(rng: np.random.Generator, w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    """train/<wnid>/*.png (non-square, varied sizes) and the same samples as two tar shards (key.png + key.cls)."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    samples = []
    for wnid in reversed(SYNSETS):
        (root / "train" / wnid).mkdir(parents=True)
        for j in range(6):
            data = png_bytes(rng, int(rng.integers(36, 60)), int(rng.integers(36, 60)))
            (root / "train" / wnid / f"{wnid}_{j}.png").write_bytes(data)
            samples.append((f"{wnid}_{j}", data, SYNSETS.index(wnid)))
    samples.sort()
    for s, chunk in enumerate((samples[:10], samples[10:])):
        with tarfile.open(root / f"imagenet-train-{s:06d}.tar", "w") as tar:
            for key, data, label in chunk:
                for name, payload in ((f"{key}.png", data), (f"{key}.cls", str(label).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return root


# ------------------------------------------------------------------------------------------- data at scale
def test_folder_labels_follow_sorted_synsets_and_shards_read_the_same(imagenet_like, caplog):
    folder = list_folder(str(imagenet_like / "train"))
    assert folder.classes == list(SYNSETS) and len(folder.items) == 18
    assert [folder.labels[i] for i, f in enumerate(folder.items) if f.startswith(b"n02102040/")] == [2] * 6
    shards = list_shards(str(imagenet_like / "imagenet-train-{000000..000001}.tar"))
    assert len(shards.shards) == 2 and shards.labels.tolist() == folder.labels.tolist()  # by synset, then file
    a, b = ListedImages(folder, 32), ListedImages(shards, 32)
    for i in (0, 7, 17):
        (img_a, lab_a), (img_b, lab_b) = a[i], b[i]
        assert torch.equal(img_a, img_b) and lab_a == lab_b
        assert min(img_a.shape[1:]) == 32  # shorter side at the load size; the crop comes per sample
    bounded = ListedImages(shards, 32)
    bounded_open = pytest.MonkeyPatch.context()
    with bounded_open as mp:  # at most one shard file open: reads across shards still give the same images
        mp.setattr("titok.train.sources.MAX_OPEN_SHARDS", 1)
        for i in (0, 17, 1, 16):
            assert torch.equal(bounded[i][0], a[i][0]) and len(bounded._open) == 1
    with caplog.at_level(logging.INFO):
        train_set, held = split_holdout(a, 0, 4, seed=0)
    assert len(train_set) == 14 and len(held) == 4 and not set(train_set.indices) & set(held.indices)
    assert "training on 14 of 18 images (all), 4 held out" in caplog.text
    assert TrainConfig().data.limit == 0  # a folder trains on all of it unless a limit is given


def test_training_on_shards_equals_training_on_the_folder(imagenet_like, tmp_path):
    """Same samples, same order, same random crops: the release's shards and ImageNet's folder train alike."""
    common = ("schedule.steps=2", "data.limit=0", "optim.batch_size=6")
    folder = train(make_config(tmp_path / "folder", *common, f"data.source={imagenet_like / 'train'}"))
    shards = train(make_config(tmp_path / "shards", *common, "data.workers=1",
                               f"data.source={imagenet_like / 'imagenet-train-{000000..000001}.tar'}"))
    for k, v in folder.model.state_dict().items():
        assert torch.equal(v, shards.model.state_dict()[k]), k
    assert ckpt_io.describe(tmp_path / "shards" / "checkpoint.pt")["data"]["dataset_size"] == 18


def test_shard_errors_name_the_file(tmp_path):
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        info = tarfile.TarInfo("k0.png")
        payload = png_bytes(np.random.default_rng(1), 8, 8)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(Exception, match=r"bad.tar: sample 'k0' has an image but no k0.cls"):
        list_shards(str(tmp_path / "bad.tar"))
    with pytest.raises(Exception, match="shard files not found"):
        list_shards(str(tmp_path / "x-{000000..000002}.tar"))


def test_ten_crop_views_are_torchvisions_order():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    v = views(x, 4, "ten-crop")
    assert v.shape == (2, 10, 3, 4, 4)
    assert torch.equal(v[:, 0], x[..., :4, :4]) and torch.equal(v[:, 3], x[..., 2:, 2:])
    assert torch.equal(v[:, 4], x[..., 1:5, 1:5]) and torch.equal(v[:, 5], x.flip(-1)[..., :4, :4])


# ------------------------------------------------------------------------------------------- pretokenize
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train(make_config(out, "model.preset=titok_tiny_vq", "schedule.steps=1"))
    return out / "model.safetensors"


def pretokenize_args(tokenizer, source, out) -> list[str]:
    return ["pretokenize", f"--tokenizer-weights={tokenizer}", f"--source={source}", "--chunk=5", "--batch-size=3",
            "--device=cpu", f"--out={out}"]


def test_pretokenize_writes_the_release_views_and_resumes_from_parts(tiny_tokenizer, imagenet_like, tmp_path):
    source = imagenet_like / "train"
    assert cli.main(pretokenize_args(tiny_tokenizer, source, tmp_path / "one.safetensors")) == 0
    one = load_file(str(tmp_path / "one.safetensors"))
    assert one["tokens"].shape == (36, 8) and one["tokens"].dtype == torch.int16  # 18 images and their mirrors
    assert one["labels"].tolist() == [lab for lab in list_folder(str(source)).labels.tolist() for _ in "ab"]
    with safe_open(str(tmp_path / "one.safetensors"), "pt") as f:
        meta = f.metadata()
    assert (meta["titok_train.tokens.tokenizer"], meta["titok_train.tokens.views"]) == ("titok_tiny_vq", "2")
    # An interrupted run left chunk 1 on disk: a rerun keeps that part (here marked) and encodes only the rest.
    resumed = tmp_path / "resumed.safetensors"
    part_path(resumed, 1).parent.mkdir(parents=True)
    marked = {"tokens": torch.full((10, 8), 63, dtype=torch.int16), "labels": one["labels"][10:20].contiguous()}
    save_file(marked, str(part_path(resumed, 1)))
    assert cli.main(pretokenize_args(tiny_tokenizer, source, resumed)) == 0
    again = load_file(str(resumed))
    assert torch.equal(again["tokens"][10:20], marked["tokens"])
    assert torch.equal(again["tokens"][:10], one["tokens"][:10])
    assert torch.equal(again["tokens"][20:], one["tokens"][20:])
    assert not part_path(resumed, 0).parent.exists()  # parts are removed once joined
    assert cli.main(["pretokenize", f"--tokenizer-weights={tmp_path / 'nope.safetensors'}", "--source=builtin:skimage",
                     f"--out={tmp_path / 'x.safetensors'}"]) == 2


@pytest.mark.slow
def test_pretokenize_two_processes_equal_one(tiny_tokenizer, imagenet_like, tmp_path):
    """torchrun with 2 processes (gloo) writes the same cache as 1 process (about 20 s: process start-up)."""
    source = imagenet_like / "train"
    assert cli.main(pretokenize_args(tiny_tokenizer, source, tmp_path / "one.safetensors")) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "titok.train.cli", *pretokenize_args(tiny_tokenizer, source, tmp_path / "two.safetensors")]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two = (load_file(str(tmp_path / f"{n}.safetensors")) for n in ("one", "two"))
    assert torch.equal(one["tokens"], two["tokens"]) and torch.equal(one["labels"], two["labels"])
    assert "rank 1: chunk 1" in proc.stderr + proc.stdout  # the second process did encode its share


# ------------------------------------------------------------------------------------------- checkpoints, logs
def test_checkpoints_rotate_and_resume_logs_each_step_once(tmp_path, caplog):
    extra = ("schedule.steps=6", "run.ckpt_every=1", "ckpt.keep_last=2", "ckpt.keep_every=3")
    straight = train(make_config(tmp_path / "straight", *extra))
    run = tmp_path / "run"
    train(make_config(run, *extra, "run.stop_at=4"))
    assert ckpt_io.kept_steps(run) == [3]  # step 3 (every 3rd) also is the newest older one; 1 and 2 are gone
    # Killed after logging step 4 but before its checkpoint landed: the newest complete one is step 3.
    (run / "checkpoint.pt").unlink()
    assert ckpt_io.newest(run) == run / "checkpoints" / "step_00000003.pt"
    with caplog.at_level(logging.INFO):
        resumed = train(make_config(run, *extra), resume=True)
    assert "resumed" in caplog.text and "dropped 1 records after step 3" in caplog.text
    assert "ETA" in caplog.text and "steps/s" in caplog.text
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    expected = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in records] == [r["loss"] for r in expected]  # and they are the straight run's
    assert resumed.step == straight.step == 6
    assert ckpt_io.kept_steps(run) == [3, 5] and ckpt_io.describe(run / "checkpoint.pt")["step"] == 6


def test_evaluation_on_held_out_images_and_grids_of_ema_and_raw(tmp_path):
    result = train(make_config(tmp_path, "schedule.steps=4", "watch.holdout=6", "watch.eval_every=2",
                               "run.image_every=4", "optim.ema_decay=0.9"))
    evals = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [2, 4]
    assert all(0 < e["recon_mse"] < 1 and e["psnr"] > 0 and 0 < e["codebook_usage"] <= 1 for e in evals)
    assert len(result.history) == 4
    grid = Image.open(tmp_path / "images" / "step_0000004.png")
    assert grid.height == 3 * (32 + 2) + 2  # originals, EMA reconstructions, raw-model reconstructions


# ------------------------------------------------------------------------------------------- 2 processes = 1
# The raw gradients of 1 process, k micro-batches and 2 gloo processes, tokenizer and discriminator alike, are
# compared in tests/test_train_gradients.py (with the release's init, an AdamW step amplifies float-order noise in
# parameters whose gradient cancels, so a second step's gradients are compared there relative to each tensor's scale).


# ------------------------------------------------------------------------------------------- end to end
def test_stage1_to_generate_with_the_trained_pair(tmp_path, capsys):
    """proxy codes -> decoder fine-tuning -> pretokenize -> generator -> `titok-bench generate`, tiny presets."""
    s1, s2, gen = tmp_path / "s1", tmp_path / "s2", tmp_path / "gen"
    train(make_config(s1, "model.task=proxy_codes", "model.preset=titok_tiny_2stage", "schedule.steps=2"))
    train(make_config(s2, "model.task=decoder_finetune", "model.preset=titok_tiny_2stage", "schedule.steps=2",
                      f"model.init_weights={s1 / 'ema.safetensors'}"))
    tokens = tmp_path / "tokens.safetensors"
    assert cli.main(["pretokenize", f"--tokenizer-weights={s2 / 'ema.safetensors'}", "--source=builtin:skimage",
                     "--limit=16", f"--out={tokens}", "--device=cpu"]) == 0
    train(make_config(gen, "model.task=generator", "model.preset=titok_tiny_bert", "schedule.steps=2",
                      f"model.tokenizer_weights={s2 / 'ema.safetensors'}", f"data.tokens={tokens}", "data.limit=0",
                      "watch.holdout=4", "watch.eval_every=2"))
    evaluation = json.loads((gen / "eval.jsonl").read_text())  # 4 held-out images = 8 rows with their mirrors
    assert evaluation["step"] == 2 and evaluation["masked_ce"] > 0 and 0 <= evaluation["masked_acc"] <= 1
    with safe_open(str(gen / "ema.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta[ckpt_io.TOKENIZER_META] == "titok_tiny_2stage"
    assert meta[ckpt_io.TOKENIZER_SHA_META] == sha256_of(s2 / "ema.safetensors")
    samples = tmp_path / "samples"
    assert bench_cli.main(["generate", f"--weights={gen / 'ema.safetensors'}", "--num=2", "--labels=1,2",
                           f"--tokenizer-weights={s2 / 'ema.safetensors'}", f"--out={samples}"]) == 0
    assert sorted(p.name for p in samples.glob("*.png")) == ["000000.png", "000001.png"]
    manifest = json.loads((samples / "generation.json").read_text())
    assert "ema.safetensors@" in json.dumps(manifest)


def test_generate_pairs_a_generator_with_the_tokenizer_it_was_trained_on(tmp_path):
    """titok_tiny_bert's released pairing is titok_tiny_2stage; trained on titok_tiny_vq, it must decode with that."""
    tok = tmp_path / "tok"
    train(make_config(tok, "model.preset=titok_tiny_vq", "schedule.steps=1"))
    gen = tmp_path / "gen"
    train(make_config(gen, "model.task=generator", "model.preset=titok_tiny_bert", "model.tokenizer=titok_tiny_vq",
                      f"model.tokenizer_weights={tok / 'model.safetensors'}", "schedule.steps=1"))
    assert bench_cli.main(["generate", "--model=titok_tiny_bert", f"--weights={gen / 'model.safetensors'}",
                           f"--tokenizer-weights={tok / 'model.safetensors'}", "--num=1",
                           f"--out={tmp_path / 'samples'}"]) == 0
    assert (tmp_path / "samples" / "000000.png").is_file()
    assert paired_tokenizer("titok_tiny_bert", str(gen / "model.safetensors")) == "titok_tiny_vq"  # suites too
    assert paired_tokenizer("titok_tiny_bert") == "titok_tiny_2stage"  # a released generator keeps its pairing


def test_tensorboard_event_files_when_installed(tmp_path):
    pytest.importorskip("tensorboard", reason="optional extra: pip install 'titok-bench[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(make_config(tmp_path, "schedule.steps=2", "watch.tensorboard=true", "watch.holdout=4",
                      "watch.eval_every=2"))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/recon", "eval/psnr"} <= set(tags)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]


# ------------------------------------------------------------------------------------------- rFID plug-in
RFID_ENTRY_POINT = ("rfid", "bench.metrics.training:RFID")


def test_rfid_plugin_is_declared_and_its_absence_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    import tomli

    from titok.train import evaluation

    project = tomli.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["entry-points"][evaluation.METRIC_GROUP] == dict([RFID_ENTRY_POINT])
    monkeypatch.setattr(evaluation, "entry_points", lambda group: [])  # the harness not installed
    args = [f"--run.out={tmp_path}", "--watch.rfid=true", "--watch.eval_every=1", "--watch.holdout=4"]
    assert cli.main(args) == 2
    assert "no 'rfid' plug-in in the entry-point group titok_bench.train_metrics" in capsys.readouterr().err
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.metrics
def test_held_out_rfid_through_the_harness_plugin(tmp_path, monkeypatch):
    """The entry point pyproject declares, loaded by titok's lookup; rFID with the stand-in Inception."""
    from importlib.metadata import EntryPoint

    from titok.train import evaluation

    monkeypatch.setattr(evaluation, "entry_points", lambda group: [EntryPoint(*RFID_ENTRY_POINT, group)])
    train(make_config(tmp_path, "schedule.steps=2", "watch.holdout=8", "watch.eval_every=2", "watch.rfid=true"))
    record = json.loads((tmp_path / "eval.jsonl").read_text())
    assert "rfid" not in record and record["standin_rfid"] > 0 and np.isfinite(record["standin_rfid"])
    assert (tmp_path / "standin-inception" / "standin-seed0.pth").is_file()
