"""The funding carry (long spot, short perpetual) through the engine: its market, feature,
PnL split, the leg breaker and the short's liquidation, each against an independent
computation.

Every run is ``Backtest`` (the pipeline step, its default guard, the simulated broker);
the broker's own reports (funding, liquidations) are read by wrapping its ``on_bar``.
The shared data has no perpetual bars: unless a test gives its own, the perpetual is
marked at copies of the spot bars (basis zero), so the legs' price moves cancel exactly
and what is left is funding, fees and the hedge's small quantity mismatch.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from unittest.mock import patch

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DAILY_FILE, FUNDING_FILE
from trimtab.data import load_panel, read_funding
from trimtab.data.panel import Panel
from trimtab.domain import Side, perpetual
from trimtab.domain.decisions import PortfolioState
from trimtab.engine.backtest import Backtest, BacktestConfig, BacktestResult
from trimtab.engine.context import MarketContext
from trimtab.execution.costs import CostModel
from trimtab.execution.simulated import SimulatedBroker
from trimtab.guard.limits import Limits
from trimtab.guard.safety import SafetyLayer
from trimtab.policy import plan_orders
from trimtab.strategies.carry import (
    CarryMarket,
    CarryStrategy,
    build_carry,
    funding_feature,
    prepare_carry_market,
)

DAY = pd.Timedelta("1D")
PAIRS = ("BTCUSDT", "ETHUSDT")
# Fees only: no slippage, so every fill is at the bar's open and the PnL split is exact.
FEES_ONLY = CostModel(taker_fee_bps=10, maker_fee_bps=10, half_spread_bps=0, impact_bps_at_1pct=0)

# A hedged book's limits: its gross is twice its spot (each pair's short as large as its
# spot), so the default 1x gross cap binds whenever a held pair's weights have drifted up
# and another enters (``test_under_the_default_limits...`` shows it).
HEDGED = Limits(max_gross_leverage=2.0)

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def spot() -> Panel:
    return load_panel(DAILY_FILE, symbols=list(PAIRS), start="2020-01-01", end="2022-12-31")


@pytest.fixture(scope="module")
def funding() -> pd.DataFrame:
    return read_funding(FUNDING_FILE)


@dataclasses.dataclass
class Run:
    """An engine run of the carry: the result, the broker's funding payments (timestamp,
    subaccount, symbol, amount received) and liquidations, and the positions held at each
    close rebuilt from the trade rows (fills and liquidations, base units, signed)."""

    result: BacktestResult
    funding: pd.DataFrame
    liquidations: list
    quantities: pd.DataFrame

    @property
    def trades(self) -> pd.DataFrame:
        return self.result.trades

    @property
    def decisions(self) -> list[dict]:
        """The decision records, their timestamps as ``pd.Timestamp``."""
        return [{**d, "timestamp": pd.Timestamp(d["timestamp"])} for d in self.result.decisions]

    @property
    def rejections(self) -> pd.DataFrame:
        return self.result.rejections

    @property
    def equity(self) -> pd.Series:
        return self.result.equity

    @property
    def fees_paid(self) -> float:
        return float(self.sub.fees_paid)

    @property
    def sub(self):
        return self.result.account.subaccount(self.result.subaccount)

    @property
    def funding_received(self) -> float:
        return float(self.funding["amount"].sum())


@contextmanager
def broker_reports():
    """Every funding payment and liquidation the simulated broker reports meanwhile."""
    funding: list[dict] = []
    liquidations: list = []
    original = SimulatedBroker.on_bar

    def on_bar(self, i):
        report = original(self, i)
        ts = self.market.timestamps[i]
        for sub, symbol, amount in report.funding:
            funding.append({"timestamp": ts, "subaccount": sub, "symbol": symbol, "amount": amount})
        liquidations.extend(report.liquidations)
        return report

    with patch.object(SimulatedBroker, "on_bar", on_bar):
        yield funding, liquidations


def engine_run(
    strategy: CarryStrategy,
    market: CarryMarket,
    *,
    start=None,
    costs=FEES_ONLY,
    limits: Limits | None = HEDGED,
) -> Run:
    """``strategy`` on ``market`` through ``Backtest`` under ``limits`` (a limits-only
    guard): the context built on the carry panel with the strategy's funding feature."""
    ctx = MarketContext.build(market.panel, start=start)
    features = strategy.features(market.panel, market.funding)
    ctx = dataclasses.replace(ctx, features={**ctx.features, **features})
    config = BacktestConfig(initial_cash=100_000.0, costs=costs, subaccount="carry")
    with broker_reports() as (funding, liquidations):
        result = Backtest(
            ctx,
            strategy,
            config,
            instruments=market.instruments,
            funding=market.funding,
            safety=SafetyLayer.limits_only(limits, subaccount="carry"),
        ).run()
    trades = result.trades
    sign = np.where(trades["side"] == "buy", 1.0, -1.0)
    moved = (
        pd.DataFrame(
            {"t": trades["timestamp"], "s": trades["symbol"], "q": sign * trades["quantity"]}
        )
        .pivot_table(index="t", columns="s", values="q", aggfunc="sum")
        .reindex(index=result.equity.index, columns=list(market.panel.symbols))
        .fillna(0.0)
    )
    frame = pd.DataFrame(funding, columns=["timestamp", "subaccount", "symbol", "amount"])
    return Run(result, frame, liquidations, moved.cumsum())


