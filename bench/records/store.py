"""Results records: append-only JSON Lines with a versioned schema (one measurement per line).

A record is written whole or not at all: the full line goes out in one `write` on a file opened for append,
then fsync; a write that fails part-way is truncated away, and earlier records are never rewritten. If the file
ends in half a line (a writer killed by a power loss, another tool), the next record starts on a new line, so
the damage stays one malformed line. Readers skip and report malformed lines (not JSON, missing fields, wrong
types, a newer schema) instead of dying, so one bad line can't hide a results file.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from titok.data.files import tmp_name
from titok.errors import MissingFileError

SCHEMA_VERSION = 1
TASKS = ("recon", "gen", "speed", "memory", "train", "stats")
REQUIRED = ("schema_version", "run_id", "time", "git_commit", "model", "weights_tag", "task", "metrics", "protocol",
            "env")


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _finite(x):
    """JSON has no NaN/inf: store them as strings so a record stays valid JSON and the value is not lost."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def make_record(*, run_id: str, model: str, task: str, metrics: dict, protocol: dict, env: dict,
                weights_tag: str = "random", error: str | None = None, commit: str | None = None,
                spreads: dict | None = None, machine: dict | None = None) -> dict:
    """One measurement. Optional fields (older records lack them, and readers must cope):
    `spreads` {metric: {values, n, min, median, max, spread} or {std, n, method}}: the measurement's own noise,
    which `compare` judges a change against; `machine` (bench/run/machine.py): load and clock while it was taken."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    rec = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "git_commit": commit or git_commit(), "model": model, "weights_tag": weights_tag, "task": task,
           "metrics": metrics, "protocol": protocol, "env": env}
    if spreads:
        rec["spreads"] = spreads
    if machine:
        rec["machine"] = machine
    if error:
        rec["error"] = error
    return rec


# Protocol fields that say how a run went, not what was measured: two records differing only in them are one
# measurement (options_label is a display name of `options`).
VOLATILE = ("batch_size_used", "memory_source", "options_label")


def measurement_key(rec: dict) -> str:
    """What a record measured: model, task, weights and protocol (volatile fields aside). Records with equal keys
    are the same measurement taken again (another run, commit or machine)."""
    protocol = {k: v for k, v in rec["protocol"].items() if k not in VOLATILE}
    key = {"model": rec["model"], "task": rec["task"], "weights": rec["weights_tag"], "protocol": protocol}
    return json.dumps(key, sort_keys=True)


def _environment(rec: dict) -> str:
    """Records from two machines are two rows, never one replacing the other."""
    env = rec["env"]
    return json.dumps([env.get(k) for k in ("device", "device_name", "cpu", "threads", "torch")])


def record_time(rec: dict) -> float:
    """Seconds since the epoch of a record's `time` (0 where unreadable, so such records sort first)."""
    try:
        return datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except (KeyError, TypeError, ValueError):
        return 0.0


def latest_records(records: list[dict]) -> list[dict]:
    """One record per measurement and environment: the newest (by time, then file order). A file that holds
    several runs (reruns of one commit, or several commits) renders as one row per measurement with the latest
    commit's number; `titok-bench history` shows the earlier ones. Order of first appearance is kept."""
    newest: dict[tuple[str, str], tuple[float, int]] = {}
    for i, rec in enumerate(records):
        key, when = (measurement_key(rec), _environment(rec)), (record_time(rec), i)
        if key not in newest or when >= newest[key]:
            newest[key] = when
    keep = {i for _, i in newest.values()}
    return [rec for i, rec in enumerate(records) if i in keep]


# The protocol fields that tell apart the measurements of ONE run of a suite (op, batch, precision, options, data
# set and size). Two records equal in these (and in model, task, weights, environment) are one measurement even
# when a later commit's protocol gained or changed other fields (sampling settings written out, a resize mode).
IDENTITY = ("op", "options", "batch_size", "precision", "resolution", "data", "num_images", "num_samples")


