"""Signed perpetual targets through the limits guard and the simulated broker, each
figure worked by hand: a perpetual column may be short, a spot column stays long-only;
gross is sum |w|, net |sum w|; min_cash caps the spot weights; a short-opening sell
funds no buy, neither in the guard's post-trade search nor in the broker."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trimtab.data import panel_from_long
from trimtab.domain import Account, Fill, Order, Side, perpetual, spot
from trimtab.domain.decisions import Observation, PortfolioState
from trimtab.execution.costs import CostModel
from trimtab.execution.market import MarketArrays
from trimtab.execution.simulated import SimulatedBroker
from trimtab.guard.limits import LimitGuard, Limits

from ._support import T0, buy, decide, make_obs, rules, sell

PAIR = ("BTCUSDT", "BTCUSDT-PERP")
INSTRUMENTS = {"BTCUSDT": spot("BTCUSDT"), "BTCUSDT-PERP": perpetual("BTCUSDT-PERP")}


def test_a_negative_target_passes_on_a_perpetual_and_is_rejected_on_spot():
    obs = make_obs(PAIR, [20_000.0, 20_000.0])
    out = LimitGuard().check(decide(0.45, -0.45), obs)
    np.testing.assert_array_equal(out.targets, [0.45, -0.45])
    assert not out.guard
    bad = LimitGuard().check(decide(-0.45, 0.45), obs)
    assert bad.targets is None
    (action,) = bad.guard
    assert action.rule == "negative" and action.symbols == ("BTCUSDT",)
    assert "negative target on a long-only account" in action.message
    # The mask can be given (here: nothing is a perpetual).
    assert LimitGuard().check(decide(0.45, -0.45), obs, perpetual=np.zeros(2, bool)).targets is None


def test_gross_is_the_sum_of_sizes_and_net_the_size_of_the_sum():
    obs = make_obs(PAIR, [20_000.0, 20_000.0])
    # 0.6 spot and -0.6 perp: gross 1.2 > 1 -> both scaled by 1/1.2 to 0.5 and -0.5;
    # net 0 passes any net cap.
    out = LimitGuard(Limits(max_net_exposure=0.1)).check(decide(0.6, -0.6), obs)
    np.testing.assert_allclose(out.targets, [0.5, -0.5], rtol=1e-15)
    assert rules(out.guard) == ["max_gross_leverage"]
    assert out.guard[0].before == pytest.approx(1.2)
    # A short alone: net |-0.8| = 0.8 over a 0.5 cap -> -0.5.
    out = LimitGuard(Limits(max_net_exposure=0.5)).check(decide(0.0, -0.8), obs)
    np.testing.assert_allclose(out.targets, [0.0, -0.5], rtol=1e-15)
    assert rules(out.guard) == ["max_net_exposure"]
    # The asset cap clips the size and keeps the sign.
    out = LimitGuard(Limits(max_asset_weight=0.3)).check(decide(0.2, -0.45), obs)
    np.testing.assert_allclose(out.targets, [0.2, -0.3])


def test_min_cash_caps_the_spot_weights_only():
    obs = make_obs(PAIR, [20_000.0, 20_000.0])
    # min_cash 0.5: spot 0.45 fits (the short's margin is not a spot purchase) ...
    guard = LimitGuard(Limits(min_cash=0.5, max_gross_leverage=2.0))
    out = guard.check(decide(0.45, -0.45), obs)
    assert not out.guard
    # ... spot 0.6 does not: everything scaled by 0.5 / 0.6, the hedge kept.
    out = guard.check(decide(0.6, -0.6), obs)
    np.testing.assert_allclose(out.targets, [0.5, -0.5], rtol=1e-15)
    assert rules(out.guard) == ["min_cash"]


def _perp_obs(cash: float, qty: list[float], prices: list[float], equity: float) -> Observation:
    close = np.array(prices)
    portfolio = PortfolioState(equity, cash, np.array(qty), close, equity)
    listed = np.ones(len(prices), bool)
    return Observation(0, T0, PAIR, {"close": close[None, :]}, {}, listed, listed, portfolio, 0)


def test_a_short_opening_sell_adds_exposure_and_funds_no_buy():
    # Flat book of 10,000: spot buy 6,000 and a short of 0.3 BTC (6,000) at 20,000. Gross
    # after both = 1.2 > 1: the orders adding exposure (both) are scaled together to 1/1.2,
    # so the pair stays hedged. (Counted as a sale, the short would have funded the buy.)
    prices = np.array([20_000.0, 20_000.0])
    obs = _perp_obs(10_000.0, [0.0, 0.0], list(prices), 10_000.0)
    orders = [buy("BTCUSDT", 6_000.0), sell("BTCUSDT-PERP", 0.3)]
    out, actions = LimitGuard().check_orders(orders, obs, prices, 0.0, instrument=INSTRUMENTS.get)
    (b, s) = out
    assert b.quote_quantity == pytest.approx(5_000.0, rel=1e-12)
    assert s.quantity == pytest.approx(0.25, rel=1e-12)
    assert rules(actions) == ["max_gross_leverage"]
    # Buying back a short reduces exposure: never scaled. Book: spot 0.25 BTC and a 0.25
    # BTC short (margin 5,000 at 1x), cash 0, equity 10,000 (margin + spot). The plan buys
    # the short back and 0.25 BTC more spot: after it, 0.5 BTC spot (weight 1.0) and no
    # short: gross, net and the spot weight at 1.0, within their caps.
    held = _perp_obs(0.0, [0.25, -0.25], list(prices), 10_000.0)
    orders = [
        Order("BTCUSDT-PERP", Side.BUY, quantity=0.25, reduce_only=True),
        buy("BTCUSDT", 5_000.0),
    ]
    out, actions = LimitGuard().check_orders(orders, held, prices, 0.0, instrument=INSTRUMENTS.get)
    assert [o.quantity or o.quote_quantity for o in out] == [0.25, 5_000.0] and not actions


def _panel(days: int, volume: dict[str, float]) -> MarketArrays:
    t = pd.date_range("2021-01-01", periods=days, freq="1D", tz="UTC")
    rows = [
        (ts, s, 100.0, 101.0, 99.0, 100.0, volume[s] / 100.0, volume[s]) for ts in t for s in PAIR
    ]
    cols = ["timestamp", "symbol", "open", "high", "low", "close", "volume", "quote_volume"]
    return MarketArrays.from_panel(panel_from_long(pd.DataFrame(rows, columns=cols)))


def test_the_broker_does_not_hold_a_spot_buy_back_for_an_unfilled_short():
    # The perpetual trades 1,000 USDT a bar: the 10 % volume cap fills 1 unit of a 45-unit
    # short (100 USDT). The spot buy of 4,500 of the same plan still fills whole: the short
    # was never going to pay for it (a spot sale cut so would have cut the buy).
    market = _panel(3, {"BTCUSDT": 1e9, "BTCUSDT-PERP": 1_000.0})
    account = Account.with_cash(10_000.0)
    broker = SimulatedBroker(account, market, CostModel.free(), instruments=INSTRUMENTS)
    broker.submit(Order("BTCUSDT", Side.BUY, quote_quantity=4_500.0, decision_id=0))
    broker.submit(Order("BTCUSDT-PERP", Side.SELL, quantity=45.0, decision_id=0))
    report = broker.on_bar(1)
    filled = {f.symbol: f.quantity for f in report.fills}
    assert filled == {"BTCUSDT": 45.0, "BTCUSDT-PERP": 1.0}
    assert not any("waiting for the sells" in r.reason for r in report.rejections)
    sub = account.subaccount("main")
    assert sub.positions["BTCUSDT-PERP"].quantity == -1.0
    assert sub.cash == pytest.approx(10_000.0 - 4_500.0 - 100.0)  # spot and 1x margin


def test_the_broker_runs_reduce_only_orders_with_the_sells():
    # A book of spot 1 and a 1-unit short at 100 (margin 100), cash 0: the plan buys the
    # short back (reduce-only) and spends 100 on spot. The buy-back runs first and frees
    # the margin the spot buy spends.
    market = _panel(3, {"BTCUSDT": 1e9, "BTCUSDT-PERP": 1e9})
    account = Account.with_cash(200.0)
    broker = SimulatedBroker(account, market, CostModel.free(), instruments=INSTRUMENTS)
    broker.submit(Order("BTCUSDT", Side.BUY, quantity=1.0))
    broker.submit(Order("BTCUSDT-PERP", Side.SELL, quantity=1.0))
    broker.on_bar(1)
    sub = account.subaccount("main")
    assert sub.cash == pytest.approx(0.0)
    broker.submit(Order("BTCUSDT", Side.BUY, quote_quantity=100.0, decision_id=1))
    broker.submit(Order("BTCUSDT-PERP", Side.BUY, quantity=1.0, reduce_only=True, decision_id=1))
    report = broker.on_bar(2)
    assert [f.symbol for f in report.fills] == ["BTCUSDT-PERP", "BTCUSDT"]
    assert sub.positions["BTCUSDT"].quantity == pytest.approx(2.0)
    assert "BTCUSDT-PERP" not in sub.positions and sub.cash == pytest.approx(0.0)


def test_at_the_fill_min_cash_reads_the_spot_weight_of_a_book_with_a_short():
    # 10,000 USDT; a 0.25 BTC short at 20,000 (1x: 5,000 of margin leaves 5,000 cash).
    # Equity stays 10,000. With min_cash 0.5 a spot buy may bring the spot weight to 0.5:
    # 0.2 BTC (0.4) passes whole, 0.3 BTC (0.6) is cut to 0.25 BTC. (Read as the cash
    # share, 0.2 BTC would leave 1,000 of cash, 10 %, and be cut.)
    account = Account.with_cash(10_000.0)
    sub = account.subaccount("main")
    short = Fill(1, T0, "BTCUSDT-PERP", Side.SELL, 0.25, 20_000.0, 0.0, "USDT")
    sub.apply_fill(short, INSTRUMENTS["BTCUSDT-PERP"])
    assert sub.cash == pytest.approx(5_000.0)
    guard = LimitGuard(Limits(min_cash=0.5, max_gross_leverage=2.0))
    marks = {"BTCUSDT-PERP": 20_000.0, "BTCUSDT": 20_000.0}
    for qty, allowed in ((0.2, 0.2), (0.3, 0.25)):
        fill = Fill(2, T0, "BTCUSDT", Side.BUY, qty, 20_000.0, 0.0, "USDT")
        q, actions = guard.check_fill(fill, INSTRUMENTS["BTCUSDT"], sub, marks, traded_today=0.0)
        assert q == pytest.approx(allowed, rel=1e-9)
        assert [a.rule for a in actions] == ([] if qty == allowed else ["min_cash"])