@pytest.fixture(scope="module")
def full_run(spot, funding):
    market = prepare_carry_market(spot, PAIRS, funding)
    return market, engine_run(build_carry(symbols=PAIRS), market)


def binance_rates(funding: pd.DataFrame, symbol: str) -> pd.Series:
    rows = funding[(funding["symbol"] == symbol) & (funding["venue"] == "binance")]
    return rows.set_index("timestamp")["funding_rate"].sort_index()


def booked_by_hand(panel: Panel, perp: str, rates: pd.Series, quantity: pd.Series) -> pd.Series:
    """Funding received per bar as the broker's rule says, computed here: each event in
    bar b (opening at its 00:00) pays ``-qty * mark * rate`` with the quantity held after
    bar b's fills (orders fill at the open, before the 00:00 event) and the mark linear
    from the bar's open to its close (08:00 is a third of the way)."""
    index = panel.index
    stamps = rates.index[(rates.index >= index[1]) & (rates.index < index[-1] + DAY)]
    bar = index.searchsorted(stamps, side="right") - 1
    frac = (stamps - index[bar]) / DAY
    opens, closes = panel.open[perp].to_numpy()[bar], panel.close[perp].to_numpy()[bar]
    marks = opens + (closes - opens) * frac
    qty = quantity.reindex(index).to_numpy()[bar]
    amounts = -qty * marks * rates.loc[stamps].to_numpy()
    return pd.Series(amounts, index=index[bar]).groupby(level=0).sum()


# --- the market and the feature ----------------------------------------------------------


def test_prepare_adds_perp_columns_copied_from_spot_and_the_venue_funding(spot, funding):
    market = prepare_carry_market(spot, PAIRS, funding)
    assert market.pairs == (("BTCUSDT", "BTCUSDT-PERP"), ("ETHUSDT", "ETHUSDT-PERP"))
    assert market.basis_zero == ("BTCUSDT-PERP", "ETHUSDT-PERP")
    for s, p in market.pairs:
        for frame in market.panel.frames().values():
            pd.testing.assert_series_equal(frame[p], frame[s], check_names=False)
        assert market.instruments[p].is_perpetual
        assert len(market.funding[p]) == 3288  # 3 a day, 2020-2022, on Binance
    assert "basis zero" in market.panel.provenance["carry"]["perpetuals"]["BTCUSDT-PERP"]


def test_prepare_names_what_is_wrong(spot, funding):
    with pytest.raises(ValueError, match="not in the spot bars: SOLUSDT"):
        prepare_carry_market(spot, ["SOLUSDT"], funding)
    with pytest.raises(ValueError, match="no funding rows for venue 'okx'"):
        prepare_carry_market(spot, PAIRS, funding, venue="okx")
    with pytest.raises(ValueError, match="spot symbols, not BTCUSDT-PERP"):
        prepare_carry_market(spot, ["BTCUSDT-PERP"], funding)
    with pytest.raises(ValueError, match="lacks column"):
        prepare_carry_market(spot, PAIRS, funding.drop(columns="venue"))


