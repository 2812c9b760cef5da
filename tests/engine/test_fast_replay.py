"""The broker's array path (``trimtab.execution.vector_fill``) against its event path.

Each case runs the same target replay through ``Backtest`` twice on the 34-coin daily
file, with ``vector_fills`` on and off, and asserts the two runs are the same to the
bit: every trade row (symbol, side, quantity, price, fee, reason), the equity, weights
and ledger, the decision records, the rejections, the account's balances and positions,
and the guard's counters. Each case also counts the bars the array path took, so that
a case meant to exercise it cannot pass by falling back everywhere, and a case where a
limit binds must fall back.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import trimtab.execution.vector_fill as vector_fill
from tests.conftest import DAILY_FILE
from trimtab.data import load_panel
from trimtab.data.calendar import calendar_mask
from trimtab.domain.instruments import spot
from trimtab.engine.backtest import Backtest, BacktestConfig, BacktestResult
from trimtab.engine.context import MarketContext
from trimtab.execution.costs import CostModel
from trimtab.guard.limits import Limits
from trimtab.guard.safety import SafetyLayer
from trimtab.policy import TargetWeights

FEES = CostModel(taker_fee_bps=10, half_spread_bps=0, impact_bps_at_1pct=0)


@pytest.fixture(scope="module")
def market():
    panel = load_panel(DAILY_FILE)
    return panel, MarketContext.build(panel)


@pytest.fixture(scope="module")
def later(market):
    """The same market traded from 2021 (1,095 bars): the random-target cases, which
    fill on nearly every bar, need no more to reach every branch they test."""
    panel, _ = market
    return panel, MarketContext.build(panel, start="2021-01-01")


def equal_targets(panel, frequency: str) -> pd.DataFrame:
    """Equal weight across listed assets on the first bar of each period, NaN elsewhere
    (as ``bench/bench_speed.py`` replays)."""
    live = panel.live & panel.has_bar
    weights = live.div(live.sum(axis=1), axis=0).fillna(0.0)
    mask = calendar_mask(panel.index, frequency)
    return weights.where(pd.Series(mask, index=panel.index), np.nan)


def drifting_targets(panel, seed: int = 0) -> pd.DataFrame:
    """Random long-only weights (some zero: full exits) on every bar, summing to 0.3-1."""
    rng = np.random.default_rng(seed)
    live = (panel.live & panel.has_bar).to_numpy()
    raw = rng.random(live.shape) * live * (rng.random(live.shape) > 0.3)
    total = raw.sum(axis=1, keepdims=True)
    scale = rng.uniform(0.3, 1.0, (len(raw), 1))
    weights = np.divide(raw, total, out=np.zeros_like(raw), where=total > 0) * scale
    return pd.DataFrame(weights, index=panel.index, columns=panel.close.columns)


def run_both(ctx, targets, config, monkeypatch, *, limits=None, instruments=None):
    """The run with the array path and the run without it, with their guards and the
    number of bars the array path filled (and refused)."""
    taken = [0, 0]
    real = vector_fill.fill_bar

    def counted(*args):
        done = real(*args)
        taken[bool(done)] += 1
        return done

    monkeypatch.setattr(vector_fill, "fill_bar", counted)
    out = []
    for vector in (True, False):
        safety = SafetyLayer.limits_only(limits)
        result = Backtest(
            ctx,
            TargetWeights(targets),
            replace(config, vector_fills=vector),
            safety=safety,
            instruments=instruments,
        ).run()
        out.append((result, safety))
    (fast, fast_guard), (event, event_guard) = out
    return fast, event, fast_guard, event_guard, taken


def assert_same(fast: BacktestResult, event: BacktestResult, fast_guard, event_guard) -> None:
    pd.testing.assert_frame_equal(fast.trades, event.trades, check_exact=True)
    pd.testing.assert_series_equal(fast.equity, event.equity, check_exact=True)
    pd.testing.assert_frame_equal(fast.weights, event.weights, check_exact=True)
    pd.testing.assert_frame_equal(fast.rejections, event.rejections, check_exact=True)
    pd.testing.assert_frame_equal(fast.ledger, event.ledger, check_exact=True)
    assert fast.decisions == event.decisions
    assert json.dumps(fast.account.state(), sort_keys=True) == json.dumps(
        event.account.state(), sort_keys=True
    )
    for name, sub in fast.account.subaccounts.items():
        other = event.account.subaccounts[name]
        assert list(sub.positions) == list(other.positions)  # the ledger's order too
        assert sub.fees_by_currency == other.fees_by_currency
        assert sub.realized_pnl == other.realized_pnl
    # NaN is not equal to itself: compared as JSON, where it is written the same.
    assert json.dumps(fast_guard.state(), sort_keys=True) == json.dumps(
        event_guard.state(), sort_keys=True
    )


def test_dense_replay_with_fees(market, monkeypatch):
    panel, ctx = market
    config = BacktestConfig(costs=replace(FEES, max_volume_share=None), record_holds=False)
    fast, event, fg, eg, taken = run_both(ctx, equal_targets(panel, "daily"), config, monkeypatch)
    assert_same(fast, event, fg, eg)
    assert len(fast.trades) > 50_000
    assert taken[1] > 2_000  # nearly every bar filled as arrays (some fall back)
    # The buys of an equal-weight book spend all the cash: most bars clamp the last buys
    # to the cash left and note it in the fill's reason.
    assert fast.trades["reason"].str.contains("scaled to available cash").any()


def test_sparse_replay_with_slippage_and_holds_recorded(market, monkeypatch):
    panel, ctx = market
    costs = replace(CostModel(), max_volume_share=None)  # fee, half-spread and impact
    config = BacktestConfig(costs=costs, record_holds=True)
    fast, event, fg, eg, taken = run_both(ctx, equal_targets(panel, "monthly"), config, monkeypatch)
    assert_same(fast, event, fg, eg)
    assert taken[1] >= 70


def test_random_targets_with_the_volume_cap(later, monkeypatch):
    panel, ctx = later
    # 10 % of the bar's quote volume, on a book large enough for it to bind: capped
    # orders fill in part and expire with the cap as their reason.
    config = BacktestConfig(initial_cash=5e8, costs=CostModel())
    fast, event, fg, eg, taken = run_both(ctx, drifting_targets(panel), config, monkeypatch)
    assert_same(fast, event, fg, eg)
    assert fast.rejections["reason"].str.contains("volume cap").sum() > 100
    assert taken[1] > 800


def test_lot_sizes_and_minimums_that_bind(later, monkeypatch):
    panel, ctx = later
    symbols = list(panel.close.columns)
    # Whole-coin lots for the dear coins, 10-unit lots and a 200 USDT minimum elsewhere:
    # a 20,000 USDT book spread over 34 coins rounds, skips and leaves dust.
    dear = panel.close.median() > 50
    instruments = {
        s: spot(s, lot_size=1.0 if dear[s] else 10.0, min_qty=0.0, min_notional=200.0)
        for s in symbols
    }
    config = BacktestConfig(initial_cash=20_000.0, costs=CostModel(max_volume_share=None))
    targets = drifting_targets(panel, seed=1)
    fast, event, fg, eg, taken = run_both(
        ctx, targets, config, monkeypatch, instruments=instruments
    )
    assert_same(fast, event, fg, eg)
    rejected = fast.rejections["reason"]
    assert rejected.str.contains("below the minimum|rounds to zero").any()
    quantities = fast.trades["quantity"]
    assert np.allclose(quantities, np.round(quantities), atol=1e-9)  # whole lots only
    assert taken[1] > 800


def test_a_binding_limit_falls_back_to_the_event_path(market, monkeypatch):
    panel, ctx = market
    # 5 % per asset binds at the fill for an equal-weight book of fewer than 20 coins:
    # the fill guard must see every fill, so no bar takes the array path.
    limits = Limits(max_asset_weight=0.05)
    config = BacktestConfig(costs=replace(FEES, max_volume_share=None), record_holds=False)
    targets = equal_targets(panel, "weekly")
    fast, event, fg, eg, taken = run_both(ctx, targets, config, monkeypatch, limits=limits)
    assert_same(fast, event, fg, eg)
    assert taken == [taken[0], 0] and taken[0] > 0
    guarded = [d for d in fast.decisions if d.get("guard")]
    assert guarded  # the limit did bind


def test_switch_forces_the_event_path(market, monkeypatch):
    panel, ctx = market
    calls = []
    monkeypatch.setattr(vector_fill, "fill_bar", lambda *a: calls.append(1) or False)
    config = BacktestConfig(costs=FEES, vector_fills=False)
    Backtest(ctx, TargetWeights(equal_targets(panel, "monthly")), config).run()
    assert calls == []


def test_spreads_from_the_bars_with_impact(market, monkeypatch):
    panel, ctx = market
    # Each bar's half-spread estimated from the bars before it (floored at 2 bps), the
    # square-root impact, the volume cap: the slippage differs per order and per bar.
    costs = CostModel(spread="bars", half_spread_bps=2.0, impact_bps_at_1pct=25.0)
    config = BacktestConfig(initial_cash=5e7, costs=costs)
    targets = drifting_targets(panel, seed=2).iloc[::3].reindex(panel.index)
    fast, event, fg, eg, taken = run_both(ctx, targets, config, monkeypatch)
    assert_same(fast, event, fg, eg)
    assert taken[1] > 500
    slip = (
        fast.trades["price"].to_numpy()
        / panel.open.stack()
        .reindex(pd.MultiIndex.from_arrays([fast.trades["timestamp"], fast.trades["symbol"]]))
        .to_numpy()
    )
    assert len(np.unique(np.round(np.abs(slip - 1), 8))) > 1_000  # not one fixed spread


def test_fees_in_the_received_asset_take_the_event_path(market, monkeypatch):
    panel, ctx = market
    config = BacktestConfig(costs=CostModel(fee_currency="received"))
    targets = equal_targets(panel, "weekly")
    fast, event, fg, eg, taken = run_both(ctx, targets, config, monkeypatch)
    assert_same(fast, event, fg, eg)
    assert taken[1] == 0 and taken[0] > 0


def test_declared_holds_skip_the_step(market, monkeypatch):
    panel, ctx = market
    # Monthly targets, holds unrecorded, limits only: the step runs on the 77 target bars
    # alone with the fast paths, on every bar without them; the runs are the same.
    decided = {True: 0, False: 0}
    real = TargetWeights.decide
    mode = [True]

    def counted(self, obs, assessment):
        decided[mode[0]] += 1
        return real(self, obs, assessment)

    monkeypatch.setattr(TargetWeights, "decide", counted)
    targets = equal_targets(panel, "monthly")
    config = BacktestConfig(costs=FEES, record_holds=False)
    runs = []
    for vector in (True, False):
        mode[0] = vector
        safety = SafetyLayer.limits_only()
        config_v = replace(config, vector_fills=vector)
        runs.append((Backtest(ctx, TargetWeights(targets), config_v, safety=safety).run(), safety))
    (fast, fg), (event, eg) = runs
    assert_same(fast, event, fg, eg)
    assert decided[True] == int(targets.notna().any(axis=1).sum())  # target bars only
    assert decided[False] == len(panel.index) - 1  # every bar but the last
