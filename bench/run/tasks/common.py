"""What every task needs: the run's context, model loading with weights tags, and record emission."""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.records.store import append_record, make_record
from titok.errors import InputError
from titok.fetch import sha256_of
from titok.progress import number, track
from titok.registry import create, get_spec
from titok.released import RELEASED, fetch_released
from titok.train.checkpoint import TOKENIZER_META, TOKENIZER_SHA_META
from titok.train.distributed import DistContext

log = logging.getLogger(__name__)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def single_process(device: torch.device | str = "cpu") -> DistContext:
    """The DistContext of a run that is not under torchrun: rank 0 of 1."""
    return DistContext(0, 1, 0, torch.device(device))


@dataclass
class RunContext:
    """One `titok-bench run`: where it writes, its device and environment block, and its place among torchrun's
    ranks (`dist`; rank 0 of 1 outside torchrun). Under torchrun every rank holds one, with the same run_id
    (rank 0's, broadcast), and only rank 0 writes: records, the resolved suite, tables, progress."""

    out_dir: Path
    run_id: str
    device: torch.device
    env: dict
    commit: str
    progress: bool = False
    limit: int | None = None  # --limit: caps images / samples per run, for quick looks
    records: list[dict] = field(default_factory=list)
    dist: DistContext = field(default_factory=single_process)

    @property
    def results_path(self) -> Path:
        return self.out_dir / "results.jsonl"

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's outputs (rank 0, or the only process)."""
        return self.dist.is_main

    def emit(self, **kwargs) -> dict:
        """Make a record; rank 0 appends it to results.jsonl, other ranks only return it (and keep it in their
        `records`). Under torchrun the values passed in are already the whole set's (reduced across ranks by the
        task), so rank 0's record is the run's; a task whose numbers exist on rank 0 alone (recon's Inception
        metrics) calls it there alone, so only rank 0's `records` is the full list."""
        rec = make_record(run_id=self.run_id, env=self.env, commit=self.commit, **kwargs)
        if self.is_main:
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
    """The Inception weights a metric task uses: the suite's file, or the run's seeded stand-in (made once, by rank 0
    under torchrun while the others wait for it: COLLECTIVE, so outside any `together` block)."""
    if settings["inception_weights"] != "standin":
        return settings["inception_weights"]
    from bench.metrics.distributed import barrier
    from bench.metrics.inception import make_standin_inception_weights

    path = ctx.out_dir / "standin-inception" / "standin-seed0.pth"
    if ctx.is_main and not path.is_file():
        make_standin_inception_weights(path, seed=0)
    barrier()
    return path


def measured_on_main(task):
    """A task that measures one device (speed, training speed) run under torchrun: rank 0 measures and emits while
    the other ranks wait, then every rank holds rank 0's records. Splitting a timing over ranks would time N
    devices' batches as one; running it on every rank would time N copies competing for one host's cores and
    disks. The waiting ranks wait inside `together`, so rank 0's failure ends them too, and within the group's
    timeout (TITOK_BENCH_DIST_TIMEOUT_S): a speed run longer than it needs a larger one."""

    def run(spec, ctx: RunContext) -> None:
        from bench.metrics.distributed import broadcast_from_main, together

        if not ctx.dist.distributed:
            return task(spec, ctx)
        done = len(ctx.records)
        with together(f"{spec.task} (measured on rank 0)"):
            if ctx.is_main:
                task(spec, ctx)
        made = broadcast_from_main(ctx.records[done:] if ctx.is_main else None)
        if not ctx.is_main:
            ctx.records.extend(made)

    run.__doc__ = task.__doc__
    return run
