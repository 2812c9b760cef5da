"""Walk-forward refits: parameters chosen on the past only, recorded as reasons."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from trimtab.engine.backtest import Backtest, BacktestConfig
from trimtab.engine.context import MarketContext
from trimtab.engine.portfolio_file import parse_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, run_portfolio
from trimtab.execution.costs import CostModel
from trimtab.strategies import build_strategy
from trimtab.strategies.base import Strategy, StrategySpec
from trimtab.strategies.parts import DriftBand, Membership
from trimtab.strategies.walkforward import WalkForward

COSTS = CostModel(taker_fee_bps=10, half_spread_bps=0)


def _walk_forward(grid=None):
    return WalkForward(
        lambda p: build_strategy("trend", p, name="trend"),
        {"lookbacks": (20, 60, 120)},
        grid or {"target_vol": (0.2, 0.6), "band": (0.05, 0.3)},
        every="quarterly",
        train=200,
    )


def _strip(decisions):
    # Order ids come from a process-wide counter: two runs number them differently.
    return [{k: v for k, v in d.items() if k not in ("orders", "not_filled")} for d in decisions]


def _members(panel):
    frame = pd.DataFrame(False, index=panel.index, columns=panel.symbols)
    frame[[s for s in ("BTCUSDT", "ETHUSDT") if s in panel.symbols]] = True
    return frame


def test_refits_see_nothing_after_the_decision_bar(daily_panel):
    """Cut the data after t: every decision up to t, refits included, is the same."""
    cut = pd.Timestamp("2021-09-30", tz="UTC")
    start = "2020-06-01"

    def run(panel):
        ctx = MarketContext.build(panel, start=start, universe=_members(panel))
        return Backtest(ctx, _walk_forward(), BacktestConfig(costs=COSTS)).run()

    # Two quarters past the cut are enough future to show a look ahead (and its refits),
    # at a fraction of the run to the data's end.
    full = run(daily_panel.slice(end=cut + pd.Timedelta(days=183)))
    short = run(daily_panel.slice(end=cut))
    n = len(short.decisions)
    assert _strip(full.decisions[:n]) == _strip(short.decisions)
    refits = [r for d in short.decisions for r in d["reasons"] if r["code"] == "walk_forward"]
    # One refit per quarter start from 2020-07-01 to 2021-07-01.
    assert len(refits) == 5
    for r in refits:
        table = r["values"]["candidates"]
        assert len(table) == 4
        best = max(table, key=lambda row: -np.inf if row["sharpe"] is None else row["sharpe"])
        assert r["values"]["chosen"] == {k: best[k] for k in ("target_vol", "band")}


@dataclass(frozen=True)
class _Half:
    """A sizer holding half the equity in each scored asset."""

    lookback: int = 0

    def size(self, view, scores, weights):
        return np.where(np.isfinite(scores), 0.5, 0.0), []


def test_the_replay_scores_a_candidate_by_its_returns_net_of_fees(daily_panel):
    """A candidate that trades back to half its equity in BTC at every close: the
    replay's returns are, bar by bar, what a hand computation from BTC's closes and the
    fee on each trade gives."""
    members = _members(daily_panel)
    members["ETHUSDT"] = False
    ctx = MarketContext.build(daily_panel, start="2021-01-01", universe=members)
    seen = {}

    class Probe(WalkForward):
        def _refit(self, obs):
            seen.setdefault("obs", obs)
            return super()._refit(obs)

    wf = Probe(
        lambda p: build_strategy("trend", p, name="trend"),
        {"lookbacks": (20,)},
        {"band": (0.1,)},
        every="quarterly",
        train=90,
        fee_bps=10.0,
    )
    Backtest(ctx, wf, BacktestConfig(costs=COSTS)).run()
    obs = seen["obs"]
    first = obs.i - 90
    half = Strategy("half", StrategySpec("test"), Membership(), [_Half()], DriftBand(band=0.0))
    out = wf.replay(half, obs, first)
    close = obs.history("close")[:, obs.symbols.index("BTCUSDT")]
    fee, w, want = 10.0 / 1e4, 0.0, []
    for s in range(first, obs.i):
        kept = 1.0 - fee * abs(0.5 - w)
        r = close[s + 1] / close[s] - 1.0
        growth = 0.5 * r
        want.append(kept * (1.0 + growth) - 1.0)
        w = 0.5 * (1.0 + r) / (1.0 + growth)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-15)
    # The first bar pays the entry fee on half the equity.
    assert out[0] < 0.5 * (close[first + 1] / close[first] - 1.0)


PORTFOLIO = """
backtest: {start: 2020-06-01, end: 2021-12-31}
subaccounts:
  trend:
    strategy: trend
    symbols: [BTCUSDT, ETHUSDT]
    params: {lookbacks: [20, 60, 120]}
    walk_forward: {every: quarterly, train: 200, grid: {target_vol: [0.2, 0.6]}}
    capital: 10000
  core:
    strategy: core
    symbols: [BTCUSDT, ETHUSDT]
    capital: 10000
"""


def test_walk_forward_in_a_portfolio_file_refits_only_when_asked(daily_panel):
    portfolio = parse_portfolio(PORTFOLIO, "wf.yaml")
    plain = run_portfolio(portfolio, PortfolioOptions(costs=COSTS), panel=daily_panel)
    walked = run_portfolio(
        portfolio, PortfolioOptions(costs=COSTS, walk_forward=True), panel=daily_panel
    )

    def refits(run, name):
        return [
            r
            for d in run.subaccounts[name].decisions
            for r in d["reasons"]
            if r["code"] == "walk_forward"
        ]

    assert refits(plain, "trend") == []
    got = refits(walked, "trend")
    assert len(got) == 6  # 2020-07-01 .. 2021-10-01
    assert {tuple(r["values"]["chosen"]) for r in got} == {("target_vol",)}
    # core takes its own default grid when the file gives none.
    assert refits(walked, "core")
    assert walked.subaccounts["trend"].policy.endswith("[walk-forward]")


def test_a_bad_grid_value_is_named():
    text = PORTFOLIO.replace("grid: {target_vol: [0.2, 0.6]}", "grid: {target_vol: [0.2, -1]}")
    with pytest.raises(Exception, match="target_vol"):
        parse_portfolio(text, "wf.yaml")
