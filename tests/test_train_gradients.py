"""The averages of gradient accumulation and DistributedDataParallel, checked on the raw gradient.

One step of the global batch B must produce the same gradient however it is split: 1 process x B, 1 process x k
micro-batches of B / k (accumulation), 2 gloo processes x B / 2 (DDP), and 2 processes x 2 micro-batches. The
gradient is read through `train(on_gradients=...)`, after the loss scaler and before clipping and AdamW (which
would hide a factor: AdamW's step is scale-free). Both the tokenizer's and the discriminator's gradients are
compared, with the discriminator on from step 0, so a missing or doubled 1/k or 1/world on either side fails.

The case is titok_tiny_vae's single-stage task: its per-sample posterior noise (seeded by sample, not by batch)
and the hinge losses (means over the batch) make the split-batch gradients equal the whole batch's up to float
rounding. LeCam is off wherever the batch is accumulated: it is a nonlinear function of each micro-batch's mean
logits, so k micro-batches and one batch differ by construction, as in the release (git log d4912d2). Without
accumulation LeCam is on, and its means are averaged over processes, so 2 processes must equal 1 with it too.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
from safetensors.torch import load_file, save_file

from titok.train.config import TrainConfig, apply_overrides
from titok.train.loop import train

BATCH = 8
CASE = ("schedule.steps=2", f"optim.batch_size={BATCH}", "loss.disc_start=0", "loss.disc_layers=2",
        "optim.grad_clip=0.01", "model.preset=titok_tiny_vae", "model.task=single_stage", "data.limit=16",
        "optim.lr=1e-3", "run.image_every=0", "run.log_every=1", "run.threads=1", "watch.tensorboard=false",
        "run.device=cpu", "optim.ema_decay=0")
NO_LECAM = "loss.lecam_weight=0"
WITH_LECAM = "loss.lecam_weight=0.1"  # far above the release's 0.001, so a wrong LeCam average shows


def _gradients(out, *overrides: str) -> dict[str, torch.Tensor]:
    """{"step/name": gradient} of every step of a run (the discriminator's names start with "disc/")."""
    grads: dict[str, torch.Tensor] = {}

    def keep(step, named):
        grads.update({f"{step}/{k}": v for k, v in named.items()})

    train(apply_overrides(TrainConfig(), [f"run.out={out}", *CASE, *overrides]), on_gradients=keep)
    return grads


def assert_same_gradients(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for k in want:  # to 1e-3 of each tensor's largest entry (rounding: <= 5e-5 measured); a factor 2 is 0.5 off
        scale = float(want[k].abs().max())
        assert float((got[k] - want[k]).abs().max()) <= 1e-3 * scale + 1e-9, (
            f"{k}: off by {float((got[k] - want[k]).abs().max()):.3g} of max {scale:.3g}; "
            f"ratio of norms {float(got[k].norm() / want[k].norm().clamp_min(1e-30)):.4f}")


@pytest.fixture(scope="module")
def whole_batch(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The reference: 1 process, the global batch of 8 in one piece, LeCam off."""
    return _gradients(tmp_path_factory.mktemp("whole"), NO_LECAM, "optim.grad_accum=1")


def test_the_reference_covers_the_tokenizer_and_the_discriminator_on_both_steps(whole_batch):
    for step in (0, 1):
        disc = [k for k in whole_batch if k.startswith(f"{step}/disc/")]
        model = [k for k in whole_batch if k.startswith(f"{step}/") and k not in disc]
        assert disc and model, step
        # nearly all of them move (an all-zero gradient would equal any multiple of itself); the exceptions are
        # exact: e.g. the discriminator's last bias at step 0, where the hinge's real and fake terms cancel
        for names in (disc, model):
            assert sum(float(whole_batch[k].abs().max()) > 0 for k in names) > 0.9 * len(names), step


@pytest.mark.parametrize("k", [2, 4])
def test_accumulating_k_micro_batches_equals_the_whole_batch(whole_batch, tmp_path, k):
    """1 process x k micro-batches of 8 / k: the tokenizer's and the discriminator's gradients are each the mean
    over the k micro-batches, i.e. the whole batch's (a sum, or a 1/k applied twice, is k times off)."""
    assert_same_gradients(_gradients(tmp_path, NO_LECAM, f"optim.grad_accum={k}"), whole_batch)


# ------------------------------------------------------------------------------------------- 2 processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_CASES = {  # name: overrides of each process's run (the global batch stays 8)
    "ddp": (WITH_LECAM, "optim.grad_accum=1"),  # 2 x 4, LeCam on (its means averaged over the 2 processes)
    "ddp_accum": (NO_LECAM, "optim.grad_accum=2"),  # 2 processes x 2 micro-batches of 2
}


def _rank(rank: int, ports: list[int], out: str) -> None:
    """One of 2 processes: every DDP case in turn, each with a process group of its own (a fresh port)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    for (name, overrides), port in zip(DDP_CASES.items(), ports, strict=True):
        os.environ["MASTER_PORT"] = str(port)
        grads = _gradients(f"{out}/{name}/run", *overrides)
        save_file({k: v.contiguous() for k, v in grads.items()}, f"{out}/{name}/rank{rank}.safetensors")


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(whole_batch, tmp_path):
    """2 gloo processes (about 20 s: start-up of the process pair): DDP's all-reduce is a mean over processes for
    the tokenizer and for the discriminator, with and without accumulation, and LeCam's means are global."""
    import torch.multiprocessing as mp

    for name in DDP_CASES:
        (tmp_path / name).mkdir()
    mp.spawn(_rank, args=([_free_port() for _ in DDP_CASES], str(tmp_path)), nprocs=2)
    with_lecam = _gradients(tmp_path / "one_lecam", WITH_LECAM, "optim.grad_accum=1")
    want = {"ddp": with_lecam, "ddp_accum": whole_batch}
    for name in DDP_CASES:
        ranks = [load_file(str(tmp_path / name / f"rank{r}.safetensors")) for r in (0, 1)]
        for k in ranks[0]:  # after the all-reduce both processes hold the same gradient
            torch.testing.assert_close(ranks[1][k], ranks[0][k], rtol=0, atol=0, msg=f"{name} {k}")
        assert_same_gradients(ranks[0], want[name])
    # LeCam changes the discriminator's gradient here, so the LeCam case checks its averaging and not only DDP's
    diff = max(float((with_lecam[k] - whole_batch[k]).abs().max()) for k in whole_batch if "/disc/" in k)
    assert diff > 1e-4
