"""The allocator: shares from the subaccounts' own returns, moves as guarded transfers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.covariance import LedoitWolf

from tests.conftest import synthetic_bars
from trimtab.data import panel_from_long
from trimtab.engine.portfolio_file import parse_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, run_portfolio
from trimtab.execution.costs import CostModel
from trimtab.strategies.allocator import (
    Allocator,
    AllocatorSettings,
    MarketState,
    Sleeve,
    shrunk_sharpe,
)


def _market(n: int) -> MarketState:
    index = pd.date_range("2021-01-01", periods=n, freq="1D", tz="UTC")
    close = np.cumprod(np.full((n, 2), 1.001), axis=0) * 100
    return MarketState(
        index=index,
        close=close,
        quote_volume=np.full((n, 2), 1e9),
        live=np.ones((n, 2), dtype=bool),
        high_vol=np.zeros(n),
        bars_per_day=1.0,
    )


def test_shrunk_sharpe_keeps_only_the_spread_beyond_sampling_error():
    rng = np.random.default_rng(3)
    # Streams with the same true Sharpe: their measured differences are noise, and the
    # shrunk ones are much closer together than the raw ones, on average.
    raw_gap, shrunk_gap = [], []
    for _ in range(200):
        same = rng.normal(0.001, 0.02, size=(365, 3))
        raw, shrunk = shrunk_sharpe(same, 365)
        center = raw.mean()
        assert np.all(np.abs(shrunk - center) <= np.abs(raw - center) + 1e-12)
        raw_gap.append(np.ptp(raw))
        shrunk_gap.append(np.ptp(shrunk))
    assert np.mean(shrunk_gap) < 0.5 * np.mean(raw_gap)
    # Ten years of two very different streams: the difference is real and mostly kept.
    far = np.column_stack([rng.normal(0.002, 0.01, 3650), rng.normal(-0.001, 0.01, 3650)])
    raw, shrunk = shrunk_sharpe(far, 365)
    assert raw[0] > 2 and raw[1] < 0
    assert abs(shrunk[0] - shrunk[1]) > 0.9 * abs(raw[0] - raw[1])


def test_equal_streams_get_risk_parity_shares_by_hand():
    """No tilt, no regime, no drawdown: the shares are risk parity on the Ledoit-Wolf
    covariance of the two streams, worked out independently here."""
    rng = np.random.default_rng(0)
    n = 200
    r = np.column_stack([rng.normal(0, 0.01, n), rng.normal(0, 0.03, n)])
    settings = AllocatorSettings(
        tilt=0,
        drawdown_penalty=0,
        regime_tilt=0,
        lookback=150,
        min_history=100,
        min_share=0,
        max_share=1,
    )
    alloc = Allocator(settings, [Sleeve("a"), Sleeve("b")], _market(n + 1))
    history = {}
    equity_now = {}
    for j, name in enumerate(("a", "b")):
        eq = 1000 * np.cumprod(1 + r[:, j])
        history[name] = (np.concatenate([[1000.0], eq[:-1]]), np.zeros(n))
        equity_now[name] = float(eq[-1])
    ts = _market(n + 1).index[n]
    record = alloc.allocate(ts, equity_now, history)
    window = r[-150:]
    cov = LedoitWolf().fit(window).covariance_
    # Two assets, any correlation: equal risk contributions w1 (cov w)_1 = w2 (cov w)_2
    # reduce to w1 s1 = w2 s2, so w is proportional to 1 / s (s: volatilities).
    w = 1 / np.sqrt(np.diag(cov))
    w /= w.sum()
    contrib = w * (cov @ w)
    assert math.isclose(contrib[0], contrib[1], rel_tol=1e-9)
    shares = np.array([record["targets"]["a"], record["targets"]["b"]])
    assert np.allclose(shares, w, atol=1e-9)
    # The low-volatility stream gets about three times the capital of the other.
    assert 2.5 < shares[0] / shares[1] < 3.5


def test_bounded_shares_sum_to_one_within_their_bounds():
    from trimtab.strategies.allocator import _bounded

    rng = np.random.default_rng(1)
    for _ in range(500):
        n = int(rng.integers(2, 8))
        raw = np.exp(rng.normal(0, 4, n))
        low = float(rng.uniform(0, 1 / n))
        high = rng.uniform(low + 0.01, 1, n)
        shares = _bounded(raw, low, high)
        if high.sum() <= 1:
            assert np.allclose(shares, high)
            continue
        assert shares.sum() == pytest.approx(1.0, abs=1e-12)
        assert (shares >= low - 1e-9).all() and (shares <= high + 1e-9).all()
        # Between the bounds, shares are proportional to raw (one scale for all).
        free = (shares > low + 1e-7) & (shares < high - 1e-7)
        if free.sum() >= 2:
            ratio = shares[free] / raw[free]
            assert np.allclose(ratio, ratio[0], rtol=1e-6)


def test_min_share_larger_than_the_whole_is_refused():
    with pytest.raises(ValueError, match="more than the whole"):
        Allocator(AllocatorSettings(min_share=0.6), [Sleeve("a"), Sleeve("b")], _market(10))


def _fading_panel(seed: int = 7):
    """FADE rises steadily for 400 days, then falls in a choppy way; KEEP rises slowly
    and steadily throughout."""
    rng = np.random.default_rng(seed)
    n = 800
    fade = np.concatenate([rng.normal(0.004, 0.01, 400), rng.normal(-0.004, 0.03, n - 400)])
    keep = rng.normal(0.0015, 0.01, n)
    closes = {
        "FADEUSDT": list(100 * np.cumprod(1 + fade)),
        "KEEPUSDT": list(100 * np.cumprod(1 + keep)),
    }
    return panel_from_long(synthetic_bars(closes, start="2020-01-01"))


PORTFOLIO = """
backtest: {start: 2020-03-01}
account:
  limits: {max_drawdown: 0.95}
  transfers: {max_transfer: 1000000, min_transfer: 10}