def test_funding_feature_by_hand(make_panel):
    panel = make_panel({"BTCUSDT": [100.0] * 4, "BTCUSDT-PERP": [100.0] * 4, "X": [1.0] * 4})
    stamps = pd.date_range("2021-01-01", periods=9, freq="8h", tz="UTC")  # to 01-03 16:00
    rates = pd.Series([1, 2, 3, 4, 5, 6, 7, 8, 9], index=stamps, dtype=float) * 1e-4
    out = funding_feature(panel, {"BTCUSDT-PERP": rates}, window=2)
    # Bar 0 closes at 01-02 00:00: rates 1..4 known, the last two average 3.5e-4.
    # Bar 1 closes at 01-03 00:00: 1..7 known -> (6 + 7) / 2. Bar 2 closes at 01-04 00:00:
    # 9 was the last (01-03 16:00), 8 h old -> (8 + 9) / 2. Bar 3 closes at 01-05 00:00:
    # the last rate is 32 h old, beyond 3 intervals (24 h): stale.
    expected = np.array([3.5e-4, 6.5e-4, 8.5e-4, np.nan]) * 1095
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-12)
    np.testing.assert_allclose(out[:, 1], expected, rtol=1e-12)  # the perp's column too
    assert np.isnan(out[:, 2]).all()
    with_one = funding_feature(panel, {"BTCUSDT-PERP": rates[:1]}, window=2)
    assert np.isnan(with_one[:, 0]).all()  # fewer rates known than the window


def test_build_carry_validates_params():
    with pytest.raises(ValueError, match=r"params\.bogus: Extra inputs are not permitted"):
        build_carry({"bogus": 1})
    with pytest.raises(ValueError, match="exit_apr .* must be below enter_apr"):
        build_carry({"enter_apr": 0.05, "exit_apr": 0.05})
    with pytest.raises(ValueError, match="reset_move .* at 3x"):
        build_carry({"leverage": 3, "reset_move": 0.5})
    with pytest.raises(ValueError, match=r"params\.gross"):
        build_carry({"gross": 1.5})
    strategy = build_carry({"window": 9}, name="c", symbols=("BTCUSDT",))
    assert strategy.spec.kind == "carry"
    assert strategy.spec.instruments == ("BTCUSDT", "BTCUSDT-PERP")
    assert strategy.feature == "funding_apr_9"
    tuned = strategy.with_params(enter_apr=0.2, sizer0__gross=0.5)
    assert (tuned.params.enter_apr, tuned.params.gross, tuned.params.window) == (0.2, 0.5, 9)
    assert tuned.sizers[0].weight == pytest.approx(0.5 / 2)  # one pair, margin at 1x
    with pytest.raises(ValueError, match=r"params\.bogus"):
        strategy.with_params(bogus=1)


