import math

import numpy as np
import pandas as pd
import pytest

from trimtab.domain import Account, Order, OrderType, Side, perpetual, spot
from trimtab.domain.decisions import GuardAction
from trimtab.execution.costs import CostModel
from trimtab.execution.market import MarketArrays
from trimtab.execution.simulated import SimulatedBroker


def broker_for(panel, costs=None, cash=10_000.0, **kw):
    account = Account.with_cash(cash)
    return SimulatedBroker(
        account, MarketArrays.from_panel(panel), costs or CostModel(), **kw
    ), account


def test_market_buy_fills_at_next_open_with_fee_and_slippage(make_panel):
    panel = make_panel({"AAAUSDT": [100, 110, 120]})
    costs = CostModel(taker_fee_bps=10, half_spread_bps=5, impact_bps_at_1pct=20)
    broker, account = broker_for(panel, costs)
    assert broker.submit(Order("AAAUSDT", Side.BUY, quantity=10)) is None
    report = broker.on_bar(1)
    (f,) = report.fills
    # Bar 1 opens at 100 (the previous close). Participation = 1000 / 1e9.
    slip = (5 + 20 * math.sqrt(1000 / 1e9 / 0.01)) * 1e-4
    assert f.price == pytest.approx(100 * (1 + slip), rel=1e-12)
    assert f.fee == pytest.approx(10 * f.price * 0.001)
    assert account.subaccount("main").cash == pytest.approx(10_000 - 10 * f.price - f.fee)


def test_quote_buy_spends_exactly_the_amount_including_fee(make_panel):
    panel = make_panel({"AAAUSDT": [100, 100, 100]})
    broker, account = broker_for(
        panel, CostModel(taker_fee_bps=10, half_spread_bps=0, impact_bps_at_1pct=0)
    )
    broker.submit(Order("AAAUSDT", Side.BUY, quote_quantity=1_000))
    (f,) = broker.on_bar(1).fills
    assert f.quantity * f.price + f.fee == pytest.approx(1_000)
    assert account.subaccount("main").cash == pytest.approx(9_000)


def test_lot_size_rounding_and_min_notional_rejection(make_panel):
    panel = make_panel({"AAAUSDT": [100, 100, 100]})
    inst = spot("AAAUSDT", lot_size=0.1, min_notional=50)
    broker, account = broker_for(panel, CostModel.free(), instruments={"AAAUSDT": inst})
    broker.submit(Order("AAAUSDT", Side.BUY, quantity=1.2345))
    broker.submit(Order("AAAUSDT", Side.BUY, quantity=0.05))  # rounds to zero
    broker.submit(Order("AAAUSDT", Side.BUY, quantity=0.3))  # 30 USDT < 50 minimum
    report = broker.on_bar(1)
    assert [f.quantity for f in report.fills] == [pytest.approx(1.2)]
    reasons = sorted(r.reason for r in report.rejections)
    assert "rounds to zero" in reasons[0] or "rounds to zero" in reasons[1]
    assert any("below the minimum 50" in r for r in reasons)
    assert account.subaccount("main").quantity("AAAUSDT") == pytest.approx(1.2)


def test_sells_fund_buys_and_buys_scale_to_cash(make_panel):
    panel = make_panel({"AAAUSDT": [100, 100, 100], "BBBUSDT": [50, 40, 40]})
    broker, account = broker_for(panel, CostModel.free(), cash=1_000)
    broker.submit(Order("BBBUSDT", Side.BUY, quote_quantity=1_000))
    broker.on_bar(1)
    sub = account.subaccount("main")
    assert sub.cash == pytest.approx(0)
    # Bought 20 at bar 1's open of 50; now sell them at 40 and buy 600 + 400 of AAA.
    broker.submit(Order("AAAUSDT", Side.BUY, quote_quantity=600))
    broker.submit(Order("AAAUSDT", Side.BUY, quote_quantity=400))
    broker.submit(Order("BBBUSDT", Side.SELL, quantity=sub.quantity("BBBUSDT")))
    report = broker.on_bar(2)
    assert report.fills[0].side is Side.SELL  # sells go first
    proceeds = report.fills[0].notional
    buys = [f for f in report.fills if f.side is Side.BUY]
    # The sale raises 20 * 40 = 800: both buys are scaled by 0.8 to fit.
    assert proceeds == pytest.approx(800)
    assert sorted(f.notional for f in buys) == pytest.approx([320, 480])
    assert sub.cash == pytest.approx(0, abs=1e-9)


