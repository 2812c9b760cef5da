"""The layer contract of DESIGN.md (``[tool.importlinter]`` in pyproject.toml): the
package keeps it, and it does catch a lower layer importing a higher one.

Both run the real ``lint-imports`` in a subprocess. The broken case runs it on a copy
of the package (first on ``PYTHONPATH``, so the copy is analysed, not the installed
tree) with one upward import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(config: Path, src: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(config)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def contract() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def test_contract_names_every_layer_of_the_design(contract):
    (layers,) = (c for c in contract["contracts"] if c["type"] == "layers")
    assert layers["exhaustive"] is True
    flat = [m.strip(" ()") for layer in layers["layers"] for m in layer.split("|")]
    # Top to bottom, as DESIGN.md draws it.
    order = ["cli", "app", "engine", "config", "journal", "policy", "risk", "signals", "data"]
    assert [flat.index(m) for m in order] == sorted(flat.index(m) for m in order)
    assert flat[-1] == "domain"
    assert flat.index("guard") < flat.index("risk") and flat.index("config") < flat.index("guard")


def test_the_package_keeps_its_layers():
    result = _lint(ROOT / "pyproject.toml", ROOT / "src", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("where", "upward", "offence"),
    [
        ("domain/quotes.py", "import trimtab.engine", "trimtab.domain.quotes -> trimtab.engine"),
        # The cycle once broken: guard reading the whole configuration file.
        ("guard/limits.py", "from trimtab import config", "trimtab.guard.limits -> trimtab.config"),
        ("policy/orders.py", "import trimtab.guard", "trimtab.policy.orders -> trimtab.guard"),
    ],
)
def test_the_contract_fails_when_a_lower_layer_imports_a_higher_one(
    tmp_path, where, upward, offence
):
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "trimtab", src / "trimtab", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = src / "trimtab" / where
    target.write_text(target.read_text() + f"\n{upward}  # the offence\n")

    result = _lint(tmp_path / "pyproject.toml", src, tmp_path)

    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert offence in result.stdout, result.stdout