def test_plan_orders_opens_and_closes_the_short_leg():
    symbols = ("BTCUSDT", "BTCUSDT-PERP")
    insts = {"BTCUSDT-PERP": perpetual("BTCUSDT-PERP", lot_size=0.001)}

    def instrument(s):
        from trimtab.domain import spot

        return insts.get(s) or spot(s)

    prices = np.array([20_000.0, 20_000.0])
    flat = PortfolioState(10_000.0, 10_000.0, np.zeros(2), prices, 10_000.0)
    orders, _ = plan_orders(
        np.array([0.25, -0.25]), flat, prices, symbols, instrument, reason="carry", leverage=2
    )
    buy, sell = sorted(orders, key=lambda o: o.side is Side.SELL)
    assert (buy.symbol, buy.side, buy.quote_quantity) == ("BTCUSDT", Side.BUY, 2_500.0)
    # 2,500 / 20,000 = 0.125 BTC short at 2x, truncated to the 0.001 lot.
    assert (sell.symbol, sell.side, sell.quantity) == ("BTCUSDT-PERP", Side.SELL, 0.125)
    assert sell.leverage == 2 and not sell.reduce_only
    held = PortfolioState(10_000.0, 5_000.0, np.array([0.125, -0.125]), prices, 10_000.0)
    orders, _ = plan_orders(np.zeros(2), held, prices, symbols, instrument, reason="x")
    sell_spot, close = sorted(orders, key=lambda o: o.side is Side.BUY)
    assert (sell_spot.side, sell_spot.quantity) == (Side.SELL, 0.125)
    assert (close.side, close.quantity, close.reduce_only) == (Side.BUY, 0.125, True)
    orders, _ = plan_orders(
        np.array([0.125, -0.125]), held, prices, symbols, instrument, reason="x"
    )
    (reduce,) = [o for o in orders if o.symbol == "BTCUSDT-PERP"]
    # Half the short bought back: 0.0625, truncated to the lot.
    assert (reduce.side, reduce.quantity, reduce.reduce_only) == (Side.BUY, 0.062, True)
    # A flip: from -0.125 to +0.25 of 10,000 (0.125 BTC long) is one buy of 0.25, not
    # reduce-only (it goes through zero); a spot column never goes short.
    orders, _ = plan_orders(np.array([-0.5, 0.25]), held, prices, symbols, instrument, reason="x")
    by = {o.symbol: o for o in orders}
    assert (by["BTCUSDT-PERP"].side, by["BTCUSDT-PERP"].quantity) == (Side.BUY, 0.25)
    assert not by["BTCUSDT-PERP"].reduce_only
    assert (by["BTCUSDT"].side, by["BTCUSDT"].quantity) == (Side.SELL, 0.125)  # all, no more


# --- the carry book on real funding ------------------------------------------------------


def test_pnl_split_funding_fees_and_the_near_zero_delta(full_run, funding):
    market, run = full_run
    panel = market.panel
    sub = run.sub
    assert not run.liquidations and run.rejections.empty
    assert set(run.funding["subaccount"]) == {"carry"}
    # Funding: the ledger's account, the broker's reports and a computation by hand agree.
    by_hand = sum(
        booked_by_hand(panel, p, binance_rates(funding, s), run.quantities[p])
        for s, p in market.pairs
    )
    reported = run.funding.groupby("timestamp")["amount"].sum()
    pd.testing.assert_series_equal(
        reported.reindex(by_hand.index, fill_value=0.0), by_hand, check_names=False, rtol=1e-9
    )
    assert run.funding_received == pytest.approx(float(by_hand.sum()), rel=1e-9)
    assert sub.funding_pnl == pytest.approx(run.funding_received, rel=1e-12)
    # Fees: 10 bps of every fill's notional, in USDT.
    fees = float((run.trades["quantity"] * run.trades["price"]).sum() * 0.001)
    assert run.fees_paid == pytest.approx(fees, rel=1e-12)
    # Equity bar by bar: funding - fees + what the net quantity (spot + perp) of each pair
    # earned, from the last close to the open (held before the fills) and from the open to
    # the close (held after them). With basis zero only the hedge's mismatch is left.
    idx = run.equity.index
    o, c = panel.open.reindex(idx), panel.close.reindex(idx)
    q = run.quantities
    trading = (q.shift(1) * (o - c.shift(1))).sum(axis=1) + (q * (c - o)).sum(axis=1)
    trading.iloc[0] = 0.0
    funding_bar = run.funding.groupby("timestamp")["amount"].sum().reindex(idx, fill_value=0)
    trade_fees = run.trades.assign(f=run.trades["fee"]).groupby("timestamp")["f"].sum()
    fee_bar = trade_fees.reindex(idx, fill_value=0.0)
    explained = funding_bar - fee_bar + trading
    np.testing.assert_allclose(run.equity.diff().iloc[1:], explained.iloc[1:], atol=1e-6)
    change = float(run.equity.iloc[-1] - run.equity.iloc[0])
    # The delta: equity change = funding - fees to within 0.5 % of the initial 100,000.
    residual = change - (run.funding_received - run.fees_paid)
    assert residual == pytest.approx(float(trading.sum()), abs=1e-6)
    assert abs(residual) < 500.0
    # Each pair's legs stay within 1 % of each other in quantity whenever held.
    for s, p in market.pairs:
        held = q[s] > 0
        gap = (q[s][held] + q[p][held]).abs() / q[s][held]
        assert gap.max() < 0.01
    assert run.funding_received > 5 * run.fees_paid > 0


