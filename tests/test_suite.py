"""Suite files: validation with errors that list the valid choices, variables, overrides, required files."""

from __future__ import annotations

import pytest

from bench.metrics.inception import MissingArtifactError
from bench.run.suite import SuiteError, builtin_suites, check_paths, load_suite
from titok.registry import UnknownPresetError

GOOD = """
[suite]
name = "t"
[defaults]
iters = 1
[[run]]
task = "speed"
models = ["titok_tiny_vq"]
"""


def write(tmp_path, text):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return str(p)


def test_builtin_suites_load():
    assert {"smoke", "paper-256", "paper-512"} <= set(builtin_suites())
    smoke = load_suite("smoke")
    assert {r.task for r in smoke.runs} == {"speed", "recon"}
    check_paths(smoke)  # the main job needs no external file


def test_defaults_and_overrides(tmp_path):
    s = load_suite(write(tmp_path, GOOD), ["defaults.iters=4", "defaults.batch_sizes=[1, 2]"])
    assert s.runs[0].settings["iters"] == 4 and s.runs[0].settings["batch_sizes"] == [1, 2]
    with pytest.raises(SuiteError, match="expected int"):
        load_suite(write(tmp_path, GOOD), ["defaults.iters='many'"])
    with pytest.raises(SuiteError, match="unknown key.*itres"):
        load_suite(write(tmp_path, GOOD), ["defaults.itres=4"])


@pytest.mark.parametrize("text,match,exc", [
    (GOOD.replace("[defaults]", "[default]"), "unknown key.*default", SuiteError),
    (GOOD.replace("iters = 1", "iters = 1\nwarmups = 2"), "known: kind, ops", SuiteError),
    (GOOD.replace('task = "speed"', 'task = "training"'), "task must be one of", SuiteError),
    (GOOD.replace("titok_tiny_vq", "titok_xxl"), "known: .*titok_l32", UnknownPresetError),
    (GOOD + 'ops = ["sample"]\n', "unknown op", SuiteError),
    (GOOD.replace('[suite]', 'x = [\n[suite]'), "invalid TOML", SuiteError),
])
def test_bad_suites_are_clear_errors(tmp_path, text, match, exc):
    with pytest.raises(exc, match=match):
        load_suite(write(tmp_path, text))


def test_variables_and_missing_files(tmp_path, monkeypatch):
    text = GOOD.replace('task = "speed"', 'task = "recon"\ndata = "${MY_DATA}"')
    with pytest.raises(SuiteError, match="undefined variable.*MY_DATA"):
        load_suite(write(tmp_path, text))
    s = load_suite(write(tmp_path, text), [f"vars.MY_DATA={tmp_path}/nowhere", "defaults.inception_weights='/no.pth'"])
    with pytest.raises(MissingArtifactError) as e:
        check_paths(s)
    assert "nowhere" in str(e.value) and "/no.pth" in str(e.value) and "README" in str(e.value)
    monkeypatch.setenv("MY_DATA", str(tmp_path))
    assert load_suite(write(tmp_path, text)).runs[0].settings["data"] == str(tmp_path)


def test_paper_suites_name_every_missing_file(monkeypatch, tmp_path):
    for var in ("IMAGENET_VAL", "INCEPTION_WEIGHTS", "ADM_REF_256", "WEIGHTS_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    with pytest.raises(MissingArtifactError) as e:
        check_paths(load_suite("paper-256"))
    msg = str(e.value)
    assert "imagenet_val" in msg and "adm_ref_256" in msg and "tokenizer_titok_l32_imagenet" in msg


def test_weights_table_is_validated(tmp_path):
    with pytest.raises(SuiteError, match="known: tokenizer, generator"):
        load_suite(write(tmp_path, GOOD + '[run.weights]\ntitok_tiny_vq = "x"\n'))
