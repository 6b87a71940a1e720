"""What every task needs: the run's context, model loading with weights tags, and record emission."""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.records import append_record, make_record
from titok.errors import InputError
from titok.fetch import sha256_of
from titok.progress import number, track
from titok.registry import create, get_spec
from titok.released import RELEASED, fetch_released
from titok.train.checkpoint import TOKENIZER_META, TOKENIZER_SHA_META

log = logging.getLogger(__name__)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class RunContext:
    out_dir: Path
    run_id: str
    device: torch.device
    env: dict
    commit: str
    progress: bool = False
    limit: int | None = None  # --limit: caps images / samples per run, for quick looks
    records: list[dict] = field(default_factory=list)

    @property
    def results_path(self) -> Path:
        return self.out_dir / "results.jsonl"

    def emit(self, **kwargs) -> dict:
        rec = make_record(run_id=self.run_id, env=self.env, commit=self.commit, **kwargs)
        append_record(self.results_path, rec)
        self.records.append(rec)
        return rec

    def each_model(self, models: list[str], what: str):
        """`models` with one progress line as each finishes (which, how far, elapsed, ETA, its first numbers)."""
        return track(models, what, self.progress, unit="models", every=True, label=self._last_result)

    def _last_result(self, preset: str) -> str:
        rec = self.records[-1] if self.records and self.records[-1]["model"] == preset else None
        if rec is None:
            return preset
        shown = [f"{k} {number(v)}" for k, v in rec["metrics"].items()
                 if isinstance(v, float) and not k.endswith(("_s", "_mb"))]  # quality first; time and memory after
        return f"{preset}: " + (", ".join(shown[:4]) or rec.get("error") or "done")


def weights_tag(path: str | None) -> str:
    """'random' or '<file name>@<sha256 prefix>' so records say which weights produced them."""
    if not path:
        return "random"
    p = Path(path)
    if p.is_dir():
        from titok.weights import resolve_weights_file

        p = resolve_weights_file(p)
    return f"{p.name}@{sha256_of(p)[:12]}"


_warned_random: set[tuple[str, str]] = set()


def warn_random_weights(kind: str, preset: str) -> None:
    """Say once per process and model that it runs untrained: its images and quality numbers mean nothing
    (speed and memory do not depend on the weights), so a random-weight number is never taken for a result."""
    if (kind, preset) in _warned_random:
        return
    _warned_random.add((kind, preset))
    log.warning("%s %s runs with RANDOM weights (none given): its images and quality numbers (FID, IS, PSNR) "
                "are meaningless, only speed and memory are real; give weights with --weights / "
                "--tokenizer-weights, or a suite's [defaults.weights.%s] table", kind, preset, kind)


def load_model(kind: str, preset: str, weights: dict, device: torch.device):
    """A preset on `device` in eval mode, with its weights from the suite's table ({kind: {preset: path}}).

    "released" is fetched (or found in the cache) first, so the record's weights tag names the actual file."""
    path = weights.get(kind, {}).get(preset)
    if path == RELEASED:
        path = str(fetch_released(kind, preset))
    torch.manual_seed(0)  # random-weight runs are reproducible
    model = create(kind, preset, path or None).to(device).eval()
    if not path:  # after create: an unknown preset is an error, not a model with random weights
        warn_random_weights(kind, preset)
    return model, weights_tag(path)


def weights_metadata(path: str | None) -> dict[str, str]:
    """The metadata of one of our safetensors checkpoints (preset, kind, the tokenizer a generator learned from);
    empty for anything else. Reads the header only."""
    if not path or not str(path).endswith(".safetensors") or not Path(path).is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def paired_tokenizer(generator_preset: str, generator_weights: str | None = None) -> str:
    """The tokenizer that decodes a generator's tokens: the one a generator trained here names in its weights
    (titok-train records it), else the preset's released pairing."""
    trained_on = weights_metadata(generator_weights).get(TOKENIZER_META)
    if trained_on:
        return trained_on
    tok = get_spec("generator", generator_preset).tokenizer
    if tok is None:
        raise InputError(f"generator {generator_preset} names no tokenizer to decode its tokens")
    return tok


def check_tokenizer_file(generator_weights: str | None, tokenizer_weights: str | None) -> None:
    """Warn when a trained generator is decoded by other tokenizer weights than the ones it learned the codes of."""
    want = weights_metadata(generator_weights).get(TOKENIZER_SHA_META)
    if want and tokenizer_weights and Path(tokenizer_weights).is_file():
        if sha256_of(tokenizer_weights) != want:
            log.warning("%s was trained on the codes of a tokenizer file with sha256 %s..., not %s: its samples will "
                        "not decode as trained", generator_weights, want[:12], tokenizer_weights)


def free(*objs) -> None:
    del objs
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def parameter_millions(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def inception_for(settings: dict, ctx: RunContext):
    """The Inception weights a metric task uses: the suite's file, or the run's seeded stand-in (made once)."""
    if settings["inception_weights"] != "standin":
        return settings["inception_weights"]
    from bench.inception import make_standin_inception_weights

    path = ctx.out_dir / "standin-inception" / "standin-seed0.pth"
    return path if path.is_file() else make_standin_inception_weights(path, seed=0)
