"""A real trimtab run to copy (tests of copy trading): ``trimtab backtest`` of equal weights
rebalanced at a 5% drift on four coins, 2021-01-01 to 2021-03-31 (daily bars of the data
the tests use; the managed policy's regime models would triple the fixture's time),
written both to a run folder and to a SQLite store. Made once per test process."""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import SHARED_DATA

SYMBOLS = "BTCUSDT,ETHUSDT,BNBUSDT,ADAUSDT"
START, END = "2021-01-01", "2021-03-31"
CAPITAL = 100_000.0
RUN_ID = "leader"


@lru_cache(maxsize=1)
def leader_run() -> tuple[Path, str]:
    """(run folder, store URL) of the leader's run; the store holds it as ``RUN_ID``."""
    from trimtab.cli import app

    root = Path(tempfile.mkdtemp(prefix="trimtab-leader-"))
    out, url = root / "run", f"sqlite:///{root / 'runs.db'}"
    args = ["backtest", "--data", str(SHARED_DATA), "--start", START, "--end", END]
    args += ["--policy", "equal-weight", "--rebalance", "threshold:0.05"]
    args += ["--symbols", SYMBOLS, "--capital", str(CAPITAL), "--out", str(out)]
    args += ["--db", url, "--run-id", RUN_ID, "--commit-every", "1000"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, url