def test_buys_larger_than_cash_are_scaled_proportionally(make_panel):
    panel = make_panel({"AAAUSDT": [100, 100], "BBBUSDT": [10, 10]})
    broker, account = broker_for(panel, CostModel.free(), cash=1_000)
    broker.submit(Order("AAAUSDT", Side.BUY, quote_quantity=1_200))
    broker.submit(Order("BBBUSDT", Side.BUY, quote_quantity=800))
    fills = broker.on_bar(1).fills
    spent = {f.symbol: f.notional for f in fills}
    assert spent["AAAUSDT"] == pytest.approx(600)
    assert spent["BBBUSDT"] == pytest.approx(400)
    assert all("scaled to available cash" in f.reason for f in fills)


def test_limit_orders_maker_when_resting_taker_when_marketable(make_panel):
    panel = make_panel({"AAAUSDT": [100, 100, 100, 100]})
    costs = CostModel(taker_fee_bps=10, maker_fee_bps=2, half_spread_bps=0, impact_bps_at_1pct=0)
    broker, account = broker_for(panel, costs)
    # Bars trade 99..101; a buy at 99.5 rests and fills at its limit as maker.
    broker.submit(Order("AAAUSDT", Side.BUY, quantity=1, type=OrderType.LIMIT, limit_price=99.5))
    broker.submit(
        Order(
            "AAAUSDT",
            Side.BUY,
            quantity=1,
            type=OrderType.LIMIT,
            limit_price=50,
            time_in_force="gtc",
        )
    )
    broker.submit(Order("AAAUSDT", Side.BUY, quantity=1, type=OrderType.LIMIT, limit_price=105))
    fills = broker.on_bar(1).fills
    by_price = sorted(fills, key=lambda f: f.price)
    assert [f.price for f in by_price] == [99.5, 100]
    assert by_price[0].liquidity == "maker" and by_price[0].fee == pytest.approx(99.5 * 2e-4)
    assert by_price[1].liquidity == "taker" and by_price[1].fee == pytest.approx(100 * 1e-3)
    assert len(broker.open_orders()) == 1  # the 50 bid still rests
    assert broker.cancel(broker.open_orders()[0].id)
    assert broker.open_orders() == []


def test_gap_defers_and_delisting_closes_at_last_price(make_panel):
    nan = float("nan")
    panel = make_panel({"AAAUSDT": [100, nan, 120, 130, 140], "DEADUSDT": [10, 11, 12, nan, nan]})
    broker, account = broker_for(panel, CostModel.free())
    broker.submit(Order("AAAUSDT", Side.BUY, quote_quantity=1_000, time_in_force="gtc"))
    broker.submit(Order("DEADUSDT", Side.BUY, quote_quantity=1_000))
    report = broker.on_bar(1)  # AAA has a gap at bar 1: its good-till-cancelled order waits
    assert [f.symbol for f in report.fills] == ["DEADUSDT"]
    assert len(broker.open_orders()) == 1
    report = broker.on_bar(2)
    assert [f.symbol for f in report.fills] == ["AAAUSDT"]
    assert report.fills[0].price == 100  # opens at the last close before the gap
    report = broker.on_bar(3)  # DEAD's last bar was 2: closed at its last close
    (f,) = report.fills
    assert f.symbol == "DEADUSDT" and f.side is Side.SELL and f.price == 12
    assert "delisted" in f.reason
    assert account.subaccount("main").quantity("DEADUSDT") == 0


