"""Checkpoints of in-memory gFID: what a killed generation run keeps, so that a rerun redoes only what was lost.

In-memory scoring keeps no samples on disk, so what survives a kill is each rank's Inception statistics
(`InceptionMetrics.state_dict()`: counts, float64 feature sums, per-split Inception Score sums, and the pool
features where KID or precision/recall need them) together with the list of global batches those statistics hold.
Each rank writes its own file every `checkpoint_every` batches and once more at its end, atomically (a temporary
file, fsync, rename, fsync of the folder), so a kill at any moment leaves the previous checkpoint or the new one,
never a mixture. A rerun loads it and skips the batches it lists; at most `checkpoint_every` batches per rank are
redone.

Where: `OUT/gen-state/<generator>-seed<seed>-<key>/rank<r>-of<world>.npz`, where `<key>` is a hash of every
setting the statistics depend on (models, weights, seed, batch size, sampling, noise scheme, sample count,
metrics, Inception weights, reference, bootstrap; written out in `key.json` beside the files). A run under other
settings therefore starts its own folder and never mixes with another's. A run under another world size finds
the other's files in its folder and is refused (its batches were split another way): resume with the same
number of processes, or delete the folder to start over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from titok.data.files import TMP_SUFFIX, tmp_name
from titok.errors import InputError

log = logging.getLogger(__name__)
STATE_DIR = "gen-state"
_META = "__meta__"  # the JSON of every value in the state that is not an array
_DONE = "__done_batches__"
_FILE = re.compile(r"rank(\d+)-of(\d+)\.npz")


def state_folder(out_dir: Path, preset: str, seed: int, key: dict) -> Path:
    """The folder of one run's checkpoints: named by a hash of the settings its statistics depend on."""
    text = json.dumps(key, sort_keys=True, default=str)
    return Path(out_dir) / STATE_DIR / f"{preset}-seed{seed}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _flatten(state: dict, prefix: str = "") -> tuple[dict[str, np.ndarray], dict]:
    """A nested state dict -> ({'a/b': array}, {'a/b': JSON value}): np.savez holds arrays, JSON the rest."""
    arrays, meta = {}, {}
    for k, v in state.items():
        name = f"{prefix}{k}"
        if "/" in str(k) or name in (_META, _DONE):
            raise ValueError(f"state key {name!r} can't be stored")
        if isinstance(v, dict) and v:
            a, m = _flatten(v, name + "/")
            arrays.update(a)
            meta.update(m)
        elif isinstance(v, np.ndarray):
            arrays[name] = v
        else:
            meta[name] = v
    return arrays, meta


def _unflatten(flat: dict) -> dict:
    out: dict = {}
    for name, v in flat.items():
        *parents, leaf = name.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


class GenCheckpoint:
    """One rank's checkpoint file in a run's state folder."""

    def __init__(self, folder: Path, key: dict, rank: int, world: int):
        self.folder, self.key, self.rank, self.world = Path(folder), key, rank, world
        self.path = self.folder / f"rank{rank}-of{world}.npz"

    def check_world(self) -> None:
        """Refuse checkpoints made under another world size: their batches were split among other ranks, and
        statistics of one split can't be continued under another."""
        if not self.folder.is_dir():
            return
        worlds = {int(m.group(2)) for p in self.folder.iterdir() if (m := _FILE.fullmatch(p.name))}
        other = sorted(worlds - {self.world})
        if other:
            raise InputError(f"{self.folder} holds the checkpoints of this run under {other[0]} process(es), and "
                             f"this one runs {self.world}: the batches were split another way. Resume with "
                             f"{other[0]} process(es) (torchrun --nproc_per_node {other[0]}), or delete the folder "
                             f"to start over.")

    def load(self) -> tuple[dict | None, list[int]]:
        """(state dict, global batch numbers it holds), or (None, []) when there is nothing usable to resume.
        Temporary files a killed write of this rank left behind are removed (no other rank writes them)."""
        for tmp in self.folder.glob(f".{self.path.name}.*{TMP_SUFFIX}") if self.folder.is_dir() else ():
            tmp.unlink(missing_ok=True)
        if not self.path.is_file():
            return None, []
        try:
            with np.load(self.path, allow_pickle=False) as z:
                flat = {k: z[k] for k in z.files}
            meta = json.loads(str(flat.pop(_META)))
            done = [int(j) for j in flat.pop(_DONE)]
        except Exception as exc:  # noqa: BLE001 - any damage means: start this rank over, never stop the run
            log.warning("%s: unreadable checkpoint (%s); this rank starts over", self.path, exc)
            return None, []
        if meta.pop("__key__", None) != json.loads(json.dumps(self.key, sort_keys=True, default=str)):
            log.warning("%s was written under other settings; this rank starts over", self.path)
            return None, []
        return _unflatten({**flat, **meta}), done

    def save(self, state: dict, done: list[int]) -> None:
        """Write the state and its batches atomically: temporary file, fsync, rename, fsync of the folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / "key.json"
        if not key_file.exists():
            key_file.write_text(json.dumps(self.key, indent=2, sort_keys=True, default=str))
        arrays, meta = _flatten(state)
        meta["__key__"] = self.key
        arrays[_META] = np.array(json.dumps(meta, sort_keys=True, default=str))
        arrays[_DONE] = np.asarray(sorted(done), dtype=np.int64)
        tmp = tmp_name(self.path)
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself reaches the disk
        finally:
            os.close(fd)
