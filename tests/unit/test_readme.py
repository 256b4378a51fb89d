"""README.md is a short guide whose commands run as written and whose links lead somewhere.

Every `make` and `monolith` command in README's shell blocks must name a make target that the
Makefile (or a file it includes) defines and a `monolith` subcommand that the CLI's parser
has. Reads text only: no TensorFlow, no Ray (importing `monolith.cli` loads neither; a test
below keeps it that way).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
MAKEFILE = REPO_ROOT / "Makefile"
README_MAX_LINES = 300

SHELL_BLOCKS = {"bash", "sh", "shell", "console", "zsh"}
FENCE = re.compile(r"^```(?P<info>[^`]*)$")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
RULE = re.compile(r"^(?P<targets>[A-Za-z0-9_.][A-Za-z0-9_. -]*?)\s*:(?![:=])")
MARKDOWN_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
PATH_IN_CODE = re.compile(r"`(?P<path>(?:docs/[\w./-]+\.md|bench/RESULTS\.md))`")


def shell_blocks(text: str) -> list[str]:
    """The bodies of README's fenced blocks tagged as shell (bash, sh, console, ...)."""
    blocks: list[str] = []
    body: list[str] | None = None
    info = ""
    for line in text.splitlines():
        fence = FENCE.match(line.strip())
        if fence and body is None:
            body, info = [], fence["info"].strip().lower()
        elif fence:
            if info in SHELL_BLOCKS:
                blocks.append("\n".join(body))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def command_lines(block: str) -> list[list[str]]:
    """Each command of a shell block as words: continuations joined, comments and leading
    VAR=value assignments dropped."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words and ASSIGNMENT.match(words[0]):
            words.pop(0)
        if words:
            commands.append(words)
    return commands


def readme_commands(program: str) -> list[list[str]]:
    """README's commands that run `program` (bare, or by path such as .venv/bin/monolith),
    as the words after the program."""
    found = []
    for block in shell_blocks(README.read_text(encoding="utf-8")):
        for words in command_lines(block):
            if words[0] == program or words[0].endswith("/" + program):
                found.append(words[1:])
    return found


def make_targets_named(args: list[str]) -> list[str]:
    """The targets of one `make` command: the words that are not VAR=value or options."""
    return [word for word in args if not ASSIGNMENT.match(word) and not word.startswith("-")]


def monolith_subcommand(args: list[str]) -> tuple[str, ...]:
    """The subcommand of one `monolith` command, with the data sub-subcommand for `data`."""
    positional = [word for word in args if not word.startswith("-")]
    return tuple(positional[:2]) if positional[:1] == ["data"] else tuple(positional[:1])


def makefile_targets(makefile: Path) -> set[str]:
    """Targets a makefile defines (rule lines and .PHONY), following its `include` lines."""
    text = makefile.read_text(encoding="utf-8").replace("\\\n", " ")
    targets: set[str] = set()
    for line in text.splitlines():
        if line.startswith("include "):
            for included in line.split()[1:]:
                targets |= makefile_targets(REPO_ROOT / included)
        elif line.startswith(".PHONY:"):
            targets.update(line.split(":", 1)[1].split())
        elif rule := RULE.match(line):
            targets.update(rule["targets"].split())
    return targets - {".PHONY"}


@cache
def cli_subcommands() -> frozenset[tuple[str, ...]]:
    """Every `monolith` subcommand (and `data` sub-subcommand) the CLI's parser accepts."""
    import argparse

    from monolith.cli import build_parser

    def choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    found: set[tuple[str, ...]] = set()
    for name, sub in choices(build_parser()).items():
        found.add((name,))
        found.update((name, inner) for inner in choices(sub))
    return frozenset(found)


def test_readme_is_at_most_300_lines():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the guide keeps to 300"


def test_readme_shows_the_two_setup_commands_of_a_fresh_machine():
    assert ["tune"] in readme_commands("make")
    assert ["test"] in readme_commands("make")


@pytest.mark.parametrize(
    "args", readme_commands("make"), ids=lambda args: " ".join(["make", *args])
)
def test_every_make_target_in_readme_is_defined(args):
    targets = make_targets_named(args)
    assert targets, f"`make {' '.join(args)}` names no target"
    missing = set(targets) - makefile_targets(MAKEFILE)
    assert not missing, f"README runs `make {' '.join(args)}`: no target {sorted(missing)}"


@pytest.mark.parametrize(
    "args",
    readme_commands("monolith"),
    ids=lambda args: " ".join(["monolith", *monolith_subcommand(args)]),
)
def test_every_monolith_subcommand_in_readme_exists(args):
    subcommand = monolith_subcommand(args)
    assert subcommand in cli_subcommands(), (
        f"README runs `monolith {' '.join(args)}`: no subcommand {' '.join(subcommand)!r}"
    )


def test_readme_shows_monolith_commands():
    assert readme_commands("monolith"), "no `monolith` command found in README's shell blocks"


def test_every_relative_link_in_readme_points_to_a_file():
    text = README.read_text(encoding="utf-8")
    links = {match["target"].split("#", 1)[0] for match in MARKDOWN_LINK.finditer(text)}
    relative = {link for link in links if link and "://" not in link}
    relative |= {match["path"] for match in PATH_IN_CODE.finditer(text)}
    assert relative, "README links to no page"
    missing = sorted(link for link in relative if not (REPO_ROOT / link).is_file())
    assert not missing, f"README links to missing files: {missing}"


def test_readme_links_to_every_docs_page_and_the_benchmark_results():
    text = README.read_text(encoding="utf-8")
    pages = [page.relative_to(REPO_ROOT).as_posix() for page in REPO_ROOT.glob("docs/*.md")]
    unlinked = [page for page in [*pages, "bench/RESULTS.md"] if f"]({page})" not in text]
    assert not unlinked, f"README does not link to {unlinked}"


def test_importing_the_cli_loads_neither_tensorflow_nor_ray():
    # The subcommand check above imports monolith.cli; this keeps that import cheap.
    probe = "import sys, monolith.cli; print('tensorflow' in sys.modules, 'ray' in sys.modules)"
    run = [sys.executable, "-c", probe]
    result = subprocess.run(run, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "False"]
