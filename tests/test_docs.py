"""The docs say what the code does: every command in docs/*.md and the README parses with the real argument parsers
(and titok-train's settings exist, with values of the right type), every Python example runs, the generated
reference pages match the code, and the site's nav lists every page (the strict build, `tox -e docs`, checks
links and anchors)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
NEEDS = re.compile(r"^# needs: (.+)$")


def _blocks(lang: str) -> list[tuple[str, str]]:
    """(page name, block text) of every ```lang block of the README and docs/."""
    found = []
    for page in PAGES:
        for block in re.findall(rf"```{lang}\n(.*?)```", page.read_text(), flags=re.S):
            found.append((str(page.relative_to(ROOT)), block))
    return found


def _commands() -> list[tuple[str, str]]:
    """(page, command) for each titok-bench / titok-train / torchrun line, continuations joined, comment cut."""
    out = []
    for page, block in _blocks("bash"):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = re.split(r"\s+(#|\|)\s", line.strip())[0]
            if line.split(" ", 1)[0] in ("titok-bench", "titok-train", "torchrun"):
                out.append((page, line))
    return out


def _argv(command: str) -> list[str]:
    """The words of a command, without optional parts shown in brackets or an elided rest (`...`)."""
    return [w for w in shlex.split(re.sub(r"\[[^\]]*\]", "", command)) if w != "..."]


def _check_train(argv: list[str]) -> None:
    from titok.train import pretokenize_cli, recipes
    from titok.train.cli import build_parser, split_overrides
    from titok.train.config import TrainConfig, apply_overrides

    if argv[:1] == ["pretokenize"]:
        pretokenize_cli.build_parser().parse_args(argv[1:])
        return
    args, rest = build_parser().parse_known_args(argv)
    config = recipes.load_recipe(args.recipe, TrainConfig()) if args.recipe else TrainConfig()
    apply_overrides(config, split_overrides(rest))  # unknown sections, keys and wrong types raise


COMMANDS = _commands()


def test_docs_have_commands_of_every_tool():
    tools = {command.split(" ", 1)[0] for _, command in COMMANDS}
    assert tools == {"titok-bench", "titok-train", "torchrun"}
    pages = {page for page, _ in COMMANDS}
    assert {"docs/reproduce-paper.md", "docs/training.md", "docs/regression.md", "README.md"} <= pages


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_documented_command_parses(page, command):
    from bench.cli import build_parser

    argv = _argv(command)
    try:
        if argv[0] == "titok-bench":
            build_parser().parse_args(argv[1:])
        elif argv[0] == "titok-train":
            _check_train(argv[1:])
        else:  # torchrun [its options] -m titok.train.cli ARGS, or -m bench ARGS (titok-bench's)
            assert "-m" in argv and argv[argv.index("-m") + 1] in ("titok.train.cli", "bench"), command
            if argv[argv.index("-m") + 1] == "bench":
                build_parser().parse_args(argv[argv.index("-m") + 2:])
            else:
                _check_train(argv[argv.index("-m") + 2:])
    except SystemExit as exc:
        pytest.fail(f"{page}: does not parse ({exc}): {command}")


# ------------------------------------------------------------------------------------------- Python examples
PYTHON = _blocks("python")
RUNNABLE = [(p, b) for p, b in PYTHON if not NEEDS.match(b.splitlines()[0])]
NEEDING = [(p, b) for p, b in PYTHON if NEEDS.match(b.splitlines()[0])]


def test_examples_that_cannot_run_here_are_few_and_say_why():
    assert len(RUNNABLE) >= 3 and len(NEEDING) <= len(RUNNABLE)


@pytest.mark.parametrize(("page", "block"), RUNNABLE, ids=[p for p, _ in RUNNABLE])
def test_python_example_runs(page, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write nothing into the checkout
    exec(compile(block, f"{page} example", "exec"), {"__name__": "__doc_example__"})


@pytest.mark.parametrize(("page", "block"), NEEDING, ids=[p for p, _ in NEEDING])
def test_python_example_needing_files_compiles_and_imports(page, block):
    """Run as far as this machine can: the whole block needs files or a stack the tests lack (said in its first
    line); its imports run and the names it calls on them exist."""
    if "metrics stack" in block.splitlines()[0]:
        pytest.importorskip("torch_fidelity", reason="the metrics stack runs this example (tox -e metrics)")
    code = compile(block, f"{page} example", "exec")
    imports = "\n".join(line for line in block.splitlines() if re.match(r"(import|from) \w", line))
    namespace: dict = {}
    exec(imports, namespace)
    for module, attr in re.findall(r"\b(titok|bench\.\w+)\.(\w+)\(", block):
        target = namespace.get(module) or importlib.import_module(module)
        assert hasattr(target, attr), f"{page}: {module}.{attr} does not exist"
    assert code is not None


@pytest.mark.metrics
@pytest.mark.slow  # writes a 96 MB stand-in Inception and runs it: over a minute on 2 busy cores
@pytest.mark.parametrize(("page", "block"), [(p, b) for p, b in NEEDING if "metrics stack" in b.splitlines()[0]])
def test_python_example_of_the_metrics_stack_runs(page, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"{page} example", "exec"), {"__name__": "__doc_example__"})


# ----------------------------------------------------------------------------------------- generated pages
def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tools" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_reference_pages_match_the_code(capsys):
    assert _gen_docs().main(["--check"]) == 0, capsys.readouterr().err + " (run python tools/gen_docs.py)"


def test_cli_reference_names_every_command_and_flag():
    """Independent of the generator: walk the parser here and look for each flag on the committed page."""
    from bench.cli import build_parser

    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    for name, parser in sub.choices.items():
        section = page.split(f"### titok-bench {name}\n", 1)[1].split("\n### ", 1)[0]
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert flag in section, f"{name} {flag}"
    assert "`--model PRESET`" in page.split("### titok-bench run\n", 1)[1].split("\n### ", 1)[0]


def test_preset_table_lists_every_preset_with_its_parameters():
    """Against the registry, with parameter counts checked against FACTS (the release's modules)."""
    import titok

    page = (ROOT / "docs" / "reference" / "presets.md").read_text()
    tokenizers, generators = page.split("## Generators", 1)
    rows = {kind: dict(re.findall(r"^\| `(\w+)` \|[^|]*\|[^|]*\| ([\d.]+) \|", text, flags=re.M))
            for kind, text in (("tokenizer", tokenizers), ("generator", generators))}
    for kind in ("tokenizer", "generator"):
        assert set(rows[kind]) == set(titok.list_presets(kind)), kind
    facts = {("tokenizer", "titok_l32"): 641, ("tokenizer", "titok_b64"): 205, ("tokenizer", "titok_s128"): 84,
             ("generator", "titok_l32"): 177, ("generator", "titok_s128"): 295, ("generator", "maskgit_256"): 172.5,
             ("tokenizer", "maskgit_vqgan_f16_1024"): 54.5, ("tokenizer", "taming_vqgan_f16_16384"): 76.1}
    for (kind, name), millions in facts.items():
        assert float(rows[kind][name]) == pytest.approx(millions, abs=0.6), (kind, name)


# --------------------------------------------------------------------------------------------- the site
def test_nav_lists_every_page_and_only_pages_that_exist():
    nav = re.findall(r":\s*([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M)
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in DOCS)
    assert sorted(nav) == pages


def test_readme_links_into_docs_resolve():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", readme)
    assert "docs/reproduce-paper.md" in links  # one click from the README to the paper-reproduction page
    assert all((ROOT / link).is_file() for link in links), links


def test_readme_stays_short_with_status_near_the_top():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    assert next(i for i, line in enumerate(lines) if line == "## Status") < 30
    assert ".tox/metrics" in "\n".join(lines[:12])  # where the bench env lives, beside the commands


def test_readme_result_table_matches_the_committed_records():
    from bench.records.store import read_records
    from bench.records.tables import select_records, speed_table

    records = read_records([str(ROOT / "results" / "smoke-cpu-amd-epyc-2threads-torch2.14.1.jsonl")]).records
    table = speed_table(select_records(records))
    generate = {row.preset: row for row in table[table.op == "generate"].itertuples()}
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \| (\d+) \| ([\d.]+) \| (\d+) \| (\d+) \|$", readme, flags=re.M)
    assert {r[0] for r in rows} == set(generate)
    for preset, steps, resolution, ips, memory, params in rows:
        row = generate[preset]
        assert int(steps) == row.steps and int(resolution) == row.resolution, preset
        assert float(ips) == pytest.approx(table.loc[row.Index, "img/s"], rel=5e-3), preset
        assert float(memory) == pytest.approx(table.loc[row.Index, "peak memory (MB)"], abs=1), preset
        assert float(params) == pytest.approx(table.loc[row.Index, "params (M)"], abs=1), preset


def test_documented_test_commands_name_existing_files_and_environments():
    """The 'run one test file' lines: the environment folder tox builds and a test file that exists."""
    lines = [line for _, block in _blocks("text") for line in block.splitlines() if line.startswith(".tox/")]
    assert lines
    for line in lines:
        env = line.split("/")[1]
        assert env in ("py", "metrics"), line  # the folders tox.ini's environments build (metrics: env_dir)
        for path in re.findall(r"tests/\w+\.py", line):
            assert (ROOT / path).is_file(), line