def _identity(rec: dict) -> str:
    protocol = rec["protocol"]
    return json.dumps([rec["model"], rec["task"], rec["weights_tag"], _environment(rec),
                       [protocol.get(k) for k in IDENTITY]], sort_keys=True)


def superseded(records: list[dict]) -> list[dict]:
    """The records, among `records`, that a later commit measured again under a newer protocol: another record of
    the same identity (model, task, weights, environment and IDENTITY fields) comes from another commit, is newer,
    and has another measurement key. Such a record is its protocol's latest, but nobody runs that protocol any
    more: tables leave it out (otherwise one setting shows two rows, the old protocol's and the new one's) and
    `compare` does not ask a fresh run to match it. A measurement a later commit did not redo at all is kept."""
    newest: dict[str, dict] = {}
    for rec in records:
        key = _identity(rec)
        if key not in newest or record_time(rec) >= record_time(newest[key]):
            newest[key] = rec
    return [rec for rec in records
            if (last := newest[_identity(rec)]) is not rec and last.get("git_commit") != rec.get("git_commit")
            and record_time(last) > record_time(rec) and measurement_key(last) != measurement_key(rec)]


def current_records(records: list[dict]) -> list[dict]:
    """`latest_records` without the superseded ones: one record per measurement that the latest code still makes."""
    latest = latest_records(records)
    old = {id(r) for r in superseded(latest)}
    return [r for r in latest if id(r) not in old]


def append_record(path: str | Path, record: dict) -> None:
    """Append one record as one line, whole or not at all; earlier lines are never rewritten."""
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"record lacks {missing}")
    data = (json.dumps(_finite(record), sort_keys=True, allow_nan=False) + "\n").encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # A crash (of another writer, or a power loss) left half a line: end it, so that line stays one
            # malformed line for readers to report, and ours starts on a line of its own.
            data = b"\n" + data
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write to {path} ({written} of {len(data)} bytes)")
            os.fsync(fd)
        except BaseException:
            # Whole or not at all: take back what this call added (unless another writer appended since).
            if os.fstat(fd).st_size > size and os.fstat(fd).st_size <= size + len(data):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def rewrite_records(path: str | Path, records: list[dict]) -> None:
    """Replace a results file with `records`, atomically (a temporary file beside it, fsync, rename): a crash
    leaves the old file or the new one. Only `publish --replace` rewrites; runs only ever append."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            for rec in records:
                f.write((json.dumps(_finite(rec), sort_keys=True, allow_nan=False) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class ReadResult:
    records: list[dict]
    problems: list[str]  # "file:line: why" for every skipped line


def _malformed(rec: dict) -> str:
    """Why a record with every field can't be used (wrong types), or "" when it can."""
    if not isinstance(rec["schema_version"], int) or isinstance(rec["schema_version"], bool):
        return "schema_version is not an integer"
    for key in ("run_id", "model", "task", "weights_tag"):
        if not isinstance(rec[key], str):
            return f"{key} is not a string"
    for key in ("metrics", "protocol", "env"):
        if not isinstance(rec[key], dict):
            return f"{key} is not an object"
    return ""


def read_records(paths: str | Path | Iterable[str | Path]) -> ReadResult:
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    records, problems = [], []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"results file not found: {path}")
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    problems.append(f"{path}:{n}: not JSON ({exc.msg})")
                    continue
                if not isinstance(rec, dict) or any(k not in rec for k in REQUIRED):
                    problems.append(f"{path}:{n}: not a results record (missing fields)")
                    continue
                why = _malformed(rec)
                if why:
                    problems.append(f"{path}:{n}: not a results record ({why})")
                    continue
                if rec["schema_version"] > SCHEMA_VERSION:
                    problems.append(f"{path}:{n}: schema {rec['schema_version']} is newer than this tool's")
                    continue
                records.append(rec)
    return ReadResult(records, problems)
