"""The command lines' error boundary: bad input (an `InputError`) is one line and exit 2; anything else is a bug
of ours and keeps its traceback (exit 1), even when it is a KeyError, ValueError or OSError."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import bench.run.tasks.common
from bench.cli import main
from titok.errors import ConfigError, DataError, InputError, MissingFileError
from titok.registry import UnknownPresetError
from titok.train.cli import main as train_main
from titok.weights import WeightsError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("error", [ConfigError, DataError, MissingFileError, WeightsError, UnknownPresetError])
def test_every_bad_input_type_is_an_input_error(error):
    assert issubclass(error, InputError)


def test_unknown_preset_is_bad_input(tmp_path, capsys):
    assert main(["reconstruct", "--model", "titok_nope", "--input", "builtin:procedural", "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown tokenizer preset 'titok_nope'" in err and "Traceback" not in err


@pytest.mark.parametrize("planted", [KeyError("num_tokens"), ValueError("bad arithmetic"), OSError("disk"),
                                     ImportError("a module of ours")])
def test_a_planted_internal_error_is_not_reported_as_bad_input(monkeypatch, tmp_path, planted):
    def broken_loader(*args, **kwargs):
        raise planted

    monkeypatch.setattr(bench.run.tasks.common, "create", broken_loader)
    with pytest.raises(type(planted)):  # in-process: the real exception, not an exit status 2
        main(["reconstruct", "--model", "titok_tiny_vq", "--input", "builtin:procedural", "--out", str(tmp_path)])


def test_a_bug_exits_1_with_its_traceback(tmp_path):
    # As a user sees it: a KeyError raised inside our code (planted through the registry) ends in a traceback.
    code = ("import sys, titok.registry as r\n"
            "def broken(*a, **k): raise KeyError('internal')\n"
            "r.get_spec = broken\n"
            "import bench.run.tasks.common as c; c.create = lambda *a, **k: broken()\n"
            "from bench.cli import main\n"
            f"sys.exit(main(['reconstruct', '--model', 'titok_tiny_vq', '--input', 'builtin:procedural', "
            f"'--out', {str(tmp_path)!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "KeyError: 'internal'" in proc.stderr


def test_train_cli_bad_input_exits_2_and_bug_raises(monkeypatch, capsys):
    assert train_main(["--optim.nope=1"]) == 2
    assert "unknown key" in capsys.readouterr().err
    import titok.train.loop

    def broken(*args, **kwargs):
        raise KeyError("internal")

    monkeypatch.setattr(titok.train.loop, "preflight", broken)
    with pytest.raises(KeyError):
        train_main(["--schedule.steps=1"])
