"""The installed console script run as a subprocess, the way a person runs it: shared by
the end-to-end tests (``test_paper_walkthrough``, ``app/test_crash_alerts``,
``app/test_secrets_nowhere``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The console script of the environment running the tests (``.venv/bin/trimtab``).
SCRIPT = Path(sys.executable).with_name("trimtab")


def command() -> list[str]:
    """How to start trimtab: the console script, else the module (same code)."""
    if SCRIPT.is_file():
        return [str(SCRIPT)]
    found = shutil.which("trimtab")
    return [found] if found else [sys.executable, "-m", "trimtab.cli"]


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without the person's own ``TRIMTAB_*`` settings (the store,
    alert URLs, debug), except ``TRIMTAB_CACHE`` (the tests' cache), plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_") or k == "TRIMTAB_CACHE"
    }
    env["COLUMNS"] = "160"
    env.update(extra or {})
    return env


def trimtab(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    code: int = 0,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``trimtab ARGS`` in ``cwd``; assert its exit ``code`` and that it printed no
    traceback."""
    proc = subprocess.run(
        [*command(), *args],
        cwd=cwd,
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    said = f"trimtab {' '.join(args)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == code, said
    assert "Traceback" not in proc.stdout + proc.stderr, said
    return proc


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    """The document a ``--json`` command printed (nothing else is on its stdout)."""
    return json.loads(proc.stdout)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The error a mistaken command printed: exactly one line, starting ``error:``."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert proc.stdout == "", proc.stdout
    return lines[0]
