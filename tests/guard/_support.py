"""Small builders for guard tests: observations and orders without a market panel."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from trimtab.domain import Order, Side
from trimtab.domain.decisions import Decision, Observation, PortfolioState, Reason

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def make_obs(
    symbols: Sequence[str],
    closes: Sequence[float],
    quantities: Sequence[float] | None = None,
    cash: float = 100_000.0,
    peak: float | None = None,
    ts: pd.Timestamp = T0,
) -> Observation:
    """One bar's observation; equity = cash + positions at the closes (NaN = not listed)."""
    close = np.asarray(closes, dtype=float)
    qty = np.zeros(len(symbols)) if quantities is None else np.asarray(quantities, dtype=float)
    marks = np.nan_to_num(close)
    equity = cash + float(qty @ marks)
    portfolio = PortfolioState(equity, cash, qty, marks, peak if peak is not None else equity)
    listed = np.isfinite(close)
    return Observation(
        0, ts, tuple(symbols), {"close": close[None, :]}, {}, listed, listed, portfolio, 0
    )


def decide(*targets: float) -> Decision:
    return Decision.rebalance(np.array(targets, dtype=float), Reason("test", "test targets"))


def buy(symbol: str, quote: float) -> Order:
    return Order(symbol, Side.BUY, quote_quantity=quote, reason="test buy")


def sell(symbol: str, qty: float) -> Order:
    return Order(symbol, Side.SELL, quantity=qty, reason="test sell")


def buy_base(symbol: str, qty: float) -> Order:
    return Order(symbol, Side.BUY, quantity=qty, reason="test buy")


def rules(actions) -> list[str]:
    return [a.rule for a in actions]
