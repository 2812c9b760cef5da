"""The README's exchange walkthrough as written: the emulator started by its command
line, the keys exported, `trimtab review --exchange ... --exchange-url ...` run against it
(the port swapped for a free one)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

from tests._cli import trimtab
from tests.test_readme import README, ROOT


def _block() -> list[str]:
    text = README.read_text(encoding="utf-8")
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        if "python -m tests.emulator" in block:
            return [line.strip() for line in block.strip().splitlines()]
    raise AssertionError("the README has no emulator walkthrough")


def test_the_readme_exchange_walkthrough_runs(tmp_path):
    emulator, export, review = _block()
    args = shlex.split(emulator.removesuffix("&"))
    assert args[:5] == ["uv", "run", "python", "-m", "tests.emulator"]
    port = args.index("--port") + 1
    args[port] = "0"
    env_vars = dict(item.split("=", 1) for item in shlex.split(export)[1:])
    proc = subprocess.Popen(
        [sys.executable, *args[3:]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else url
        line = review.replace("http://127.0.0.1:8765", url)
        out = trimtab(*shlex.split(line)[3:], cwd=tmp_path, env=env_vars)
        assert "risk score" in out.stdout.lower() and "BTC" in out.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)
