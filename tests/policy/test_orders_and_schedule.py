import numpy as np
import pandas as pd
import pytest

from trimtab.data import DataError
from trimtab.domain import Side, spot
from trimtab.domain.decisions import PortfolioState
from trimtab.domain.quotes import QuoteError
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


def test_full_exit_sells_whole_lots_and_reports_the_rest_as_dust():
    # Hand-worked: 10.37 AAA at 100 with a 0.1 lot sells 10.3 (1,030 USDT) and leaves
    # 0.07 AAA (7 USDT) under one lot; 0.04 BBB at 100 (4 USDT, minimum 5) cannot be sold
    # at all; CCC holds 0.7 - 0.4 = 0.29999999999999993 (float noise for 0.3): 0.3 sold,
    # nothing left.
    prices = np.array([100.0, 100.0, 100.0])
    portfolio = state([10.37, 0.04, 0.7 - 0.4], prices, cash=1_000)
    rules = {
        "AAAUSDT": spot("AAAUSDT", lot_size=0.1, min_notional=5.0),
        "BBBUSDT": spot("BBBUSDT", lot_size=0.01, min_notional=5.0),
        "CCCUSDT": spot("CCCUSDT", lot_size=0.1, min_notional=5.0),
    }
    orders, skipped = plan_orders(
        np.zeros(3), portfolio, prices, SYMBOLS, rules.__getitem__, reason="exit"
    )
    by_symbol = {o.symbol: o for o in orders}
    assert set(by_symbol) == {"AAAUSDT", "CCCUSDT"}
    assert by_symbol["AAAUSDT"].quantity == 10.3  # truncated, never 10.4
    assert by_symbol["CCCUSDT"].quantity == 0.3
    dust = {s.symbol: s for s in skipped}
    assert set(dust) == {"AAAUSDT", "BBBUSDT"} and all(s.dust for s in skipped)
    assert dust["AAAUSDT"].quantity == pytest.approx(0.07, abs=1e-12)
    assert dust["AAAUSDT"].notional == pytest.approx(7.0, abs=1e-9)
    assert "under one lot of 0.1" in dust["AAAUSDT"].reason
    assert dust["BBBUSDT"].quantity == 0.04
    assert "notional 4.00 USDT below the minimum 5" in dust["BBBUSDT"].reason
    assert dust["BBBUSDT"].to_dict()["dust"] is True
    assert dust["BBBUSDT"].to_dict()["quantity"] == 0.04


def test_partial_sells_and_buys_are_truncated_to_the_lot():
    # Equity 2,000: AAA from 1,000 (10 at 100) to 25 % is a sale of 5.0 exactly, BBB
    # from 0 to 10 % wants 200 USDT of BBB at 30: 6.67 units, sent as quote to spend.
    prices = np.array([100.0, 30.0, 1.0])
    portfolio = state([10, 0, 0], prices, cash=1_000)
    rules = {s: spot(s, lot_size=0.3) for s in SYMBOLS}
    orders, skipped = plan_orders(
        np.array([0.2485, 0.1, 0.0]), portfolio, prices, SYMBOLS, rules.__getitem__, reason="r"
    )
    sell = next(o for o in orders if o.side is Side.SELL)
    # 0.0015 * 2000 / 100 = 5.03 more to sell: 16 lots of 0.3 = 4.8 (never 17 = 5.1).
    assert sell.quantity == pytest.approx(4.8, abs=1e-12) and sell.quantity <= 5.03
    buy = next(o for o in orders if o.side is Side.BUY)
    assert buy.symbol == "BBBUSDT" and buy.quote_quantity == pytest.approx(200)
    assert skipped == []


def test_plan_refuses_a_symbol_quoted_outside_the_account_quote():
    # ADABTC at 0.00001 (BTC): read as USDT, 1,000 USDT would buy 1e8 ADA.
    symbols = ("BTCUSDT", "ADABTC", "ARBUSD")
    prices = np.array([30_000.0, 0.00001, 5.0])
    portfolio = state([0, 0, 0], prices, cash=1_000)
    with pytest.raises(QuoteError, match="subaccount 'core'.*ADABTC is quoted in BTC.*USDT"):
        plan_orders(
            np.array([0.0, 0.5, 0.0]),
            portfolio,
            prices,
            symbols,
            spot,
            reason="r",
            subaccount="core",
        )
    # BUSD is at par with USDT; an untraded ADABTC (no weight, none held) is no trade.
    orders, _ = plan_orders(np.array([0.5, 0.0, 0.5]), portfolio, prices, symbols, spot, reason="r")
    assert {o.symbol: o.quote_quantity for o in orders} == {"BTCUSDT": 500.0, "ARBUSD": 500.0}


def test_a_backtest_full_exit_leaves_reported_dust(make_panel):
    # Hand-worked: AAA at 7 with 1-unit lots, 10 bps fees taken in the coin bought
    # (Binance's default). 50,000 USDT buys 7,142 lots; the fee, 7.142 AAA, leaves
    # 7,134.858 held. The exit sells the 7,134 whole lots; 0.858 AAA (6.006 USDT) stays,
    # reported in the decision and the run's result.
    from trimtab.engine.backtest import Backtest, BacktestConfig
    from trimtab.engine.context import MarketContext
    from trimtab.execution.costs import CostModel
    from trimtab.policy import TargetWeights

    panel = make_panel({"AAAUSDT": [7.0] * 20, "BBBUSDT": [1.0] * 20})
    targets = pd.DataFrame(np.nan, index=panel.index, columns=["AAAUSDT", "BBBUSDT"])
    targets.iloc[0] = [0.5, 0.0]
    targets.iloc[10] = [0.0, 0.0]
    costs = CostModel(10.0, 10.0, 0.0, 0.0, fee_currency="received")
    rules = {"AAAUSDT": spot("AAAUSDT", lot_size=1.0, min_notional=5.0)}
    result = Backtest(
        MarketContext.build(panel),
        TargetWeights(targets),
        BacktestConfig(costs=costs),
        instruments=rules,
    ).run()
    sells = result.trades[result.trades["side"] == "sell"]
    assert sells["quantity"].tolist() == [7_134.0]
    exit_decision = next(d for d in result.decisions if d.get("skipped"))
    (dust,) = exit_decision["skipped"]
    assert dust["dust"] is True and dust["symbol"] == "AAAUSDT"
    assert dust["quantity"] == pytest.approx(0.858, abs=1e-9)
    assert "under one lot of 1" in dust["reason"]
    (left,) = result.dust
    assert left["symbol"] == "AAAUSDT" and left["quantity"] == pytest.approx(0.858, abs=1e-9)
    assert left["value"] == pytest.approx(0.858 * 7.0, abs=1e-6)
