"""Every command the docs show still parses.

Each fenced shell block (```bash, ```sh, ```shell, ```console) of README.md and docs/*.md is read line by line
(`\\` continuations joined; `&&`, `;`, `|` and `||` split; comments, redirections and `VAR=value` prefixes dropped;
`$ ` prompts of console blocks stripped and their output lines skipped; `[...]` optional parts kept as given).
Every command found is checked without running anything:

- `python -m ast_dora.X ARGS`: the module must exist and expose a module-level `build_parser()` (no arguments)
  returning its argparse parser; `build_parser().parse_args(ARGS)` must accept ARGS. A module whose command line
  is more than one parser also has a module-level `parse_args(argv)` doing the whole parse without running
  anything; it is used instead (`ast_dora.hub`: `load --evaluate --config CONFIG` takes config overrides, which
  are checked as `finetune/run.py`'s).
- `python finetune/run.py ARGS` (and `python -m ast_dora.cli` / `ast_dora.training`): the project's config
  parsing, `ast_dora.config.parse_config(ARGS)` (the `--config` file with its `base:` chain, then the overrides,
  validated as a run would).
- `accelerate launch [ACCELERATE FLAGS] SCRIPT ARGS`: accelerate's own `launch` parser for its flags, then SCRIPT as
  above.
- `python SCRIPT.py ARGS` for another script at the repository's root (`app.py`): as a module, its
  `parse_args(ARGS)` or `build_parser()`.
- Any token naming a path under one of the repository's source folders (`configs/`, `finetune/`, `scripts/`,
  `ast_dora/`, `tests/`, `docs/`, `.ci/`) must exist, whatever the command.

A failure names the doc file and line. Blocks meant for other machines (a cluster, a GPU) are checked the same
way: their flags must exist here too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHELL_FENCE = re.compile(r"^\s*```(bash|sh|shell|console)\s*$")
END_FENCE = re.compile(r"^\s*```\s*$")
OPERATORS = {"&&", "||", ";", "|", "&"}
REDIRECTIONS = {">", ">>", "<", ">&", "<&", "&>", "&>>", ">|"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"<([A-Za-z_][\w-]*)>")  # `<model_type>` in a command stands for any value
# A token under one of these folders names a file of the repository, which must exist.
SOURCE_FOLDERS = ("configs/", "finetune/", "scripts/", "ast_dora/", "tests/", "docs/", ".ci/")
PYTHONS = {"python", "python3"}
CONFIG_MODULES = {"ast_dora.cli", "ast_dora.training"}  # parsed by parse_config, as finetune/run.py


@dataclass
class Command:
    path: Path
    line: int  # 1-based line of the doc where the command starts
    argv: list[str]

    def where(self) -> str:
        try:
            name = self.path.relative_to(REPO_ROOT)
        except ValueError:
            name = self.path
        return f"{name}:{self.line}"


def doc_files() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def shell_lines(text: str) -> list[tuple[int, str]]:
    """(line number, logical line) for every shell line in fenced shell blocks, continuations joined."""
    found: list[tuple[int, str]] = []
    in_block, console = False, False
    pending, pending_line = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not in_block:
            match = SHELL_FENCE.match(raw)
            if match:
                in_block, console = True, match.group(1) == "console"
            continue
        if END_FENCE.match(raw):
            in_block, pending = False, ""
            continue
        line = raw.strip()
        if not pending:
            if console:
                if not line.startswith("$ "):
                    continue  # output of the command above
                line = line[2:]
            pending_line = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        found.append((pending_line, pending + line))
        pending = ""
    return found


def split_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line, each as its argv (comments, redirections, env prefixes dropped)."""
    line = re.sub(r"(?<![^\s])\d+(?=>)", "", line)  # `2>/dev/null` -> `>/dev/null`
    line = PLACEHOLDER.sub(r"@@\1@@", line)  # `<model>` is a placeholder, not two redirections
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = [re.sub(r"@@([A-Za-z_][\w-]*)@@", r"<\1>", token) for token in lexer]
    commands, current, skip = [], [], False
    for token in tokens:
        if skip:
            skip = False
            continue
        if token in REDIRECTIONS:
            skip = True
            continue
        if token in OPERATORS:
            commands.append(current)
            current = []
            continue
        if not current and ENV_ASSIGNMENT.match(token):
            continue
        if token.startswith("["):
            token = token[1:]
        if token.endswith("]") and "[" not in token:
            token = token[:-1]
        if token:
            current.append(token)
    commands.append(current)
    return [command for command in commands if command]


