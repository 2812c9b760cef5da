import numpy as np
import pandas as pd
import pytest

from tests.conftest import synthetic_bars
from trimtab.data import panel_from_long
from trimtab.domain.decisions import Decision, Reason
from trimtab.engine.backtest import Backtest, BacktestConfig
from trimtab.engine.context import MarketContext
from trimtab.execution.costs import CostModel
from trimtab.guard.limits import Limits
from trimtab.guard.safety import SafetyLayer
from trimtab.policy import EqualWeight, make_policy
from trimtab.policy.policies import StatelessPolicy


def run(panel, policy, costs=None, **ctx_kw):
    ctx = MarketContext.build(panel, **ctx_kw)
    return Backtest(ctx, policy, BacktestConfig(costs=costs or CostModel())).run()


def test_btc_hold_without_costs_tracks_btc_exactly(daily_panel):
    result = run(
        daily_panel,
        make_policy("btc-hold", "BTCUSDT"),
        CostModel.free(),
        start="2019-01-01",
        end="2023-12-31",
    )
    btc = daily_panel.close["BTCUSDT"].loc[result.equity.index]
    opens = daily_panel.open["BTCUSDT"].loc[result.equity.index]
    # Bought with all the cash at the open of the second bar, then held.
    assert result.equity.iloc[0] == 100_000
    assert result.equity.iloc[1] == pytest.approx(100_000 / opens.iloc[1] * btc.iloc[1], rel=1e-12)
    ratio = (result.equity / btc).iloc[1:]
    assert np.allclose(ratio, ratio.iloc[0], rtol=1e-12, atol=0)
    assert len(result.trades) == 1


def test_decisions_at_close_execute_at_next_open(daily_panel):
    panel = daily_panel.select(["BTCUSDT", "ETHUSDT", "BNBUSDT"]).slice("2021-01-01", "2021-12-31")
    result = run(panel, EqualWeight("monthly"))
    decided = {d["id"]: pd.Timestamp(d["timestamp"]) for d in result.decisions if "orders" in d}
    assert len(decided) == 12
    for _, trade in result.trades.iterrows():
        assert trade["timestamp"] == decided[trade["decision_id"]] + pd.Timedelta("1D")
    rebalance_days = sorted(
        {pd.Timestamp(d["timestamp"]).day for d in result.decisions if d["action"] == "rebalance"}
    )
    assert rebalance_days == [1]
    # Market buys fill at the open plus slippage, never at the decision bar's close.
    first = result.trades.iloc[0]
    assert first["price"] > panel.open.loc[first["timestamp"], first["symbol"]]


BARS_SPREAD = CostModel(spread="bars")


@pytest.mark.parametrize(
    "policy, costs",
    [
        (lambda: make_policy("managed"), None),
        # The cost-aware rule with spreads estimated from bars, in its costs and fills.
        (
            lambda: make_policy("equal-weight", rebalance="cost-aware", costs=BARS_SPREAD),
            BARS_SPREAD,
        ),
    ],
    ids=["managed", "cost-aware-bars-spread"],
)
def test_truncating_the_data_changes_nothing_before_the_cut(daily_panel, policy, costs):
    """No lookahead: running on data that ends at t gives the same run up to t."""
    cut = pd.Timestamp("2021-06-15", tz="UTC")
    # Two quarters past the cut are enough future to show a look ahead, at a fraction of
    # the run to the data's end (2023).
    longer = daily_panel.slice(end=cut + pd.Timedelta(days=183))
    full = run(longer, policy(), costs, start="2020-01-01")
    short = run(daily_panel.slice(end=cut), policy(), costs, start="2020-01-01")
    pd.testing.assert_series_equal(full.equity.loc[:cut], short.equity)
    pd.testing.assert_frame_equal(full.weights.loc[:cut, short.weights.columns], short.weights)
    full_trades = full.trades[full.trades["timestamp"] <= cut].reset_index(drop=True)
    pd.testing.assert_frame_equal(full_trades, short.trades)
    # The last bar of the short run decides nothing; every earlier decision matches.
    n = len(short.decisions)
    # Order ids come from a process-wide counter: the two runs number them differently.
    strip = lambda ds: [  # noqa: E731
        {
            k: [{f: x for f, x in e.items() if f != "order"} for e in v] if k == "not_filled" else v
            for k, v in d.items()
            if k != "orders"
        }
        for d in ds
    ]
    assert strip(full.decisions[:n]) == strip(short.decisions)


def test_delisted_assets_are_sold_and_never_forward_filled(daily_panel):
    panel = daily_panel.select(["BTCUSDT", "ARBUSD"]).slice("2023-01-01")
    result = run(panel, make_policy("equal-hold"))
    sells = result.trades[(result.trades["symbol"] == "ARBUSD") & (result.trades["side"] == "sell")]
    assert len(sells) == 1
    assert sells.iloc[0]["timestamp"] == pd.Timestamp("2023-10-21", tz="UTC")
    assert sells.iloc[0]["price"] == panel.close.loc[pd.Timestamp("2023-10-20", tz="UTC"), "ARBUSD"]
    assert (result.weights.loc["2023-10-21":, "ARBUSD"] == 0).all()


class _Hostile(StatelessPolicy):
    name = "hostile"

    def decide(self, obs, assessment):
        targets = np.full(len(obs.symbols), 0.5)
        targets[0] = np.nan if obs.step % 2 else 3.0
        return Decision.rebalance(targets, Reason("test", "hostile targets"))


