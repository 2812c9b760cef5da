"""The README's commands paste and run as written.

Every ``uv run trimtab ...`` line in a ``bash`` block of README.md is run in-process (the
same typer app the console script calls) from a scratch folder holding a copy of
``examples/``, on whatever data discovery finds: ``../shared/data`` where it exists,
else the built-in synthetic sample. Commands that need the internet are named in
``NEEDS_NETWORK`` and only checked for their syntax.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trimtab.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Subcommands that talk to an exchange: run by hand, never in tests.
NEEDS_NETWORK = (
    ("data", "download"),
    ("data", "markets"),
    ("review", "--exchange"),
    ("mm", "--exchange"),
)
# (`review --exchange` reaches the emulator the README starts first: tests/test_readme_exchange.py
# runs those lines as written.)


def readme_commands(text: str) -> list[str]:
    """The ``uv run trimtab`` commands of the bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("uv run trimtab"):
                commands.append(line)
    return commands


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))

RUNNABLE = [c for c in COMMANDS if tuple(shlex.split(c)[3:5]) not in NEEDS_NETWORK]


def test_readme_has_commands():
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("command", COMMANDS)
def test_command_is_literal(command):
    """No placeholder syntax a shell would choke on: [optional], a|b, <value>, ..."""
    args = shlex.split(command)
    for arg in args:
        assert not re.search(r"[\[\]|<>]", arg) or arg.startswith("top:"), (command, arg)
        assert "..." not in arg, (command, arg)


def test_the_commands_run_in_the_readmes_order(tmp_path, monkeypatch):
    """One test, not one per command: the commands share one scratch folder and depend on
    each other (``trimtab proposals`` reads the store ``trimtab run`` wrote), so they must
    run in order in one process, which pytest-xdist does not promise across tests."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    assert len(RUNNABLE) >= 10
    for command in RUNNABLE:
        result = CliRunner().invoke(app, shlex.split(command)[3:])
        assert result.exit_code == 0, f"{command}\n{result.output}\n{result.exception!r}"