def commands_in(path: Path) -> list[Command]:
    return [
        Command(path, number, argv)
        for number, line in shell_lines(path.read_text())
        for argv in split_commands(line)
    ]


@contextlib.contextmanager
def in_repo_root():
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    added = str(REPO_ROOT) not in sys.path
    if added:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        yield
    finally:
        os.chdir(cwd)
        if added:
            sys.path.remove(str(REPO_ROOT))


def parse_quietly(parse, args: list[str]) -> str | None:
    """Run an argparse-style parse; None when it accepts `args` (`--help` included), else what it said."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            parse(args)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            return None
        message = err.getvalue().strip().splitlines() or [f"exit status {exit_.code}"]
        return message[-1]
    except Exception as error:  # noqa: BLE001 - the parser's own error is the message to show
        return f"{type(error).__name__}: {error}"
    return None


def check_run_config(args: list[str]) -> str | None:
    from ast_dora.config import parse_config

    return parse_quietly(parse_config, args)


def check_module(name: str, args: list[str]) -> str | None:
    if name in CONFIG_MODULES:
        return check_run_config(args)
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return f"module {name} does not exist"
    module = importlib.import_module(name)
    if not hasattr(module, "build_parser"):
        return f"module {name} has no module-level build_parser() returning its argument parser"
    return parse_with(module, args)


def parse_with(module, args: list[str]) -> str | None:
    """The module's whole-command-line `parse_args(argv)` where it has one (a command line that is more than one
    argparse parser), else `build_parser().parse_args`. A `parse_args` returning `(namespace, overrides)` passes
    config overrides on (`hub load --evaluate --config CONFIG ...`): they are checked as `finetune/run.py`'s."""
    parse = getattr(module, "parse_args", None) or module.build_parser().parse_args
    result = {}

    def run(argv):
        result["value"] = parse(argv)

    problem = parse_quietly(run, args)
    value = result.get("value")
    if problem is None and isinstance(value, tuple) and len(value) == 2 and value[1]:
        namespace, overrides = value
        problem = check_run_config(["--config", namespace.config, *overrides])
    return problem


def check_script(script: str, args: list[str]) -> str | None:
    path = REPO_ROOT / script
    if not path.is_file():
        return f"{script} does not exist"
    if Path(script) == Path("finetune/run.py"):
        return check_run_config(args)
    if path.parent != REPO_ROOT:
        return None  # a script elsewhere (none documented so far): existence only
    module = importlib.import_module(path.stem)
    if not (hasattr(module, "build_parser") or hasattr(module, "parse_args")):
        return f"{script} has no build_parser() (or parse_args(argv)) to check its arguments with"
    return parse_with(module, args)


def check_accelerate_launch(args: list[str]) -> str | None:
    from accelerate.commands.launch import launch_command_parser

    parsed = {}

    def parse(argv):
        parsed["args"] = launch_command_parser().parse_args(argv)

    problem = parse_quietly(parse, args)
    if problem or "args" not in parsed:
        return problem and f"accelerate launch: {problem}"
    launch = parsed["args"]
    if launch.module:
        return check_module(launch.training_script, launch.training_script_args)
    return check_script(launch.training_script, launch.training_script_args)