def test_under_the_default_limits_the_guard_scales_the_book_and_the_pairs_stay_hedged(
    spot, funding
):
    # Gross capped at 1x: when a pair enters while the other's weights have drifted up,
    # the guard scales every target (both legs alike) and cuts at the fill what the
    # fees would put above the cap; the legs stay within the hedge tolerance.
    market = prepare_carry_market(spot, PAIRS, funding)
    run = engine_run(build_carry(symbols=PAIRS), market, limits=Limits())
    scaled = [
        g for d in run.decisions for g in d.get("guard", ()) if g["rule"] == "max_gross_leverage"
    ]
    assert scaled and all(g["after"] == 1.0 for g in scaled)
    cuts = [g for d in run.decisions for g in d.get("fill_guard", ())]
    assert cuts and all(g["after"] >= 0.995 * g["before"] for g in cuts)
    assert set(run.rejections["reason"]) == {"cut at the fill by max_gross_leverage"}
    for s, p in market.pairs:
        held = run.quantities[s] > 0
        gap = (run.quantities[s][held] + run.quantities[p][held]).abs() / run.quantities[s][held]
        assert gap.max() < 0.01
    codes = {r["code"] for d in run.decisions for r in d["reasons"]}
    assert not codes & {"leg_mismatch", "carry_breaker"}
    assert run.funding_received == pytest.approx(run.sub.funding_pnl, rel=1e-12)
    assert run.funding_received > 5 * run.fees_paid > 0


def test_reasons_carry_the_rates_and_the_basis_zero_flag(full_run):
    _, run = full_run
    first = run.decisions[0]["reasons"][0]
    assert first["code"] == "funding" and "basis zero" in first["message"]
    assert first["values"]["basis_zero"] is True
    assert set(first["values"]["apr"]) == set(PAIRS)
    # Bar 0 closes with 4 rates known, fewer than the window's 21: no funding data, flat.
    (unknown,) = [r for r in run.decisions[0]["reasons"] if r["code"] == "no_funding"]
    assert unknown["values"]["pairs"] == list(PAIRS) and "no funding data" in unknown["message"]
    assert run.decisions[0]["action"] == "hold"
    codes = {r["code"] for d in run.decisions for r in d["reasons"]}
    assert {"carry_target", "carry_trade", "carry_reset", "carry_restrike"} <= codes
    assert not codes & {"leg_mismatch", "carry_breaker"}


@pytest.mark.parametrize("cut", ["2020-03-12", "2021-02-10", "2021-05-19", "2022-06-13"])
def test_no_lookahead_truncating_after_t_changes_no_decision_up_to_t(full_run, spot, funding, cut):
    _, full = full_run
    t = pd.Timestamp(cut, tz="UTC")
    # Bars to t + 1 (so that bar t decides) and rates stamped at or before t's close.
    short_spot = spot.slice(end=t + DAY)
    short_funding = funding[funding["timestamp"] <= t + DAY]
    market = prepare_carry_market(short_spot, PAIRS, short_funding)
    run = engine_run(build_carry(symbols=PAIRS), market)
    mine = [d for d in run.decisions if d["timestamp"] <= t]
    theirs = [d for d in full.decisions if d["timestamp"] <= t]
    assert len(mine) == len(theirs) == (t - spot.index[0]) // DAY + 1
    assert json.dumps(mine, default=str) == json.dumps(theirs, default=str)


# --- the leg breaker ----------------------------------------------------------------------


def perp_bars_with(spot: Panel, symbol: str, **changes: tuple[str, str, float]) -> Panel:
    """The spot bars of ``symbol`` as perpetual bars, with ``field=(from, to, value)``
    set on those days (``high`` as a multiple of the open)."""
    frames = {name: frame[[symbol]].copy() for name, frame in spot.frames().items()}
    for name, (start, end, value) in changes.items():
        rows = (frames[name].index >= start) & (frames[name].index <= end)
        if name == "high":
            frames[name].loc[rows, symbol] = frames["open"].loc[rows, symbol] * value
        else:
            frames[name].loc[rows, symbol] = value
    return Panel(**frames, timeframe=spot.timeframe)


def codes_of(decision) -> list[str]:
    return [r["code"] for r in decision["reasons"]]