def test_perp_funding_and_liquidation_on_the_bar_range(make_panel):
    idx = pd.date_range("2021-01-01", periods=4, freq="1D", tz="UTC")
    panel = make_panel({"BTCUSDT-PERP": [20_000, 20_000, 19_000, 17_000]})
    inst = perpetual("BTCUSDT-PERP")
    funding = {
        "BTCUSDT-PERP": pd.Series(
            [0.001, 0.001, 0.001],
            index=idx[1:2]
            .append(idx[1:2] + pd.Timedelta("8h"))
            .append(idx[1:2] + pd.Timedelta("16h")),
        )
    }
    broker, account = broker_for(
        panel, CostModel.free(), instruments={"BTCUSDT-PERP": inst}, funding=funding
    )
    broker.submit(Order("BTCUSDT-PERP", Side.BUY, quantity=1, leverage=10))
    report = broker.on_bar(1)
    sub = account.subaccount("main")
    # Three funding events in bar 1, each 1 * 20000 (bar open) * 0.1 %, paid by the long.
    assert [a for _, _, a in report.funding] == pytest.approx([-20.0, -20.0, -20.0])
    pos = sub.positions["BTCUSDT-PERP"]
    assert pos.margin == pytest.approx(2_000 - 60)
    liq = pos.liquidation_price()
    assert liq == pytest.approx((1_940 - 20_000) / (0.004 - 1))
    report = broker.on_bar(2)  # low 19000 * 0.99 = 18810 < liq ~ 18133? no: liq is higher
    assert np.isclose(liq, 18_132.53, atol=0.01)
    assert not report.liquidations
    report = broker.on_bar(3)  # bar 3 opens at 19000, trades down to 16830
    (event,) = report.liquidations
    assert event.price == pytest.approx(liq)
    assert "BTCUSDT-PERP" not in sub.positions
    assert sub.equity({}) == pytest.approx(10_000 - 2_000)
    assert sub.identity_gap({}) == pytest.approx(0, abs=1e-9)


def test_real_binance_funding_is_booked_on_a_perp_position(daily_bars):
    from tests.conftest import FUNDING_FILE
    from trimtab.data import panel_from_long, read_funding

    bars = daily_bars[daily_bars["symbol"] == "BTCUSDT"].assign(symbol="BTCUSDT-PERP")
    bars = bars[(bars["timestamp"] >= "2021-01-01") & (bars["timestamp"] <= "2021-03-31")]
    panel = panel_from_long(bars)
    funding = read_funding(FUNDING_FILE)
    rates = funding[(funding["symbol"] == "BTCUSDT") & (funding["venue"] == "binance")]
    series = rates.set_index("timestamp")["funding_rate"]
    inst = perpetual("BTCUSDT-PERP")
    broker, account = broker_for(
        panel,
        CostModel.free(),
        cash=100_000,
        instruments={"BTCUSDT-PERP": inst},
        funding={"BTCUSDT-PERP": series},
    )
    broker.submit(Order("BTCUSDT-PERP", Side.BUY, quantity=1.0, leverage=2))
    booked = sum(a for i in range(1, len(panel.index)) for _, _, a in broker.on_bar(i).funding)
    # Independently: every Binance event from the fill bar on, paid by 1 BTC long at the
    # mark of its time, open to close of its day linearly (08:00 is a third of the way).
    opens, closes = panel.open["BTCUSDT-PERP"], panel.close["BTCUSDT-PERP"]
    events = series[
        (series.index >= panel.index[1]) & (series.index < panel.index[-1] + pd.Timedelta("1D"))
    ]
    expected = -sum(
        rate
        * (
            opens.loc[ts.floor("1D")]
            + (closes.loc[ts.floor("1D")] - opens.loc[ts.floor("1D")]) * ts.hour / 24
        )
        for ts, rate in events.items()
    )
    assert len(events) == 3 * (len(panel.index) - 1)
    assert booked == pytest.approx(expected, rel=1e-12)
    assert booked < 0  # early 2021: longs paid heavily
    sub = account.subaccount("main")
    assert sub.funding_pnl == pytest.approx(booked)
    assert sub.identity_gap(
        {"BTCUSDT-PERP": float(panel.close["BTCUSDT-PERP"].iloc[-1])}
    ) == pytest.approx(0, abs=1e-6)


# --- time in force, trade-through, volume share, exits, plans, the fill guard --------------


def test_an_order_for_a_bar_that_does_not_come_expires_with_a_record(make_panel):
    # Before: an order planned while the asset had no bar waited forever (and the engine
    # planned it again every bar). Now it is good for the next bar only.
    nan = float("nan")
    panel = make_panel({"AAAUSDT": [100, nan, nan, 130], "BBBUSDT": [1, 1, 1, 1]})
    broker, account = broker_for(panel, CostModel.free())
    order = Order("AAAUSDT", Side.BUY, quote_quantity=1_000)
    broker.submit(order)
    report = broker.on_bar(1)
    assert report.fills == [] and broker.open_orders() == []
    (r,) = report.rejections
    assert r.kind == "expired" and r.order.id == order.id
    assert "no bar for AAAUSDT" in r.reason and "next_bar order expired" in r.reason


