"""The generator, optimizer, schedule, init and freezing half of training, pinned to the release.

Two kinds of test. (1) Every item of the training vectors recorded from bytedance/1d-tokenizer's own code
(../shared/parity/vectors-train: mlm_loss.npz, optimizer_param_groups.json, lr_schedules.json, init_stats.json,
training_mode.json) passes through the project's check command (titok.train.release_vectors), which goes through
our public training code; skipped with a reason when ../shared is absent. (2) Without the vectors: the masked-token
loss, its accuracy, the mask rule and the learning-rate schedule against formulas written here, the loss's sign by
the direction of one SGD step, the first update's lr of 0 in a real run, BERT's attention dropout and TF32.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import titok
from tests.parity_paths import require_parity_dir
from titok.train import loop
from titok.train.config import TrainConfig, apply_overrides
from titok.train.loop import lr_factor, train
from titok.train.losses import mask_counts, masked_token_accuracy, masked_token_loss, masks_from_draws
from titok.train.release_vectors import all_checks, index_entries

MY_FILES = ("mlm_loss.npz", "optimizer_param_groups.json", "lr_schedules.json", "init_stats.json",
            "training_mode.json")


@pytest.fixture(scope="module")
def vectors() -> Path:
    return require_parity_dir() / "vectors-train"


@pytest.mark.parametrize("file", [pytest.param(f, marks=pytest.mark.slow) if f == "init_stats.json" else f
                                  for f in MY_FILES])  # init: builds three full-size models on the CPU (~10-20 s)
def test_release_vectors_pass(vectors, file):
    entry = next(e for e in index_entries(vectors) if e["file"] == file)
    results = all_checks()[file](vectors, entry)
    failed = [r.line() for r in results if not r.ok]
    assert results and not failed, "\n".join(failed)


# ------------------------------------------------------------------------------------------- masked-token loss
def _smoothed_ce(logits: list[float], target: int, eps: float) -> float:
    """PyTorch's label smoothing written out: (1 - eps) * NLL(target) + eps * mean over ALL classes of -log p."""
    log_z = math.log(sum(math.exp(v) for v in logits))
    nll = [log_z - v for v in logits]
    return (1 - eps) * nll[target] + eps * sum(nll) / len(logits)


def _case():
    """Two images, three tokens, four codes; image 0 has 1 masked token, image 1 has 3, so whole-batch and
    per-image normalisation differ; logits far from uniform so smoothing matters."""
    logits = torch.tensor([[[2.0, -1.0, 0.5, 0.0], [0.3, 1.7, -2.0, 0.1], [-0.5, 0.2, 2.5, 1.0]],
                           [[1.0, 0.0, -1.0, 3.0], [0.0, 0.0, 4.0, -1.0], [2.0, 2.0, -3.0, 0.5]]])
    targets = torch.tensor([[1, 1, 0], [3, 2, 0]])
    masks = torch.tensor([[True, False, False], [True, True, True]])
    return logits, targets, masks


def test_masked_token_loss_by_hand():
    logits, targets, masks = _case()
    eps, w_unmasked = 0.1, 0.1
    num = den = 0.0
    for b in range(2):
        for n in range(3):
            w = 1.0 if masks[b, n] else w_unmasked
            num += w * _smoothed_ce(logits[b, n].tolist(), int(targets[b, n]), eps)
            den += w
    want = num / (den + 1e-8)  # the weighted sum over the WHOLE batch over the sum of weights (MLMLoss)
    got = masked_token_loss(logits, targets, masks, label_smoothing=eps, unmasked_weight=w_unmasked)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # The option kept for splitting-invariance: per image, then the mean over images.
    per_image = []
    for b in range(2):
        ws = [1.0 if masks[b, n] else w_unmasked for n in range(3)]
        ls = [_smoothed_ce(logits[b, n].tolist(), int(targets[b, n]), eps) for n in range(3)]
        per_image.append(sum(w * v for w, v in zip(ws, ls, strict=True)) / sum(ws))
    got = masked_token_loss(logits, targets, masks, eps, w_unmasked, norm="sample")
    assert got.item() == pytest.approx(sum(per_image) / 2, rel=1e-6)
    assert abs(sum(per_image) / 2 - want) > 0.05  # the case tells the two apart


def test_masked_token_loss_sign_by_one_sgd_step():
    """Descending the loss moves each target's probability toward the smoothed optimum 1 - eps + eps / K: up where
    it is below (most tokens here), DOWN where a confident token is above it (image 1, token 1: p = 0.96)."""
    logits, targets, masks = _case()
    eps, k = 0.1, logits.shape[-1]
    x = logits.clone().requires_grad_(True)
    before = masked_token_loss(x, targets, masks, eps, 0.1)
    before.backward()
    with torch.no_grad():
        stepped = x - 0.5 * x.grad
    assert masked_token_loss(stepped, targets, masks, eps, 0.1).item() < before.item()
    p0 = logits.softmax(-1).gather(-1, targets[..., None])[..., 0]
    p1 = stepped.softmax(-1).gather(-1, targets[..., None])[..., 0]
    optimum = 1 - eps + eps / k
    assert torch.equal((p1 > p0), (p0 < optimum))
    assert (p0 > optimum).sum() == 1  # the case holds a token that smoothing pulls down


