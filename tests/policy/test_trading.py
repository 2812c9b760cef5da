"""The cost-aware trader bar by bar, on real data."""

import numpy as np
import pytest

from trimtab.engine.backtest import Backtest, BacktestConfig
from trimtab.engine.context import MarketContext
from trimtab.policy.policies import RebalancedEqualWeight
from trimtab.policy.rebalance import CostAwareSettings

COINS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "ADAUSDT", "XRPUSDT", "LTCUSDT", "DOGEUSDT", "LINKUSDT"]


@pytest.fixture(scope="module")
def bull_run(daily_panel):
    settings = CostAwareSettings(max_delay_bars=4, momentum_return=0.15)
    policy = RebalancedEqualWeight("cost-aware", settings=settings)
    ctx = MarketContext.build(daily_panel.select(COINS), start="2020-10-01", end="2021-05-31")
    return Backtest(ctx, policy, BacktestConfig()).run(), settings


def _reason(decision):
    return next(r for r in decision["reasons"] if r["code"] == "cost-aware")


def test_momentum_delay_happens_and_never_lasts_past_its_bound(bull_run):
    result, settings = bull_run
    streak = dict.fromkeys(COINS, 0)
    longest = 0
    for d in result.decisions[1:]:
        waiting = set(_reason(d)["values"].get("delayed", []))
        for s in COINS:
            streak[s] = streak[s] + 1 if s in waiting else 0
            longest = max(longest, streak[s])
    assert longest >= 1, "no trim waited in a bull market"
    assert longest <= settings.max_delay_bars


def test_every_decision_carries_its_benefit_and_cost(bull_run):
    result, _ = bull_run
    traded = [d for d in result.decisions[1:] if d["action"] == "rebalance"]
    assert traded
    for d in result.decisions[1:]:
        values = _reason(d)["values"]
        assert np.isfinite(values["benefit_bps"]) and np.isfinite(values["cost_bps"])
    for d in traded:
        values = _reason(d)["values"]
        assert values["assets"]
        assert values["cost_bps"] > 0


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_window_covariance_is_the_matrix_for_small_books_and_factored_for_large():
    from trimtab.policy.rebalance import SampleCovariance
    from trimtab.policy.trading import window_covariance

    rng = np.random.default_rng(5)
    small = rng.normal(0, 0.03, (60, 10))
    assert np.array_equal(window_covariance(small), np.cov(small, rowvar=False))
    large = rng.normal(0, 0.03, (60, 200))
    factored = window_covariance(large)
    assert isinstance(factored, SampleCovariance)
    np.testing.assert_allclose(factored.matrix(), np.cov(large, rowvar=False), atol=1e-15)
    # A broken price (an infinite or absurd return) takes the matrix path, whose
    # non-finite entries the rule counts as 0, as before.
    large[5, 3] = np.inf
    assert isinstance(window_covariance(large), np.ndarray)
    assert window_covariance(large[:2]).shape == (200, 200)
