"""Shared by the runner's tests: a 3-subaccount portfolio (one per mode) over the daily
file, and a driver a test can run as a real process and kill (``python -m``)."""

from __future__ import annotations

import sys
from pathlib import Path

from trimtab.app.run import PaperRun, RunOptions, build_run
from trimtab.engine.portfolio_file import load_portfolio

START, END = "2022-01-03", "2022-02-20"

PORTFOLIO = """
backtest: {timeframe: 1d}
account:
  limits: {max_drawdown: 0.9}
runner: {tick_seconds: 0.05, band: 0.05, review_every: 0}
subaccounts:
  watch:
    strategy: equal-weight
    rule: calendar:weekly
    symbols: [BTCUSDT, ETHUSDT, BNBUSDT]
    capital: 20000
    mode: monitor
  propose:
    strategy: equal-weight
    rule: calendar:weekly
    symbols: [BTCUSDT, ETHUSDT]
    capital: 10000
    mode: approve
  pilot:
    strategy: equal-weight
    rule: calendar:daily
    symbols: [BTCUSDT, ETHUSDT, BNBUSDT, XRPUSDT]
    capital: 10000
    mode: auto
    envelope: {max_order_notional: 2600, max_daily_turnover: 6000}
    limits: {max_asset_weight: 0.3}
"""

AUTO_ONLY = """
backtest: {timeframe: 1d}
runner: {tick_seconds: 0.05, review_every: 0}
subaccounts:
  pilot:
    strategy: equal-weight
    rule: calendar:daily
    symbols: [BTCUSDT, ETHUSDT, BNBUSDT, XRPUSDT]
    capital: 10000
    mode: auto
    envelope: {max_order_notional: 2600, max_daily_turnover: 8000}
  core:
    strategy: equal-weight
    rule: calendar:weekly
    symbols: [BTCUSDT, ETHUSDT]
    capital: 5000
    mode: auto
    envelope: {max_order_notional: 100000}
"""


def write_portfolio(folder: Path, text: str = PORTFOLIO, name: str = "paper.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def make_run(
    path: Path, folder: Path, data: Path, *, prepared=None, end: str = END, speed=None
) -> PaperRun:
    return build_run(
        load_portfolio(path),
        RunOptions(
            db=f"sqlite:///{folder / 'store.db'}",
            run_id="paper",
            replay=str(data),
            start=START,
            end=end,
            speed=speed,
        ),
        prepared=prepared,
    )


#: A daily bar in 40 ms of wall time: kills land between and inside cycles.
KILL_SPEED = 86_400 / 0.04


if __name__ == "__main__":  # python -m tests.engine._live PORTFOLIO FOLDER DATA [END]
    portfolio, folder, data = (Path(a) for a in sys.argv[1:4])
    end = sys.argv[4] if len(sys.argv) > 4 else END
    run = make_run(portfolio, folder, data, end=end, speed=KILL_SPEED)
    run.runner.start()
    print("ready", flush=True)
    run.run()
    print("done", run.runner.last_bar, flush=True)
