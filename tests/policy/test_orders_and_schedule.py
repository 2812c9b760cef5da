import numpy as np
import pandas as pd
import pytest

from trimtab.data import DataError
from trimtab.domain import Side, spot
from trimtab.domain.decisions import PortfolioState
from trimtab.policy import calendar_mask, plan_orders

SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")


def state(qty, prices, cash):
    qty = np.asarray(qty, float)
    equity = cash + float(qty @ prices)
    return PortfolioState(equity, cash, qty, prices, equity)


def test_calendar_masks_mark_first_bar_of_each_period():
    idx = pd.date_range("2021-01-30", "2021-03-02", freq="1D", tz="UTC")
    monthly = idx[calendar_mask(idx, "monthly")]
    assert list(monthly.strftime("%m-%d")) == ["01-30", "02-01", "03-01"]
    weekly = idx[calendar_mask(idx, "weekly")]
    assert all(d.day_of_week == 0 for d in weekly[1:]) and weekly[0] == idx[0]
    hourly = pd.date_range("2021-01-01 22:00", periods=5, freq="1h", tz="UTC")
    assert calendar_mask(hourly, "daily").tolist() == [True, False, True, False, False]
    with pytest.raises(DataError, match="unknown rebalance frequency"):
        calendar_mask(idx, "fortnightly")


def test_plan_sells_in_base_buys_in_quote_and_closes_fully():
    prices = np.array([100.0, 10.0, 1.0])
    portfolio = state([10, 50, 0], prices, cash=500)  # equity 2000
    orders, skipped = plan_orders(
        np.array([0.25, 0.0, 0.5]),
        portfolio,
        prices,
        SYMBOLS,
        lambda s: spot(s),
        reason="rebalance",
    )
    by_symbol = {o.symbol: o for o in orders}
    assert by_symbol["AAAUSDT"].side is Side.SELL and by_symbol[
        "AAAUSDT"
    ].quantity == pytest.approx(5)
    assert by_symbol["BBBUSDT"].quantity == 50 and "close position" in by_symbol["BBBUSDT"].reason
    assert by_symbol["CCCUSDT"].side is Side.BUY and by_symbol[
        "CCCUSDT"
    ].quote_quantity == pytest.approx(1000)
    assert skipped == []


def test_plan_skips_trades_below_exchange_minimums_and_reports_them():
    prices = np.array([100.0, 10.0, 1.0])
    portfolio = state([10, 0, 0], prices, cash=1_000)  # equity 2000
    rules = {
        "AAAUSDT": spot("AAAUSDT", lot_size=1.0),
        "BBBUSDT": spot("BBBUSDT", min_notional=10.0),
        "CCCUSDT": spot("CCCUSDT"),
    }
    targets = np.array([0.499, 0.004, 0.0])  # sell 0.2 AAA (< 1 lot), buy 8 USDT of BBB (< 10)
    orders, skipped = plan_orders(
        targets, portfolio, prices, SYMBOLS, rules.__getitem__, reason="r"
    )
    assert orders == []
    reasons = {s.symbol: s.reason for s in skipped}
    assert "rounds to zero at lot size 1" in reasons["AAAUSDT"]
    assert "below the minimum 10" in reasons["BBBUSDT"]