def check_command(argv: list[str]) -> tuple[bool, list[str]]:
    """(whether this is a command the checker parses, the problems found). A repository path with a `<name>`
    placeholder (`configs/smoke_<model_type>.yaml`) stands for every file it matches: each is checked."""
    for index, token in enumerate(argv):
        if token.startswith(SOURCE_FOLDERS) and PLACEHOLDER.search(token):
            pattern = PLACEHOLDER.sub("*", token)
            matches = sorted(str(path.relative_to(REPO_ROOT)) for path in REPO_ROOT.glob(pattern))
            if not matches:
                return True, [f"{token} matches no file of the repository"]
            results = [check_command([*argv[:index], match, *argv[index + 1 :]]) for match in matches]
            return results[0][0], [problem for _, problems in results for problem in problems]
    problems = [
        f"{token} does not exist"
        for token in argv
        if token.startswith(SOURCE_FOLDERS) and not (REPO_ROOT / token).exists()
    ]
    parsed = True
    problem = None
    with in_repo_root():
        if argv[0] in PYTHONS and len(argv) >= 3 and argv[1] == "-m" and argv[2].split(".")[0] == "ast_dora":
            problem = check_module(argv[2], argv[3:])
        elif (
            argv[0] in PYTHONS and len(argv) >= 2 and argv[1].endswith(".py") and not argv[1].startswith("-")
        ):
            problem = check_script(argv[1], argv[2:])
        elif argv[:2] == ["accelerate", "launch"]:
            problem = check_accelerate_launch(argv[2:])
        else:
            parsed = False
    if problem and not any(problem in p for p in problems):
        problems.append(problem)
    return parsed, problems


def check_docs(paths: list[Path]) -> tuple[int, list[str]]:
    """(commands parsed, one 'FILE:LINE: `command`: problem' per problem)."""
    checked, failures = 0, []
    for path in paths:
        for command in commands_in(path):
            parsed, problems = check_command(command.argv)
            checked += parsed
            failures += [f"{command.where()}: `{shlex.join(command.argv)}`: {p}" for p in problems]
    return checked, failures


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_documented_command_parses(doc):
    checked, failures = check_docs([doc])
    assert not failures, "\n".join(failures)
    if doc.name == "README.md":
        assert checked >= 25, f"only {checked} commands found in README.md: is the block extraction broken?"


def test_every_doc_with_shell_blocks_is_seen():
    checked, _ = check_docs(doc_files())
    assert checked >= 80, checked


def cli_modules() -> list[str]:
    """Every module of the package that runs as `python -m` (it has an `if __name__ == "__main__":` block)."""
    names = []
    for path in sorted((REPO_ROOT / "ast_dora").rglob("*.py")):
        if re.search(r"^if __name__ == .__main__.:", path.read_text(), flags=re.M):
            names.append(".".join(path.relative_to(REPO_ROOT).with_suffix("").parts))
    return names


def test_cli_modules_expose_build_parser_and_main():
    """The convention the docs check relies on, for every `python -m` entry point of the package: a module-level
    `build_parser()` taking no arguments and returning an argparse parser, and `main(argv=None)`."""
    names = cli_modules()
    assert {"ast_dora.predict", "ast_dora.export", "ast_dora.hub", "ast_dora.bench", "ast_dora.cli"} <= set(
        names
    )
    with in_repo_root():
        for name in [*names, "ast_dora.training"]:
            module = importlib.import_module(name)
            assert hasattr(module, "build_parser"), f"{name} has no module-level build_parser()"
            required = [
                p.name
                for p in inspect.signature(module.build_parser).parameters.values()
                if p.default is inspect.Parameter.empty
            ]
            assert not required, f"{name}.build_parser() requires {required}"
            assert isinstance(module.build_parser(), argparse.ArgumentParser), name
            main_parameters = inspect.signature(module.main).parameters
            assert "argv" in main_parameters and main_parameters["argv"].default is None, (
                f"{name}.main(argv=None)"
            )


