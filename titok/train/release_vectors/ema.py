"""The EMA of the model weights against the release (ema_decay.json): titok.train.checkpoint.EMA as every release
recipe of ours configures it gives the release's decay at each recorded optimisation step, and folds in the weights
with it (trainable parameters averaged, frozen ones copied)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from titok.train.checkpoint import EMA
from titok.train.recipes import is_release, list_recipes, load_recipe
from titok.train.release_vectors import Result

REL = 1e-12  # schedules: the recording's README


def _settings() -> dict[tuple, list[str]]:
    """(ema_decay, warmup, update_every, update_after) -> the release recipes of ours using them."""
    out: dict[tuple, list[str]] = {}
    for name in list_recipes():
        if is_release(name):
            o = load_recipe(name).optim
            out.setdefault((o.ema_decay, o.ema_warmup, o.ema_update_every, o.ema_update_after), []).append(name)
    return out


class _Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.frozen = torch.nn.Parameter(torch.zeros((), dtype=torch.float64), requires_grad=False)


def check(folder: Path, entry: dict) -> list[Result]:
    file = entry["file"]
    rec = json.loads((Path(folder) / file).read_text())
    steps, decays = rec["optimization_step"], rec["decay"]
    out = []
    for (decay, warmup, every, after), names in sorted(_settings().items()):
        ema = EMA(_Two(), decay, every, after, warmup)
        got = [ema.decay_at(s) for s in steps]
        bad = [(s, g, w) for s, g, w in zip(steps, got, decays, strict=True) if abs(g - w) > REL * abs(w)]
        out.append(Result(file, f"decay at {len(steps)} steps ({', '.join(names)})", not bad,
                          f"first differences (step, ours, release): {bad[:3]}" if bad else
                          f"steps {steps[0]}..{steps[-1]} equal"))
    # Folding in: after each step n (1, 2, ...) the trainable weight is decay(n) * ema + (1 - decay(n)) * w_n and
    # the frozen one a copy; the weights w_n = n, so a wrong decay, step count or copy rule shows.
    model = _Two()
    ema = EMA(model, max(decays), 1, 0, True)
    want_w, ok, n_last = 0.0, True, min(12, max(steps))
    by_step = dict(zip(steps, decays, strict=True))
    for n in range(1, n_last + 1):
        with torch.no_grad():
            model.w.fill_(float(n)), model.frozen.fill_(-float(n))
        ema.update(model, n)
        d = by_step.get(n, ema.decay_at(n))
        want_w = d * want_w + (1 - d) * n
        ok &= abs(float(ema.state_dict()["w"]) - want_w) <= 1e-12 * abs(want_w)
        ok &= float(ema.state_dict()["frozen"]) == -float(n)
    out.append(Result(file, f"fold-in over steps 1..{n_last}", ok,
                      "trainable averaged with the recorded decays, frozen copied" if ok else
                      f"EMA {float(ema.state_dict()['w'])} vs {want_w}"))
    return out


CHECKS = {"ema_decay.json": check}
