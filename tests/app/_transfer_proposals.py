"""Shared by the tests of transfer proposals: a portfolio file whose dated transfer is
asked for while both subaccounts are in approve mode, and a driver a test runs as a real
process (``python -m tests.app._transfer_proposals FILE FOLDER END [KILL]``) that
SIGKILLs itself just before or just after the paper exchange makes a transfer."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from tests.conftest import SHARED_DATA
from trimtab.app.run import PaperRun, RunOptions, build_run
from trimtab.engine.portfolio_file import load_portfolio
from trimtab.execution.paper import PaperExchange

START, PROPOSED_AT, END = "2021-01-04", "2021-01-15", "2021-01-22"
RUN_ID = "tx"

# Both subaccounts in approve mode: their order plans are proposals nobody approves, so
# each holds only cash and moves only by the transfer. satellite may hold 12,000 USDT:
# the 2,500 asked for on 2021-01-15 is cut by the transfer guard to the 2,000 of room
# (``partial: true``), at the close it is made at.
FILE = """
backtest: {timeframe: 1d}
runner: {tick_seconds: 0.05, review_every: 0}
subaccounts:
  core:
    strategy: fixed
    rule: calendar:weekly
    weights: {BTCUSDT: 0.2, ETHUSDT: 0.2}
    symbols: [BTCUSDT, ETHUSDT]
    capital: 30000
    mode: approve
  satellite:
    strategy: fixed
    rule: calendar:weekly
    weights: {ETHUSDT: 0.4}
    symbols: [BTCUSDT, ETHUSDT]
    capital: 10000
    mode: approve
    max_capital: 12000
transfers:
  - {at: 2021-01-15, from: core, to: satellite, amount: 2500, reason: top up, partial: true}
"""
#: What the guard lets move: satellite's room under its max_capital (USDT).
ALLOWED = 2000.0


def write_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "portfolio.yaml"
    path.write_text(FILE)
    return path


def db_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'store.db'}"


def make_run(folder: Path, end: str = END, *, prepared=None) -> PaperRun:
    """The file's run (store and paper exchange in ``folder``), replayed to ``end``."""
    return build_run(
        load_portfolio(folder / "portfolio.yaml"),
        RunOptions(db=db_url(folder), run_id=RUN_ID, replay=str(SHARED_DATA), start=START, end=end),
        prepared=prepared,
    )


def _killing(when: str):
    """PaperExchange.transfer that SIGKILLs this process before or after the real one."""
    original = PaperExchange.transfer

    def transfer(self, *args, **kwargs):
        if when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        answer = original(self, *args, **kwargs)
        if when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return answer

    return transfer


if __name__ == "__main__":
    folder, end = Path(sys.argv[1]), sys.argv[2]
    kill = sys.argv[3] if len(sys.argv) > 3 else "none"
    if kill != "none":
        PaperExchange.transfer = _killing(kill)  # type: ignore[method-assign]
    run = make_run(folder, end)
    run.run()
    print("done", run.runner.last_bar, flush=True)