def test_good_till_date_waits_until_its_time(make_panel):
    nan = float("nan")
    panel = make_panel({"AAAUSDT": [100, nan, nan, 130], "BBBUSDT": [1, 1, 1, 1]})
    broker, _ = broker_for(panel, CostModel.free())
    at = panel.index[2]
    broker.submit(
        Order("AAAUSDT", Side.BUY, quote_quantity=1_000, time_in_force="gtd", expires_at=at)
    )
    assert broker.on_bar(1).rejections == [] and len(broker.open_orders()) == 1
    (r,) = broker.on_bar(2).rejections  # bar 3 opens after expires_at: nothing left to wait for
    assert r.kind == "expired" and broker.open_orders() == []
    with pytest.raises(ValueError, match="gtd order needs expires_at"):
        Order("AAAUSDT", Side.BUY, quote_quantity=1, time_in_force="gtd")
    with pytest.raises(ValueError, match="only for gtd"):
        Order("AAAUSDT", Side.BUY, quote_quantity=1, expires_at=at)


def test_a_limit_that_is_only_touched_does_not_fill(make_panel):
    # Bar 1 opens at 100 and trades 99..101 (synthetic bars: +-1 %).
    panel = make_panel({"AAAUSDT": [100, 100, 100]})
    broker, _ = broker_for(panel, CostModel.free())
    touch = Order("AAAUSDT", Side.BUY, quantity=1, type=OrderType.LIMIT, limit_price=99.0)
    at_open = Order("AAAUSDT", Side.SELL, quantity=1, type=OrderType.LIMIT, limit_price=101.0)
    through = Order("AAAUSDT", Side.BUY, quantity=1, type=OrderType.LIMIT, limit_price=99.01)
    for o in (touch, at_open, through):
        broker.submit(o)
    report = broker.on_bar(1)
    assert [(f.order_id, f.price) for f in report.fills] == [(through.id, 99.01)]
    assert sorted(r.order.id for r in report.rejections) == sorted([touch.id, at_open.id])
    assert all("not traded through" in r.reason for r in report.rejections)


def test_an_order_above_the_volume_share_fills_partly_and_the_rest_waits(make_panel):
    # Bars trade 100k of quote volume: at most 10 % = 10k fills per bar.
    panel = make_panel({"AAAUSDT": [100, 100, 100, 100]}, volume=100_000)
    broker, account = broker_for(panel, CostModel.free(), cash=100_000)
    broker.submit(Order("AAAUSDT", Side.BUY, quote_quantity=25_000, time_in_force="gtc"))
    for bar, spent in ((1, 10_000), (2, 10_000), (3, 5_000)):
        (f,) = broker.on_bar(bar).fills
        assert f.notional == pytest.approx(spent)
    assert broker.open_orders() == []
    assert account.subaccount("main").cash == pytest.approx(75_000)
    # With the default time in force the rest expires, and says why.
    broker, _ = broker_for(panel, CostModel.free(), cash=100_000)
    broker.submit(Order("AAAUSDT", Side.BUY, quote_quantity=25_000))
    report = broker.on_bar(1)
    assert report.fills[0].notional == pytest.approx(10_000)
    (r,) = report.rejections
    assert r.kind == "expired" and r.order.quote_quantity == pytest.approx(15_000)
    assert "volume cap" in r.reason and "partly filled" in r.reason
    assert CostModel(max_volume_share=None).max_volume_share is None
    with pytest.raises(ValueError, match="max_volume_share"):
        CostModel(max_volume_share=1.5)


def test_a_full_exit_is_truncated_to_the_lot_and_leaves_dust(make_panel):
    # Before: a sell of everything skipped lot rounding and the minimum notional.
    panel = make_panel({"AAAUSDT": [100, 100, 100, 100]})
    inst = spot("AAAUSDT", lot_size=0.1, min_notional=5)
    broker, account = broker_for(panel, CostModel.free(), instruments={"AAAUSDT": inst})
    sub = account.subaccount("main")
    broker.submit(Order("AAAUSDT", Side.BUY, quantity=1.0))
    broker.on_bar(1)
    sub.positions["AAAUSDT"].quantity = 1.2345  # e.g. after fees taken in the base asset
    broker.submit(Order("AAAUSDT", Side.SELL, quantity=1.2345))
    (f,) = broker.on_bar(2).fills
    assert f.quantity == pytest.approx(1.2)
    assert sub.quantity("AAAUSDT") == pytest.approx(0.0345)
    broker.submit(Order("AAAUSDT", Side.SELL, quantity=sub.quantity("AAAUSDT")))
    report = broker.on_bar(3)
    assert report.fills == []
    (r,) = report.rejections
    assert "left as dust" in r.reason and r.kind == "rejected"