def test_guard_rejects_non_finite_and_scales_oversized_targets(make_panel):
    panel = make_panel({"AAAUSDT": [100.0] * 6, "BBBUSDT": [50.0] * 6})
    result = run(panel, _Hostile())
    rejected = [d for d in result.decisions if d["action"] == "rejected"]
    scaled = [d for d in result.decisions if d["action"] == "rebalance"]
    assert rejected and all(d["guard"][0]["rule"] == "non_finite" for d in rejected)
    assert all("orders" not in d for d in rejected)
    # 3.0 in one asset: cut to the asset cap, then the book to the gross cap.
    assert scaled and [g["rule"] for g in scaled[0]["guard"]] == [
        "max_asset_weight",
        "max_gross_leverage",
    ]
    assert sum(scaled[0]["targets"].values()) == pytest.approx(1.0)
    assert (result.weights.sum(axis=1) <= 1 + 1e-9).all()


def test_equity_identity_and_costs_reduce_returns(daily_panel):
    panel = daily_panel.select(["BTCUSDT", "ETHUSDT", "XRPUSDT", "ADAUSDT"]).slice(
        "2019-01-01", "2020-12-31"
    )
    free = run(panel, EqualWeight("monthly"), CostModel.free())
    costly = run(panel, EqualWeight("monthly"), CostModel(taker_fee_bps=50))
    assert costly.equity.iloc[-1] < free.equity.iloc[-1]
    assert costly.fees_paid == pytest.approx(costly.trades["fee_quote"].sum())
    sub = costly.account.subaccount("main")
    marks = {s: float(panel.close[s].iloc[-1]) for s in panel.symbols}
    assert sub.equity(marks) == pytest.approx(costly.equity.iloc[-1], rel=1e-12)
    assert abs(sub.identity_gap(marks)) < 1e-6


class _Script(StatelessPolicy):
    """Targets by step (the last one repeats)."""

    name = "script"

    def __init__(self, *rows):
        self.rows = rows

    def decide(self, obs, assessment):
        row = self.rows[min(obs.step, len(self.rows) - 1)]
        return Decision.rebalance(np.array(row, dtype=float), Reason("test", "script"))


def test_a_sell_without_a_bar_expires_and_its_buys_wait_for_it(make_panel):
    # 50k in BBB, 50k cash; then the plan swaps BBB for AAA (sell 50k, buy 50k) while BBB
    # has no bar for three days. Before: the AAA buy spent the cash the plan meant to keep
    # on day 3, and a new BBB sell queued up every day while the old ones waited.
    nan = float("nan")
    panel = make_panel(
        {"AAAUSDT": [100.0] * 8, "BBBUSDT": [50.0, 50.0, 50.0, nan, nan, nan, 50.0, 50.0]}
    )
    result = run(panel, _Script((0, 0.5), (0, 0.5), (0.5, 0)), CostModel.free())
    trades = result.trades
    (sell,) = trades[(trades["symbol"] == "BBBUSDT") & (trades["side"] == "sell")].itertuples()
    assert sell.timestamp == panel.index[6] and sell.quantity == pytest.approx(1_000)
    buys = trades[trades["symbol"] == "AAAUSDT"]
    assert (buys["timestamp"] >= sell.timestamp).all()
    assert buys["quantity"].sum() * 100 == pytest.approx(50_000)
    expired = result.rejections[result.rejections["kind"] == "expired"]
    assert set(expired["timestamp"]) == set(panel.index[3:6])
    assert expired["reason"].str.contains("no bar for BBBUSDT").any()
    assert expired["reason"].str.contains("sells that fund it").any()
    journaled = [e for d in result.decisions for e in d.get("not_filled", [])]
    assert len(journaled) == len(result.rejections)
    assert result.equity.iloc[-1] == pytest.approx(100_000)


def _gap_down_bars():
    # AAA closes at 100 on day 1 and opens day 2 at 20 (a gap down); BBB is flat at 50.
    bars = synthetic_bars({"AAAUSDT": [100.0, 100.0, 20.0, 20.0], "BBBUSDT": [50.0] * 4})
    day2 = (bars["symbol"] == "AAAUSDT") & (bars["timestamp"] == bars["timestamp"].unique()[2])
    bars.loc[day2, ["open", "high", "low"]] = [20.0, 20.2, 19.8]
    return panel_from_long(bars)


def test_a_buy_is_checked_again_at_the_price_it_fills_at():
    # Day 1: 500 AAA (50k) and 50k cash; the plan buys 50k of BBB to reach 50/50 under
    # max_asset_weight 50%. Day 2 opens with AAA at 20: equity at the fill is
    # 50k + 500 * 20 = 60k, so BBB may be at most 30k (no costs): 600 BBB at 50.
    panel = _gap_down_bars()
    ctx = MarketContext.build(panel)
    safety = SafetyLayer(limits=Limits(max_asset_weight=0.5))
    result = Backtest(
        ctx, _Script((0.5, 0), (0.5, 0.5)), BacktestConfig(costs=CostModel.free()), safety=safety
    ).run()
    trades = result.trades
    bbb = trades[(trades["symbol"] == "BBBUSDT") & (trades["timestamp"] == panel.index[2])]
    (fill,) = bbb.itertuples()
    assert fill.timestamp == panel.index[2]
    assert fill.quantity * fill.price == pytest.approx(30_000, rel=1e-9)
    assert "scaled at the fill by max_asset_weight" in fill.reason
    record = result.decisions[fill.decision_id]
    assert [g["rule"] for g in record["fill_guard"]] == ["max_asset_weight"]
    (left,) = record["not_filled"]
    assert left["kind"] == "rejected" and "max_asset_weight" in left["reason"]
    assert result.weights.loc[panel.index[2], "BBBUSDT"] == pytest.approx(0.5, rel=1e-9)