def test_block_extraction_handles_shell_syntax():
    text = "\n".join(
        [
            "```bash",
            'pip install -e ".[dev]" && accelerate launch finetune/run.py --config configs/a.yaml  # both',
            'PYTHONPATH=/tmp/site OMP_NUM_THREADS=2 python -m ast_dora.bench gpu --json "${OUT:-.}/gpu.json" \\',
            "    --tiny 2>/dev/null | tail -1; echo done",
            "python -m ast_dora.predict song.mp3 --json > song.json   # redirected",
            "python -m ast_dora.hub space --repo_id me/x [--dry_run /tmp/space]",
            "python finetune/run.py --config configs/smoke_<model_type>.yaml",
            "```",
            "```python",
            "python -m ast_dora.not_shell",
            "```",
            "```console",
            "$ python -m ast_dora.predict a.wav --model m",
            "genre rock",
            "```",
        ]
    )
    lines = shell_lines(text)
    assert [number for number, _ in lines] == [2, 3, 5, 6, 7, 13]
    commands = [argv for _, line in lines for argv in split_commands(line)]
    assert commands == [
        ["pip", "install", "-e", ".[dev]"],
        ["accelerate", "launch", "finetune/run.py", "--config", "configs/a.yaml"],
        ["python", "-m", "ast_dora.bench", "gpu", "--json", "${OUT:-.}/gpu.json", "--tiny"],
        ["tail", "-1"],
        ["echo", "done"],
        ["python", "-m", "ast_dora.predict", "song.mp3", "--json"],
        ["python", "-m", "ast_dora.hub", "space", "--repo_id", "me/x", "--dry_run", "/tmp/space"],
        ["python", "finetune/run.py", "--config", "configs/smoke_<model_type>.yaml"],
        ["python", "-m", "ast_dora.predict", "a.wav", "--model", "m"],
    ]
    # A placeholder path stands for every file it matches, each checked; one matching nothing fails.
    assert check_command(["python", "finetune/run.py", "--config", "configs/smoke_<model_type>.yaml"]) == (
        True,
        [],
    )
    assert check_command(["python", "finetune/run.py", "--config", "configs/nothing_<x>.yaml"]) == (
        True,
        ["configs/nothing_<x>.yaml matches no file of the repository"],
    )
    _, problems = check_command(
        ["python", "finetune/run.py", "--config", "configs/smoke_<m>.yaml", "--dora_rnk", "2"]
    )
    assert len(problems) == 2 and all("dora_rnk" in problem for problem in problems)


def test_the_check_fails_on_a_made_up_doc_naming_file_and_line(tmp_path):
    """The test of the test: renamed flags, a missing config, a missing module, all reported at their line."""
    doc = tmp_path / "made_up.md"
    doc.write_text(
        "\n".join(
            [
                "# A doc with stale commands",  # 1
                "",  # 2
                "```bash",  # 3
                "python -m ast_dora.predict song.mp3 --model runs/x --json",  # 4: fine
                "python -m ast_dora.predict song.mp3 --modell runs/x",  # 5: renamed flag
                "python finetune/run.py --config configs/no_such_config.yaml",  # 6: missing config
                "python finetune/run.py --config configs/smoke_vit_hybrid.yaml \\",  # 7: unknown field, on the next line
                "    --learning_rat 1e-3",  # 8
                "accelerate launch --num_processs 2 finetune/run.py --config configs/smoke_vit_hybrid.yaml",  # 9
                "python -m ast_dora.no_such_module --flag",  # 10
                "python -m ast_dora.bench train --model_type vit_hybrid --no_such_flag",  # 11
                "accelerate launch --multi_gpu --num_processes 2 finetune/run.py --config configs/smoke_vit_hybrid.yaml \\",
                "    --learning_rate 1e-3",  # 12-13: fine
                "python -m ast_dora.hub load me/x --evaluate --config configs/ast_dora.yaml --splitt folds",  # 14
                "python app.py --model runs/x --prot 7860",  # 15
                "```",
            ]
        )
    )
    checked, failures = check_docs([doc])
    assert checked == 10
    by_line: dict[int, str] = {}
    for failure in failures:
        line = int(failure[len(str(doc)) + 1 :].split(":", 1)[0])
        by_line[line] = by_line.get(line, "") + failure + "\n"
    assert sorted(by_line) == [5, 6, 7, 9, 10, 11, 14, 15], failures
    assert all(f.startswith(f"{doc}:") for f in failures)
    assert "--modell" in by_line[5]
    assert "configs/no_such_config.yaml does not exist" in by_line[6]
    assert "learning_rat" in by_line[7]
    assert "accelerate launch" in by_line[9] and "--num_processs" in by_line[9]
    assert "module ast_dora.no_such_module does not exist" in by_line[10]
    assert "--no_such_flag" in by_line[11]
    assert (
        "splitt" in by_line[14]
    )  # a config override after `hub load --evaluate`, checked as finetune/run.py's
    assert "--prot" in by_line[15]
