"""Benchmark suites: TOML data (never code) describing models x tasks x settings.

    [suite]                      name, description
    [vars]                       NAME = "value", used as ${NAME} in strings; the environment and
                                 `--set vars.NAME=...` override them
    [defaults]                   settings every [[run]] inherits (below)
    [[run]]                      task = "speed" | "recon" | "gen" | "stats" | "train", models = [...], and settings
                                 ("train": training-step throughput, bench/run/tasks/train_speed.py)

Settings (defaults shown in DEFAULTS): batch sizes, precisions, warm-up and timed iterations, ops, data,
limit, strict, metrics, Inception weights ("standin" for the seeded stand-in), reference statistics, sample count,
seed, sampling overrides ([run.sampling]), inference-option variants for speed (`options = [{}, {compile = true}]`,
each measured and recorded separately; titok/inference.py), weights by preset ([defaults.weights] / [run.weights]).
Unknown sections, keys and presets are errors that list the known ones. Paths that a run needs are checked
before any work starts, and every missing one is named in a single error.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import tomli

from titok.configs import parse_value
from titok.errors import ConfigError, InputError
from titok.registry import get_spec

SECTIONS = ("suite", "vars", "defaults", "run")
SUITE_KEYS = ("name", "description")
TASKS = ("speed", "recon", "gen", "stats", "train")
DEFAULTS: dict[str, Any] = {
    "kind": "tokenizer",  # which registry the models come from: "tokenizer" | "generator"
    "ops": [],  # speed: tokenizer encode/decode; generator sample/generate (empty = all of the kind)
    "batch_sizes": [1],
    "precisions": ["fp32"],  # fp32 | bf16 (InferenceOptions.precision, CPU too) | fp16 (CUDA-only autocast)
    "warmup": 1,
    "iters": 3,
    "data": "builtin:skimage",
    "limit": 16,
    "strict": False,  # an unreadable image is an error (true) or skipped and counted in the record (false)
    "metrics": ["fid", "psnr", "ssim"],
    "inception_weights": "standin",
    "reference": "",  # gen: statistics .npz of the real images (ADM's VIRTUAL_imagenet256_labeled.npz); stats: output
    "preparation": "",  # recon/stats: how real images are made S x S (titok/data/prepare.py); "" = the default (ADM's)
    "image_size": 256,  # stats: the size real images are prepared to
    "fid_bootstrap": 0,  # recon/gen: R >= 2 Poisson-bootstrap replicates give FID a recorded std (compare uses it)
    "features": False,  # stats: also store the pool features (precision/recall and KID against the file need them)
    "num_samples": 50000,
    "seed": 0,
    "eval_batch_size": 32,
    "save_images": False,  # gen: also write the samples as PNGs (ADM export, looking at them); scoring is in memory
    "checkpoint_every": 50,  # gen: each rank checkpoints its Inception statistics every this many batches
    "sampling": {},
    "options": [{}],  # speed: inference-option variants to measure (titok/inference.py); {} = the defaults
    "count_flops": True,  # speed: count one image's FLOPs (an extra eager batch of 1) for TFLOP/s and % of peak
    "weights": {},  # {"tokenizer": {preset: path}, "generator": {preset: path}}: released weights
}
RUN_KEYS = ("task", "models", *DEFAULTS)
OPS = {"tokenizer": ("encode", "decode"), "generator": ("sample", "generate")}
# task "train": the training stages (titok/train/tasks.py) whose forward + backward it times
TRAIN_OPS = {"tokenizer": ("proxy_codes", "decoder_finetune", "single_stage"), "generator": ("generator",)}
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class SuiteError(InputError, ValueError):
    """A suite that can't be run as written; the message says what and lists the valid choices."""


@dataclass
class RunSpec:
    task: str
    models: list[str]
    settings: dict[str, Any]


@dataclass
class Suite:
    name: str
    description: str
    runs: list[RunSpec]
    source: str
    resolved: dict = field(default_factory=dict)  # what was actually run, written beside the outputs


def builtin_suites() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("bench.run.suites").iterdir()
                  if p.name.endswith(".toml"))


def _read(name_or_path: str) -> tuple[dict, str]:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SuiteError(f"suite file not found: {path}")
        text, source = path.read_text(), str(path)
    elif name_or_path in builtin_suites():
        text, source = (resources.files("bench.run.suites") / f"{name_or_path}.toml").read_text(), name_or_path
    else:
        raise SuiteError(f"unknown suite {name_or_path!r}; built-in: {', '.join(builtin_suites())} (or a .toml path)")
    try:
        return tomli.loads(text), source
    except tomli.TOMLDecodeError as exc:
        raise SuiteError(f"{source}: invalid TOML: {exc}") from None


