"""Tables show one row per measurement, the latest commit's, even when that commit's protocol grew new fields.

The committed smoke file once listed `titok_s128 sample` twice with the same visible settings (0.0119 and 0.0143
img/s): the newer run wrote its sampler's defaults out (mask schedule, confidence, token sampling), so the two
records had different measurement keys and both were "the latest" of their key.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from bench.records.compare import compare
from bench.records.store import make_record
from bench.records.tables import select_records, speed_table
from bench.run.env import environment

SMOKE = Path(__file__).parent.parent / "results" / "smoke-cpu-amd-epyc-2threads-torch2.14.1.jsonl"
ENV = environment("cpu")
SHOWN = ["preset", "op", "resolution", "batch", "precision", "options", "device", "weights"]
OPTIONS = {"attention": "sdpa", "cfg_batched": True, "channels_last": True, "compile": False, "cuda_graphs": False,
           "fused_upsample": True}


def sample(commit: str, when: str, ips: float, sampling_fields: bool, model: str = "titok_s128",
           batch: int = 1) -> dict:
    sampling = {"guidance_scale": 6.9, "num_steps": 64}
    if sampling_fields:  # what a later commit writes out: the sampler's defaults, named
        sampling.update(mask_schedule="arccos", confidence="logit", token_sampling="annealed-gumbel")
    rec = make_record(run_id=commit, model=model, task="speed", commit=commit, env=ENV,
                      metrics={"images_per_sec": ips, "peak_memory_mb": 2000.0},
                      protocol={"op": "sample", "kind": "generator", "resolution": 256, "batch_size": batch,
                                "precision": "fp32", "iters": 1, "warmup": 0, "options": OPTIONS,
                                "options_label": "default", "sampling": sampling})
    rec["time"] = when
    return rec


OLD = "2026-11-27T09:00:00+0000"
NEW = "2026-11-28T16:00:00+0000"


def test_committed_speed_table_has_one_row_per_visible_setting():
    records = [json.loads(line) for line in SMOKE.read_text().splitlines() if line.strip()]
    table = speed_table(select_records(records))
    dupes = table[table.duplicated(subset=[c for c in SHOWN if c in table.columns], keep=False)]
    assert dupes.empty, dupes.to_string()
    committed = (SMOKE.parent / SMOKE.stem / "speed.md").read_text()
    rows = [line for line in committed.splitlines() if line.startswith("| titok_s128 ") and "| sample " in line]
    assert len(rows) == 1, rows  # the committed table was rendered from the fixed selection


def test_a_newer_protocol_supersedes_the_older_commits_record():
    old, new = sample("c1", OLD, 0.0119, False), sample("c2", NEW, 0.0143, True)
    table = speed_table(select_records([old, new]))
    assert table["img/s"].tolist() == [0.0143]
    # file order does not matter, time does
    assert speed_table(select_records([new, old]))["img/s"].tolist() == [0.0143]


def test_what_a_later_commit_did_not_redo_stays():
    """A partial rerun (another batch size only, or the same protocol again) retires nothing."""
    old_b1, old_b4 = sample("c1", OLD, 0.0119, False), sample("c1", OLD, 0.04, False, batch=4)
    new_b1 = sample("c2", NEW, 0.0143, True)
    assert sorted(speed_table(select_records([old_b1, old_b4, new_b1]))["img/s"]) == [0.0143, 0.04]
    same_protocol = sample("c2", NEW, 0.05, False, batch=4)
    assert sorted(speed_table(select_records([old_b1, old_b4, same_protocol]))["img/s"]) == [0.0119, 0.05]
    # two commits' records on two machines are two measurements
    other_machine = copy.deepcopy(new_b1)
    other_machine["env"] = dict(ENV, cpu="another CPU", device_name="another CPU")
    assert sorted(speed_table(select_records([old_b1, other_machine]))["img/s"]) == [0.0119, 0.0143]


def test_compare_leaves_the_bases_older_protocol_out_but_not_a_measurement_nobody_redid():
    base = [sample("c1", OLD, 0.0119, False), sample("c1", OLD, 0.02, False, model="titok_l32"),
            sample("c1", OLD, 0.03, False, model="titok_b64"), sample("c2", NEW, 0.0143, True),
            sample("c2", NEW, 0.021, True, model="titok_l32")]
    fresh = [sample("c3", NEW.replace("28", "29"), 0.0143, True), sample("c3", NEW.replace("28", "29"), 0.021, True,
                                                                        model="titok_l32")]
    rep = compare(fresh, base)
    assert rep.matched == 2 and rep.base_total == 3
    assert len(rep.retired) == 2 and all("titok_b64" not in r for r in rep.retired)
    assert rep.only_base == ["titok_b64 speed sample/256/1/fp32/default"]  # c2 never redid it: still listed
    assert "2 older-protocol base records left out" in rep.summary()
    # An old commit's run compared with the base still finds its own protocol's records.
    rep = compare([sample("c0", OLD, 0.0119, False)], base)
    assert rep.matched == 1 and not rep.regressions