def test_breaker_halts_a_pair_whose_spot_leg_never_fills(spot, funding):
    # The spot market trades nothing from 2021-01-20 to 02-28 (zero quote volume) while
    # the perpetual trades as usual: the broker's volume cap fills none of the spot buy
    # ("no volume in the bar", the next-bar order expires) and the short fills alone.
    # (The other way round the broker also holds the spot buy back: it counts the
    # perpetual's unfilled sell as cash the plan's buys were waiting for.)
    real = spot.select(["BTCUSDT"]).slice("2021-01-15", "2021-12-31")
    btc = perp_bars_with(real, "BTCUSDT", quote_volume=("2021-01-20", "2021-02-28", 0.0))
    market = prepare_carry_market(btc, ["BTCUSDT"], funding, perp_bars=real)
    assert market.basis_zero == ()
    strategy = build_carry({"max_mismatch_bars": 3}, symbols=("BTCUSDT",), basis_zero=False)
    run = engine_run(strategy, market, start="2021-01-19")
    assert len(run.rejections) and all("no volume" in r for r in run.rejections["reason"])
    seq = [(d["timestamp"].strftime("%m-%d"), codes_of(d)[-1]) for d in run.decisions[:8]]
    # 01-19 enters; 01-20 the short filled alone: mismatch 1, re-hedged to the smaller
    # leg (none: the short is bought back); 01-21 enters again; ... the third trips it.
    assert seq == [
        ("01-19", "carry_trade"),
        ("01-20", "leg_mismatch"),
        ("01-21", "carry_trade"),
        ("01-22", "leg_mismatch"),
        ("01-23", "carry_trade"),
        ("01-24", "carry_breaker"),
        ("01-25", "carry_halted"),
        ("01-26", "carry_halted"),
    ]
    breaker = next(r for d in run.decisions for r in d["reasons"] if r["code"] == "carry_breaker")
    assert breaker["values"]["decisions"] == 3 and breaker["values"]["spot_qty"] == 0
    assert breaker["values"]["perp_qty"] < 0
    # Halted until the trailing funding falls to exit_apr (0): then re-armed, and a new
    # entry needs it above enter_apr (8 %) again.
    rearm = next(d for d in run.decisions if "carry_rearmed" in codes_of(d))
    apr = funding_feature(market.panel, market.funding)[:, 0]
    idx = market.panel.index
    assert apr[idx.get_loc(rearm["timestamp"])] <= 0
    assert (apr[(idx >= "2021-01-25") & (idx < rearm["timestamp"])] > 0).all()
    q = run.quantities.loc[pd.Timestamp("2021-01-25", tz="UTC") : rearm["timestamp"]]
    assert (q == 0).all().all()  # both legs closed while halted
    trades = run.trades
    between = trades[
        (trades["timestamp"] > "2021-01-25") & (trades["timestamp"] <= rearm["timestamp"])
    ]
    assert between.empty
    later = [d for d in run.decisions if d["timestamp"] > rearm["timestamp"]]
    entry = next(d for d in later if d["action"] == "carry")
    entry_apr = next(r for r in entry["reasons"] if r["code"] == "funding")["values"]["apr"]
    assert entry_apr["BTCUSDT"] > 0.08
    # The state says halted at the breaker and re-armed after; it survives JSON.
    state = json.loads(json.dumps(strategy.state()))
    fresh = build_carry({"max_mismatch_bars": 3}, symbols=("BTCUSDT",))
    fresh.reset(tuple(market.panel.symbols), 365.0)
    fresh.restore(state)
    assert fresh.state() == strategy.state()