subaccounts:
  fading:
    strategy: trend
    symbols: [FADEUSDT]
    params: {lookbacks: [20, 60], band: 0.1}
    capital: 50000
    limits: {max_drawdown: 0.95}
    breakers: {daily_loss_limit: null, loss_streak: null}
  steady:
    strategy: trend
    symbols: [KEEPUSDT]
    params: {lookbacks: [20, 60], band: 0.1}
    capital: 50000
    limits: {max_drawdown: 0.95}
    breakers: {daily_loss_limit: null, loss_streak: null}
allocator: {every: monthly, lookback: 120, min_history: 60, band: 0.03, max_share: 0.95}
"""


def test_the_allocator_moves_capital_away_from_a_strategy_that_stops_working():
    panel = _fading_panel()
    run = run_portfolio(
        parse_portfolio(PORTFOLIO, "fading.yaml"),
        PortfolioOptions(costs=CostModel(taker_fee_bps=10, half_spread_bps=0)),
        panel=panel,
    )
    switch = panel.index[400]
    records = [r for r in run.allocations if r["strategies"]]
    before = [r for r in records if pd.Timestamp(r["timestamp"]) <= switch]
    after = [r for r in records if pd.Timestamp(r["timestamp"]) > switch + pd.Timedelta(days=90)]
    assert before and after
    share_before = before[-1]["targets"]["fading"]
    share_after = after[-1]["targets"]["fading"]
    assert share_after < 0.5 * share_before
    # Every allocation says why each share rose or fell, with its parts.
    fell = [r for r in after if r["strategies"]["fading"]["why"].startswith("fell")]
    assert fell
    parts = fell[-1]["strategies"]["fading"]
    assert set(parts["terms"]) == {"risk parity", "risk-adjusted return", "drawdown", "regime fit"}
    # Capital moved out of the fading subaccount through the transfer guard, recorded
    # with the allocator's reason.
    out = [
        t
        for t in run.transfers
        if t["from"] == "fading" and pd.Timestamp(t["timestamp"]) > switch and t["moved"] > 0
    ]
    assert out
    assert all(t["origin"] == "allocator" and "fading" in t["reason"] for t in out)
    moved = sum(t["moved"] for t in out)
    flows_in = sum(
        t["moved"]
        for t in run.transfers
        if t["to"] == "steady" and pd.Timestamp(t["timestamp"]) > switch
    )
    assert moved == pytest.approx(flows_in)
    # Conservation: the transfers net to zero across the subaccounts.
    net = {n: 0.0 for n in ("fading", "steady")}
    for t in run.transfers:
        net[t["from"]] -= t["moved"]
        net[t["to"]] += t["moved"]
    assert sum(net.values()) == pytest.approx(0.0, abs=1e-6)


def test_allocator_and_rebalance_capital_together_are_refused():
    text = PORTFOLIO + "rebalance_capital: {shares: {fading: 0.5, steady: 0.5}}\n"
    with pytest.raises(Exception, match="either allocator or rebalance_capital"):
        parse_portfolio(text, "both.yaml")


def test_unknown_allocator_subaccount_is_named():
    text = PORTFOLIO.replace(
        "allocator: {every: monthly", "allocator: {subaccounts: [fading, nope], every: monthly"
    )
    with pytest.raises(Exception, match="allocator.subaccounts: unknown subaccount 'nope'"):
        parse_portfolio(text, "bad.yaml")


def test_records_made_again_from_the_run_equal_those_made_while_it_ran():
    """A run resumed or read back from a store makes its allocation records again from
    the run's equity and transfers: the same records as the process that ran every bar."""
    from trimtab.engine.portfolio_run import portfolio_backtest, prepare_portfolio

    panel = _fading_panel()
    portfolio = parse_portfolio(PORTFOLIO, "fading.yaml")
    options = PortfolioOptions(costs=CostModel(taker_fee_bps=10, half_spread_bps=0))
    prep = prepare_portfolio(portfolio, options, panel)
    loop = portfolio_backtest(portfolio, prep, options)
    result = loop.run()
    allocator = loop.transfers.allocator
    made = list(allocator.records)
    subs = result.subaccounts
    again = allocator.replay(
        result.equity.index,
        {n: subs[n].equity.to_numpy(float) for n in allocator.names},
        {n: subs[n].flows.to_numpy(float) for n in allocator.names},
    )
    assert len(made) == len(again) > 10
    for a, b in zip(made, again, strict=True):
        assert a["timestamp"] == b["timestamp"] and a["moves"] == b["moves"]
        assert a["targets"] == pytest.approx(b["targets"], rel=1e-9, abs=1e-12)
        assert a["summary"].split(";")[0][:40] == b["summary"].split(";")[0][:40]