def _check_keys(where: str, got, known) -> None:
    unknown = sorted(set(got) - set(known))
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")


def _coerce(key: str, value: Any, like: Any) -> Any:
    if like is None or isinstance(value, type(like)) or (isinstance(like, float) and isinstance(value, int)):
        return value
    raise SuiteError(f"{key}: expected {type(like).__name__}, got {type(value).__name__} ({value!r})")


def parse_override(text: str) -> tuple[list[str], Any]:
    """'defaults.iters=5' -> (['defaults', 'iters'], 5); the value is read as TOML, else as a string."""
    if "=" not in text:
        raise SuiteError(f"--set expects section.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    value = parse_value(raw)
    parts = key.strip().split(".")
    if len(parts) != 2 or parts[0] not in ("defaults", "vars", "suite"):
        raise SuiteError(f"--set {key}: use defaults.KEY, vars.NAME or suite.KEY")
    return parts, value


def _check_options(where: str, variants: list) -> None:
    from titok.inference import InferenceOptions

    if not variants:
        raise SuiteError(f"{where}: options needs at least one variant ({{}} = the defaults)")
    for v in variants:
        if not isinstance(v, dict):
            raise SuiteError(f"{where}: each options variant is a table of option = value, got {v!r}")
        try:
            InferenceOptions.parse(v)
        except ConfigError as exc:
            raise SuiteError(f"{where} options: {exc}") from None


def _merge_weights(where: str, base: dict, extra: dict) -> dict:
    merged = {"tokenizer": {}, "generator": {}}
    for table in (base, extra):
        _check_keys(f"{where} weights", table, ("tokenizer", "generator"))
        for kind, entries in table.items():
            if not isinstance(entries, dict):
                raise SuiteError(f"{where} weights.{kind}: expected a table of preset = path")
            for preset, path in entries.items():
                get_spec(kind, preset)
                merged[kind][preset] = path
    return merged


def _expand(value: Any, variables: dict[str, str], missing: set[str]) -> Any:
    if isinstance(value, str):
        def sub(m):
            name = m.group(1)
            if name in os.environ:
                return os.environ[name]
            if name in variables:
                return str(variables[name])
            missing.add(name)
            return m.group(0)
        return VAR.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, variables, missing) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, variables, missing) for k, v in value.items()}
    return value


def load_suite(name_or_path: str, overrides: list[str] = (), builtin_vars: dict[str, str] | None = None) -> Suite:
    """A suite, validated, with overrides applied and ${VARS} expanded (`builtin_vars`: e.g. OUT_DIR, the run's
    output folder, so that one run can write a file a later run reads)."""
    data, source = _read(name_or_path)
    _check_keys(source, data, SECTIONS)
    data = copy.deepcopy(data)
    for text in overrides:
        (section, key), value = parse_override(text)
        data.setdefault(section, {})[key] = value
    suite_meta = data.get("suite", {})
    _check_keys(f"{source} [suite]", suite_meta, SUITE_KEYS)
    defaults = dict(DEFAULTS)
    _check_keys(f"{source} [defaults]", data.get("defaults", {}), DEFAULTS)
    for k, v in data.get("defaults", {}).items():
        defaults[k] = _coerce(f"defaults.{k}", v, DEFAULTS[k])
    variables = {**(builtin_vars or {}), **{k: str(v) for k, v in data.get("vars", {}).items()}}
    missing_vars: set[str] = set()
    runs = []
    for i, run in enumerate(data.get("run", [])):
        where = f"{source} [[run]] #{i + 1}"
        _check_keys(where, run, RUN_KEYS)
        if run.get("task") not in TASKS:
            raise SuiteError(f"{where}: task must be one of {', '.join(TASKS)}, got {run.get('task')!r}")
        settings = dict(defaults)
        for k, v in run.items():
            if k not in ("task", "models"):
                settings[k] = _coerce(f"{where} {k}", v, DEFAULTS[k])
        settings["weights"] = _merge_weights(where, defaults["weights"], run.get("weights", {}))
        kind = "generator" if run["task"] == "gen" else settings["kind"]
        if kind not in OPS:
            raise SuiteError(f"{where}: kind must be 'tokenizer' or 'generator', got {kind!r}")
        settings["kind"] = kind
        known_ops = (TRAIN_OPS if run["task"] == "train" else OPS)[kind]
        bad_ops = sorted(set(settings["ops"]) - set(known_ops))
        if bad_ops:
            raise SuiteError(f"{where}: unknown op(s) {bad_ops} for {kind}s; known: {', '.join(known_ops)}")
        _check_options(where, settings["options"])
        models = run.get("models") or []
        if not models and run["task"] != "stats":  # a stats run measures images, not a model
            raise SuiteError(f"{where}: needs a non-empty `models` list")
        for m in models:
            get_spec(kind, m)  # unknown presets -> error listing the known ones
        runs.append(RunSpec(run["task"], list(models), _expand(settings, variables, missing_vars)))
    if missing_vars:
        raise SuiteError(f"{source}: undefined variable(s) {', '.join(sorted(missing_vars))}: set them in the "
                         f"environment or with --set vars.NAME=VALUE")
    if not runs:
        raise SuiteError(f"{source}: no [[run]] entries")
    resolved = {"suite": suite_meta, "vars": variables, "run": [{"task": r.task, "models": r.models, **r.settings}
                                                                for r in runs]}
    return Suite(suite_meta.get("name", Path(source).stem), suite_meta.get("description", ""), runs, source, resolved)


