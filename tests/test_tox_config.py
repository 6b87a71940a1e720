"""tox.ini as the README describes it: the metrics-stack environments share one folder with one definition, the
README's two set-up commands name environments that exist, and the sections tox.ini points to exist."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("metrics", "bench", "bench-gpu", "tables", "compare")


def tox_ini() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "tox.ini")
    return cfg


def resolved(cfg: configparser.ConfigParser, env: str, key: str) -> str:
    """A key of [testenv:ENV], following tox's {[testenv:OTHER]key} references."""
    value = cfg.get(f"testenv:{env}", key, fallback=cfg.get("testenv", key, fallback="")).strip()
    ref = re.fullmatch(r"\{\[testenv:([\w-]+)\](\w+)\}", value)
    return resolved(cfg, ref[1], ref[2]) if ref else value


def test_metrics_stack_environments_share_one_folder_and_one_definition():
    cfg = tox_ini()
    for key in ("env_dir", "deps", "extras"):
        values = {env: resolved(cfg, env, key) for env in SHARED}
        assert len(set(values.values())) == 1, (key, values)  # any difference would also make tox reinstall
    assert resolved(cfg, "metrics", "env_dir") == "{work_dir}/metrics"
    assert "metrics.txt" in resolved(cfg, "bench", "deps")
    assert resolved(cfg, "py", "env_dir") == ""  # the CPU stack keeps its own folder


def test_readme_setup_commands_name_existing_environments():
    readme = (ROOT / "README.md").read_text()
    assert 'python3 -m pip install "tox>=4" && python3 -m tox -e bench ' in readme
    assert 'python3 -m pip install "tox>=4" && python3 -m tox -e py,metrics ' in readme
    envs = {s.removeprefix("testenv:") for s in tox_ini().sections() if s.startswith("testenv:")}
    assert {"bench", "py", "metrics"} <= envs


def test_tox_ini_points_at_readme_sections_that_exist():
    readme_headings = set(re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(), flags=re.M))
    lines = [line for line in (ROOT / "tox.ini").read_text().splitlines() if "README" in line]
    named = [n for line in lines for n in re.findall(r'"([^"]+)"', line)]
    assert named and all(n in readme_headings for n in named), (named, readme_headings)
