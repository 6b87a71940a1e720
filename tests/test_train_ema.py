"""The EMA as the release computes it (bytedance/1d-tokenizer modeling/modules/ema_model.py, EMAModel with
use_ema_warmup=False): decay 0 at the first optimizer step, then min((1 + s) / (10 + s), decay) with s = step - 1,
update_every and update_after_step; trainable parameters averaged, frozen ones and buffers copied. Expected values
are worked out by hand below; the loop test checks the step count the loop passes in (an off-by-one would copy)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from titok.train.checkpoint import EMA
from titok.train.config import ConfigError, TrainConfig, apply_overrides
from titok.train.loop import train


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.frozen = nn.Parameter(torch.zeros((), dtype=torch.float64), requires_grad=False)
        self.register_buffer("stat", torch.zeros((), dtype=torch.float64))


def run_ema(weights: list[float], **kwargs) -> list[tuple[float, float, float]]:
    """Set the model's values to `weights[n - 1]` (frozen = -w, buffer = 10w) before EMA step n; EMA after each."""
    model = Tiny()
    ema = EMA(model, **kwargs)
    seen = []
    for n, w in enumerate(weights, start=1):
        with torch.no_grad():
            model.w.fill_(w), model.frozen.fill_(-w), model.stat.fill_(10 * w)
        ema.update(model, n)
        seen.append(tuple(float(ema.state_dict()[k]) for k in ("w", "frozen", "stat")))
    return seen


def test_decay_warms_up_as_the_release():
    ema = EMA(Tiny(), decay=0.999)
    assert [ema.decay_at(n) for n in (1, 2, 3, 10)] == [0.0, 2 / 11, 3 / 12, 10 / 19]
    assert ema.decay_at(8990) < 0.999 and ema.decay_at(8991) == 0.999  # (1 + s) / (10 + s) = 0.999 at s = 8990
    assert EMA(Tiny(), decay=0.9, warmup=False).decay_at(2) == 0.9
    assert EMA(Tiny(), decay=0.9, warmup=False).decay_at(1) == 0.0  # the first step still copies


def test_ema_values_against_the_formula():
    # decay 0.25 caps the warm-up from step 3 (3/12 = 0.25, 4/13 > 0.25). By hand:
    #   n=1 copy: 1;  n=2 d=2/11: 2/11 * 1 + 9/11 * 2 = 20/11;  n=3 d=1/4: 20/44 + 3/4 * 4 = 38/11;
    #   n=4 d=1/4: 38/44 + 3/4 * 8 = 151/22
    seen = run_ema([1.0, 2.0, 4.0, 8.0], decay=0.25)
    assert [s[0] for s in seen] == pytest.approx([1.0, 20 / 11, 38 / 11, 151 / 22], rel=1e-12)
    assert [s[1:] for s in seen] == [(-1.0, 10.0), (-2.0, 20.0), (-4.0, 40.0), (-8.0, 80.0)]  # copied


def test_update_every_and_update_after():
    # update_every=2: folds in at n = 1, 3, 5 (the release's (n - 1) % every == 0); n=3: d = 3/12 -> 1/4 + 3 = 3.25
    assert [s[0] for s in run_ema([1.0, 2.0, 4.0, 8.0], decay=0.999, update_every=2)] == pytest.approx(
        [1.0, 1.0, 3.25, 3.25], rel=1e-12)
    # update_after=2: s = n - 3, so n = 1..3 copy; n=4: d = 2/11 -> 2/11 * 4 + 9/11 * 8 = 80/11
    assert [s[0] for s in run_ema([1.0, 2.0, 4.0, 8.0], decay=0.999, update_after=2)] == pytest.approx(
        [1.0, 2.0, 4.0, 80 / 11], rel=1e-12)


def test_bad_ema_settings_are_config_errors():
    for override in ("optim.ema_decay=1.0", "optim.ema_update_every=0", "optim.ema_update_after=-1"):
        with pytest.raises(ConfigError, match=override.split("=")[0]):
            apply_overrides(TrainConfig(), [override])


def test_loop_passes_the_optimizer_step(tmp_path):
    """Step 1 copies the weights; step 2 (after a resume) averages with 2/11: ema2 = 2/11 w1 + 9/11 w2."""
    base = [f"run.out={tmp_path}", "run.image_every=0", "run.log_every=1", "data.limit=4", "optim.batch_size=2",
            "optim.lr=1e-2", "schedule.steps=4", "run.threads=1", "optim.ema_decay=0.999"]
    first = train(apply_overrides(TrainConfig(), [*base, "run.stop_at=1"]))
    w1 = {k: v.clone() for k, v in first.model.state_dict().items()}
    assert all(torch.equal(first.ema[k], w1[k]) for k in w1)
    second = train(apply_overrides(TrainConfig(), [*base, "run.stop_at=2"]), resume=True)
    w2 = second.model.state_dict()
    trainable = {n for n, p in second.model.named_parameters() if p.requires_grad}
    assert trainable and any(not torch.equal(w1[k], w2[k]) for k in trainable)
    for k in w2:
        expected = (2 / 11) * w1[k].double() + (9 / 11) * w2[k].double() if k in trainable else w2[k].double()
        torch.testing.assert_close(second.ema[k].double(), expected, rtol=1e-6, atol=1e-7)
