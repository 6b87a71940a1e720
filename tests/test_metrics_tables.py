"""Generation metrics beside gFID in the quality table: sFID, precision/recall (k=3), KID; stand-in sFID apart."""

from __future__ import annotations

from bench.records.rules import rule_for
from bench.records.store import make_record
from bench.records.tables import FORMATS, MEANINGS, quality_table
from bench.run.env import environment

ENV = environment("cpu")


def gen(metrics: dict) -> dict:
    return make_record(run_id="r", model="titok_l32", task="gen", commit="c", env=ENV, metrics=metrics,
                       protocol={"num_samples": 50_000, "resolution": 256})


def test_gen_row_shows_sfid_precision_recall_and_kid_each_in_its_own_column():
    row = quality_table([gen({"gfid": 2.8, "sfid": 5.5, "isc_mean": 200.0, "precision": 0.81, "recall": 0.57,
                              "kid_mean": 0.002})]).iloc[0]
    assert (row["gFID"], row["sFID"], row["IS"]) == (2.8, 5.5, 200.0)
    assert (row["precision (k=3)"], row["recall (k=3)"], row["KID"]) == (0.81, 0.57, 0.002)
    for column in ("sFID", "precision (k=3)", "recall (k=3)", "KID", "stand-in sFD (gen)"):
        assert column in MEANINGS and column in FORMATS
    assert "k=3" in MEANINGS["precision (k=3)"] and "pool3" in MEANINGS["precision (k=3)"]


def test_stand_in_sfid_is_never_shown_as_sfid():
    df = quality_table([gen({"standin_gfid": 3.0, "standin_sfid": 7.0})])
    assert df.iloc[0]["stand-in sFD (gen)"] == 7.0 and "sFID" not in df.columns
    assert "NOT sFID" in MEANINGS["stand-in sFD (gen)"]


def test_new_metric_names_have_directions():
    assert rule_for("sfid").direction == -1 and rule_for("standin_sfid").direction == -1
    assert rule_for("precision").direction == rule_for("recall").direction == 1
