"""bench/run/tasks/gen_state.py: a rank's checkpoint file round-trips its state, is never left half-written, belongs to
one set of settings and one world size. The expected state is the dict the test wrote."""

from __future__ import annotations

import numpy as np
import pytest

from bench.run.tasks.gen_state import GenCheckpoint, state_folder
from titok.errors import InputError

KEY = {"generator": "titok_tiny_bert", "seed": 3, "batch_size": 4, "num_samples": 40, "sampling": {"temperature": 2}}


def a_state() -> dict:
    rng = np.random.default_rng(1)
    return {"settings": '{"metrics": ["fid"]}', "rank": 1, "world_size": 2, "fake.n": 8,
            "fake.sum": rng.normal(size=5), "fake.outer": rng.normal(size=(5, 5)),
            "isc.counts": np.array([3, 5], np.int64), "nested": {"inner": np.arange(3.0), "flag": True}}


def test_a_checkpoint_round_trips_its_state_and_batches(tmp_path):
    folder = state_folder(tmp_path, "titok_tiny_bert", 3, KEY)
    assert folder.parent == tmp_path / "gen-state" and folder.name.startswith("titok_tiny_bert-seed3-")
    ckpt = GenCheckpoint(folder, KEY, rank=1, world=2)
    assert ckpt.load() == (None, [])
    state = a_state()
    ckpt.save(state, [5, 1, 3])
    assert ckpt.path.name == "rank1-of2.npz" and (folder / "key.json").is_file()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary file stays
    got, done = GenCheckpoint(folder, KEY, 1, 2).load()
    assert done == [1, 3, 5]
    assert got.keys() == state.keys() and got["nested"].keys() == state["nested"].keys()
    for k in ("fake.sum", "fake.outer", "isc.counts"):
        assert got[k].dtype == state[k].dtype and np.array_equal(got[k], state[k])
    assert np.array_equal(got["nested"]["inner"], state["nested"]["inner"]) and got["nested"]["flag"] is True
    assert (got["settings"], got["rank"], got["world_size"], got["fake.n"]) == ('{"metrics": ["fid"]}', 1, 2, 8)


def test_other_settings_get_another_folder_and_a_foreign_file_is_not_resumed(tmp_path):
    other = {**KEY, "sampling": {"temperature": 1}}
    assert state_folder(tmp_path, "m", 3, KEY) != state_folder(tmp_path, "m", 3, other)
    folder = state_folder(tmp_path, "m", 3, KEY)
    GenCheckpoint(folder, other, 0, 1).save(a_state(), [0])  # a file of other settings in this folder
    assert GenCheckpoint(folder, KEY, 0, 1).load() == (None, [])


def test_damaged_checkpoints_and_killed_writes_start_the_rank_over(tmp_path):
    folder = tmp_path / "s"
    ckpt = GenCheckpoint(folder, KEY, 0, 1)
    ckpt.save(a_state(), [0, 1])
    leftover = folder / ".rank0-of1.npz.999-abcd.tmp"  # a write killed before its rename
    leftover.write_bytes(b"half")
    ckpt.path.write_bytes(ckpt.path.read_bytes()[:100])  # and a file cut short
    assert GenCheckpoint(folder, KEY, 0, 1).load() == (None, [])
    assert not leftover.exists()


def test_another_world_size_is_refused_naming_how_to_resume(tmp_path):
    folder = tmp_path / "s"
    for rank in (0, 1):
        GenCheckpoint(folder, KEY, rank, 2).save(a_state(), [rank])
    GenCheckpoint(folder, KEY, 1, 2).check_world()  # the same world size: fine
    with pytest.raises(InputError, match=r"under 2 process\(es\).*runs 1.*--nproc_per_node 2"):
        GenCheckpoint(folder, KEY, 0, 1).check_world()
    with pytest.raises(InputError, match="under 2 process"):
        GenCheckpoint(folder, KEY, 3, 4).check_world()
    GenCheckpoint(tmp_path / "empty", KEY, 0, 4).check_world()  # nothing there yet