def required_paths(suite: Suite) -> list[tuple[str, str]]:
    """(what, path) for every external file the suite needs; 'standin' and built-in data need none."""
    need, made = [], set()
    for r in suite.runs:
        s = r.settings
        if r.task in ("recon", "gen", "stats") and s["inception_weights"] not in ("standin", "released"):
            need.append(("Inception weights (torch-fidelity weights-inception-2015-12-05-6726825d.pth)",
                         s["inception_weights"]))
        if r.task == "recon" and not s["data"].startswith("builtin:"):
            need.append(("image folder (e.g. ImageNet val, val/<wnid>/*.JPEG)", s["data"]))
        if r.task == "stats" and not s["data"].startswith("builtin:"):
            need.append(("image folder (e.g. ImageNet val, val/<wnid>/*.JPEG)", s["data"]))
        if r.task == "gen" and s["reference"] not in made:  # a stats run earlier in the suite makes it
            need.append(("reference statistics (ADM VIRTUAL_imagenet256_labeled.npz)", s["reference"]))
        if r.task == "stats":
            made.add(s["reference"])
        for kind, table in s["weights"].items():
            for model, path in table.items():
                if path != "released":  # fetched into the cache when loaded (titok/released.py)
                    need.append((f"{kind} weights for {model}", path))
    return need


def released_files(suite: Suite) -> list[tuple[str, object]]:
    """(what, source) for every "released" entry; a preset with no published checkpoint is an error now."""
    from bench.metrics.inception import INCEPTION_SOURCE
    from titok.released import RELEASED, released_source

    found = []
    for r in suite.runs:
        if r.task in ("recon", "gen", "stats") and r.settings["inception_weights"] == RELEASED:
            found.append(("Inception weights", INCEPTION_SOURCE))
        for kind, table in r.settings["weights"].items():
            found += [(f"{kind} weights for {m}", released_source(kind, m)) for m, p in table.items() if p == RELEASED]
    return found


def check_paths(suite: Suite) -> None:
    from bench.metrics.inception import MissingArtifactError
    from titok.errors import MissingFileError
    from titok.fetch import fetch, is_offline

    missing = [f"  {what}: {path or '(not set)'}" for what, path in required_paths(suite) if not path or
               not Path(path).exists()]
    for what, source in released_files(suite):
        if is_offline():  # fetched when loaded otherwise; offline, each must be in a cache before work starts
            try:
                fetch(source, offline=True)
            except MissingFileError as exc:  # its message names the file and where to put it
                missing.append(f"  {what}: {exc}")
    if missing:
        raise MissingArtifactError(
            f"suite {suite.name} needs files that are not on this machine (only 'released' entries are fetched):\n"
            + "\n".join(missing)
            + "\nSee 'External files' in docs/reproduce-paper.md (linked from the README) for where to get each and"
              " where to put it; set paths in the environment or with --set vars.NAME=PATH."
        )


def select_models(suite: Suite, names: list[str]) -> Suite:
    """The suite cut to the runs of `names` (`run --model titok_l32`: one model of the paper suite alone).

    A run keeps only the named models and is dropped when none is left; `stats` runs (they measure images, not a
    model, and write the reference a later `gen` run reads) stay. A name no run of the suite measures is an error
    listing the ones it does, so a typo never runs an empty suite.
    """
    known = sorted({m for r in suite.runs for m in r.models})
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SuiteError(f"suite {suite.name} measures no model {', '.join(map(repr, unknown))}; "
                         f"its models: {', '.join(known)}")
    runs = [RunSpec(r.task, [m for m in r.models if m in names], r.settings) for r in suite.runs
            if r.task == "stats" or set(r.models) & set(names)]
    resolved = {**suite.resolved, "models": list(names),
                "run": [{"task": r.task, "models": r.models, **r.settings} for r in runs]}
    return replace(suite, runs=runs, resolved=resolved)