def test_masked_accuracy_is_per_image_then_averaged():
    logits, targets, masks = _case()
    hits = logits.argmax(-1) == targets  # image 0: its one masked token; image 1: three
    per_image = [hits[b][masks[b]].float().mean().item() for b in range(2)]
    assert masked_token_accuracy(logits, targets, masks).item() == pytest.approx(sum(per_image) / 2, rel=1e-6)
    assert sum(per_image) / 2 != pytest.approx(hits[masks].float().mean().item())  # pooled would differ here


def test_mask_rule_and_counts_by_hand():
    g = torch.Generator().manual_seed(5)
    times, rand = torch.rand(64, generator=g), torch.rand(64, 16, generator=g)
    masks = masks_from_draws(times, rand)
    for b in range(64):
        ratio = min(max(math.acos(float(times[b])) / (math.pi / 2), 1e-6), 1.0)
        x = 16 * ratio
        count = max(1, round(x))  # Python's round is half to even, as torch.round
        if abs(x - math.floor(x) - 0.5) > 1e-4:  # away from float32/float64 ties
            assert int(mask_counts(times[b:b + 1], 16)) == count
        order = sorted(range(16), key=lambda i: float(rand[b, i]))  # argsort
        want = [order[i] < int(mask_counts(times[b:b + 1], 16)) for i in range(16)]
        assert masks[b].tolist() == want
    # Exact float32 ties: draws whose L * arccos(t) / (pi / 2) is x.5 round to the EVEN neighbour, as torch.round.
    for t, length, tie, even in ((0.5555702447891235, 4, 2.5, 2), (0.3826834261417389, 6, 4.5, 4)):
        tt = torch.tensor([t], dtype=torch.float32)
        assert (length * (torch.acos(tt) / (math.pi * 0.5))).item() == tie  # the draw is a tie in float32
        assert mask_counts(tt, length).item() == even
    assert mask_counts(torch.tensor([1.0]), 16).item() == 1  # ratio clamped to 1e-6: still one masked token
    assert mask_counts(torch.tensor([0.0]), 16).item() == 16


# ------------------------------------------------------------------------------------------- schedule
def test_lr_factor_by_hand():
    warm, total, base, end = 10, 110, 2e-4, 1e-5
    for step in range(warm):
        assert lr_factor(step, total, warm, base, end) == step / warm  # step 0 -> 0: the first update uses lr 0
    for step in (warm, 35, 60, 109, total, total + 7):
        progress = (step - warm) / (total - warm)
        want = (end + (base - end) * max(0.0, 0.5 * (1 + math.cos(math.pi * progress)))) / base
        assert lr_factor(step, total, warm, base, end) == pytest.approx(want, rel=1e-12)
    assert lr_factor(total + 7, total, warm, base, end) > end / base  # past the horizon: not clamped, it rises


def test_first_update_uses_lr_zero(tmp_path):
    """With warm-up the scheduler's step 0 gives lr 0, and the loop steps it after the optimizer: one step of
    training leaves every weight (AdamW's decay included) as initialised."""
    config = apply_overrides(TrainConfig(), [f"run.out={tmp_path}", "run.image_every=0", "run.log_every=1",
                                             "data.limit=8", "optim.batch_size=4", "optim.lr=1e-2",
                                             "schedule.steps=1", "schedule.warmup_steps=4", "optim.ema_decay=0",
                                             "run.threads=1", "loss.disc_start=-1"])
    result = train(config)
    torch.manual_seed(config.run.seed)  # the loop seeds with run.seed before building: the same initial weights
    init = titok.load_tokenizer(config.model.preset)
    for k, v in init.state_dict().items():
        assert torch.equal(result.model.state_dict()[k], v), k
    assert result.history[0]["lr"] == 0.0


# ------------------------------------------------------------------------------------------- modes
def test_bert_attention_dropout_is_applied_when_training():
    torch.manual_seed(0)
    gen = titok.load_generator("titok_tiny_bert")
    for m in gen.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    attn = [m for n, m in gen.named_modules() if n.endswith("attention.self.dropout")]
    assert len(attn) == gen.config.num_layers and all(isinstance(m, torch.nn.Dropout) for m in attn)
    ids = torch.randint(0, gen.codebook_size, (2, 1 + gen.num_tokens))
    gen.train()
    assert torch.equal(gen.forward_ids(ids), gen.forward_ids(ids))  # every rate 0: deterministic
    for m in attn:
        m.p = 0.5
    assert not torch.allclose(gen.forward_ids(ids), gen.forward_ids(ids))  # only attention dropout is on
    gen.eval()
    assert torch.equal(gen.forward_ids(ids), gen.forward_ids(ids))


def test_training_turns_tf32_on_and_restores_it(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(loop, "_train", lambda *a, **k: seen.append(
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)))
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    config = apply_overrides(TrainConfig(), [f"run.out={tmp_path}"])
    train(config)
    train(apply_overrides(config, ["run.tf32=false"]))
    assert seen == [(True, True), (False, False)]
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
