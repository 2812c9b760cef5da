"""A deterministic driver of the paper exchange, for the tests in ``test_paper.py``.

At every bar i it runs ``advance(i)`` and then does what the script below says for bar
i: each order has client id ``c{i}`` (or ``h{i}`` for one decided ahead), each transfer
``t{i}``, so a driver restarted after a kill repeats its calls harmlessly. Run as a
script (``python paper_driver.py DB START STOP``) it prints ``bar i`` after each bar, so
a test can kill it part way.

The market: a spot coin and a perpetual, daily, random walks from a fixed seed, with a
small quote volume so the 10 % volume cap splits large orders over bars; funding every
8 hours on the perpetual.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from trimtab.data.panel import panel_from_long
from trimtab.domain import Order, OrderType, Side, perpetual
from trimtab.domain.orders import TimeInForce
from trimtab.execution.costs import CostModel
from trimtab.execution.market import MarketArrays
from trimtab.execution.paper import PaperExchange

SPOT, PERP = "AAAUSDT", "BBBUSDT-PERP"
BARS = 160
BALANCES = {"spot": 100_000.0, "perp": 50_000.0}
COSTS = CostModel(taker_fee_bps=10, maker_fee_bps=2, half_spread_bps=3, impact_bps_at_1pct=10)
INSTRUMENTS = {PERP: perpetual(PERP)}
START = pd.Timestamp("2022-01-01", tz="UTC")


def market(bars: int = BARS) -> MarketArrays:
    """Daily bars: open = the previous close, range 1 % beyond open and close."""
    rng = np.random.default_rng(11)
    rows = []
    for symbol, first, vol in ((SPOT, 100.0, 0.03), (PERP, 50.0, 0.05)):
        closes = first * np.exp(np.cumsum(rng.normal(0, vol, bars)))
        prev = first
        for k, c in enumerate(closes):
            ts = START + pd.Timedelta(days=k)
            o = prev
            rows.append((ts, symbol, o, max(o, c) * 1.01, min(o, c) * 0.99, c, 50_000 / c, 50_000))
            prev = c
    cols = ["timestamp", "symbol", "open", "high", "low", "close", "volume", "quote_volume"]
    return MarketArrays.from_panel(panel_from_long(pd.DataFrame(rows, columns=cols)))


def funding(bars: int = BARS) -> dict[str, pd.Series]:
    stamps = pd.date_range(START, periods=3 * bars, freq="8h", tz="UTC")
    rates = np.random.default_rng(5).normal(0.0001, 0.0003, len(stamps))
    return {PERP: pd.Series(rates, index=stamps)}


def open_exchange(path: str | Path, bars: int = BARS) -> PaperExchange:
    return PaperExchange(
        path,
        market(bars),
        balances=BALANCES,
        costs=COSTS,
        instruments=INSTRUMENTS,
        funding=funding(bars),
    )


def act(ex: PaperExchange, i: int) -> None:
    """What the driver does after bar i closes."""
    m = ex.market
    close = float(m.close[i, m.column[SPOT]])
    step = i % 5
    if step == 0:  # 8,000 USDT against a 5,000 cap per bar: fills over two bars
        order = Order(SPOT, Side.BUY, quote_quantity=8_000, subaccount="spot", time_in_force="gtc")
    elif step == 1:
        order = Order(SPOT, Side.SELL, quantity=30, subaccount="spot")
    elif step == 2:
        order = Order(PERP, Side.BUY, quantity=40, leverage=10, subaccount="perp")
    elif step == 3:
        order = Order(PERP, Side.SELL, quantity=60, leverage=4, subaccount="perp")
    else:  # a resting bid 2 % under the close, good for two bars
        order = Order(
            SPOT,
            Side.BUY,
            quantity=20,
            type=OrderType.LIMIT,
            limit_price=round(close * 0.98, 4),
            subaccount="spot",
            time_in_force=TimeInForce.GTD,
            expires_at=m.timestamps[min(i + 2, len(m.timestamps) - 1)],
        )
    if i % 7 == 3:  # withdraws a resting bid, or the rest of a part-filled buy
        ex.cancel(f"c{i - 1}")
    if i % 11 == 5:
        ex.transfer("spot", "perp", 500.0, f"t{i}")
    if i % 13 == 6:  # decided for a bar the exchange has not run yet: waits for it
        ex.submit(Order(SPOT, Side.BUY, quote_quantity=300, subaccount="spot"), f"h{i}", i + 2)
    ex.submit(order, f"c{i}", i)


def drive(
    path: str | Path, start: int = 0, stop: int = BARS, progress=None, bars: int = BARS
) -> None:
    """Open the exchange at ``path`` and run bars ``start`` to ``stop - 1``."""
    ex = open_exchange(path, bars)
    try:
        for i in range(start, stop):
            ex.advance(i)
            act(ex, i)
            if progress is not None:
                progress(i)
    finally:
        ex.close()


if __name__ == "__main__":
    db, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    drive(db, first, last, progress=lambda i: print(f"bar {i}", flush=True))