def test_a_plans_buys_wait_for_the_sells_that_fund_them(make_panel):
    # Before: the BBB sell waited on a gap while the AAA buy spent the cash anyway.
    nan = float("nan")
    panel = make_panel({"AAAUSDT": [100, 100, 100, 100], "BBBUSDT": [50, 50, nan, 50]})
    broker, account = broker_for(panel, CostModel.free(), cash=10_000)
    broker.submit(Order("BBBUSDT", Side.BUY, quote_quantity=5_000))
    broker.on_bar(1)
    sub = account.subaccount("main")
    assert sub.cash == pytest.approx(5_000)
    # One plan (decision 7): sell all of BBB (5k) and buy 8k of AAA from 5k cash + 3k.
    sell_bbb = Order("BBBUSDT", Side.SELL, quantity=100, decision_id=7)
    buy_aaa = Order("AAAUSDT", Side.BUY, quote_quantity=8_000, decision_id=7)
    broker.submit(sell_bbb)
    broker.submit(buy_aaa)
    report = broker.on_bar(2)  # BBB has no bar: its 5k are not raised, the buy gets 3k
    (f,) = report.fills
    assert f.symbol == "AAAUSDT" and f.notional == pytest.approx(3_000)
    assert sub.cash == pytest.approx(2_000)  # the cash the plan meant to keep
    kinds = {r.order.id: (r.kind, r.reason) for r in report.rejections}
    assert kinds[sell_bbb.id][0] == "expired" and "no bar" in kinds[sell_bbb.id][1]
    assert kinds[buy_aaa.id][0] == "expired" and "sells that fund it" in kinds[buy_aaa.id][1]


class _HalfGuard:
    """A fill guard that allows half of every buy and counts what is booked."""

    def __init__(self):
        self.booked = []

    def check_fill(self, fill, instrument, sub, marks):
        if fill.side is Side.SELL:
            return fill.quantity, []
        assert marks[fill.symbol] == fill.price
        return fill.quantity / 2, [GuardAction("max_asset_weight", "half", (fill.symbol,))]

    def on_fill(self, fill):
        self.booked.append(fill)


def test_the_fill_guard_cuts_fills_and_sees_every_booked_fill(make_panel):
    panel = make_panel({"AAAUSDT": [100, 100, 100]})
    guard = _HalfGuard()
    broker, account = broker_for(panel, CostModel.free(), fill_guard=guard)
    order = Order("AAAUSDT", Side.BUY, quantity=10)
    broker.submit(order)
    report = broker.on_bar(1)
    (f,) = report.fills
    assert f.quantity == 5 and "scaled at the fill by max_asset_weight" in f.reason
    assert guard.booked == [f]
    assert [(o.id, a.rule) for o, a in report.guard] == [(order.id, "max_asset_weight")]
    (r,) = report.rejections
    assert r.kind == "rejected" and r.order.quantity == 5 and "max_asset_weight" in r.reason


def test_a_sell_the_bar_cannot_absorb_never_fills_at_a_negative_price(make_panel):
    # 100k to sell into a bar of 10 USDT of volume: the square-root impact is
    # 10 bps * sqrt(1e4 / 1 %) = 1e4 bps = 100 %. Before, this crashed on a price < 0.
    from trimtab.domain import Fill

    panel = make_panel({"AAAUSDT": [100, 100, 100]}, volume=10)
    costs = CostModel(taker_fee_bps=0, half_spread_bps=0, max_volume_share=None)
    broker, account = broker_for(panel, costs)
    sub = account.subaccount("main")
    sub.apply_fill(
        Fill(0, panel.index[0], "AAAUSDT", Side.BUY, 1_000, 1.0, 0.0, "USDT"),
        broker.instrument("AAAUSDT"),
    )
    broker.submit(Order("AAAUSDT", Side.SELL, quantity=1_000))
    report = broker.on_bar(1)
    assert report.fills == []
    (r,) = report.rejections
    assert r.kind == "expired" and "no liquidity" in r.reason