def test_a_partly_filled_spot_leg_is_rehedged_to_the_smaller_leg(spot, funding):
    # On 01-20 the spot market trades 200,000 USDT: the 10 % volume cap fills 20,000 of
    # the 47,500 spot buy; the short fills whole. The next decision buys the short back
    # to the spot's quantity, and the pair is hedged from then on (no breaker).
    real = spot.select(["BTCUSDT"]).slice("2021-01-15", "2021-02-15")
    btc = perp_bars_with(real, "BTCUSDT", quote_volume=("2021-01-20", "2021-01-20", 200_000.0))
    market = prepare_carry_market(btc, ["BTCUSDT"], funding, perp_bars=real)
    run = engine_run(build_carry(symbols=("BTCUSDT",)), market, start="2021-01-19")
    q = run.quantities
    day1 = q.loc["2021-01-20"]
    open_ = market.panel.open.loc["2021-01-20", "BTCUSDT"]
    assert day1["BTCUSDT"] == pytest.approx(20_000.0 / open_, rel=1e-12)
    assert -day1["BTCUSDT-PERP"] > 2 * day1["BTCUSDT"]
    assert codes_of(run.decisions[1])[-1] == "leg_mismatch"
    day2 = q.loc["2021-01-21"]
    assert -day2["BTCUSDT-PERP"] == pytest.approx(day2["BTCUSDT"], rel=1e-12)
    assert day2["BTCUSDT"] == day1["BTCUSDT"]
    codes = {c for d in run.decisions[2:] for c in codes_of(d)}
    assert not codes & {"leg_mismatch", "carry_breaker"}


# --- the short leg's liquidation ------------------------------------------------------------


def short_margin_by_hand(run, market, funding, *, leverage: float, until: str = "2021-02-01"):
    """The BTC short's first fill (quantity, entry) and its isolated margin at ``until``
    by hand: ``q * entry / leverage`` plus every funding payment received from the fill
    bar through ``until`` (3 events of that day come before the range check)."""
    (opened,) = run.trades[run.trades["symbol"] == "BTCUSDT-PERP"].head(1).itertuples()
    q, entry = opened.quantity, opened.price
    panel = market.panel
    held = pd.Series(q, index=panel.index).where(panel.index <= until, 0.0)
    held[panel.index < opened.timestamp] = 0.0
    received = booked_by_hand(panel, "BTCUSDT-PERP", binance_rates(funding, "BTCUSDT"), -held)
    return q, entry, q * entry / leverage + float(received.sum())


def test_a_squeeze_through_the_shorts_liquidation_price_is_booked_as_the_formula_says(
    spot, funding
):
    # The perpetual's high on 2021-02-01 is 2.5 x its open (a squeeze on the perp alone;
    # open and close as spot): the 1x short is liquidated at its liquidation price.
    btc = spot.select(["BTCUSDT"]).slice("2021-01-15", "2021-02-10")
    perp = perp_bars_with(btc, "BTCUSDT", high=("2021-02-01", "2021-02-01", 2.5))
    market = prepare_carry_market(btc, ["BTCUSDT"], funding, perp_bars=perp)
    run = engine_run(build_carry(symbols=("BTCUSDT",)), market, start="2021-01-19")
    q, entry, margin = short_margin_by_hand(run, market, funding, leverage=1.0)
    panel = market.panel
    # Binance's isolated formula for a short: margin + q (entry - P) = q P mmr - cum; at
    # about twice the entry the notional is in BTC's 50k-500k bracket (0.5 %, cum 50).
    mmr, cum = 0.005, 50.0
    liq = (margin + cum + q * entry) / (q * (1 + mmr))
    assert 50_000 < q * liq <= 500_000
    bar = panel.index.get_loc(pd.Timestamp("2021-02-01", tz="UTC"))
    assert panel.open["BTCUSDT-PERP"].iloc[bar] < liq <= panel.high["BTCUSDT-PERP"].iloc[bar]
    (event,) = run.liquidations
    assert event.timestamp == pd.Timestamp("2021-02-01", tz="UTC")
    assert event.price == pytest.approx(liq, rel=1e-12)
    assert event.quantity == -q
    assert event.realized_pnl == pytest.approx(-q * (liq - entry), rel=1e-12)
    # What is forfeited is the maintenance margin at the liquidation price.
    assert event.margin_forfeited == pytest.approx(q * liq * mmr - cum, rel=1e-9)
    sub = run.sub
    assert sub.liquidation_losses == pytest.approx(event.margin_forfeited, rel=1e-12)
    # The strategy sees the spot leg alone at that close and sells it.
    after = next(d for d in run.decisions if d["timestamp"] == event.timestamp)
    assert "leg_mismatch" in codes_of(after)
    assert run.quantities.loc["2021-02-02", "BTCUSDT"] == 0
