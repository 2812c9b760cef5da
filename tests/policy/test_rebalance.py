import numpy as np
import pandas as pd
import pytest

from trimtab.analytics import tracking_error
from trimtab.policy.rebalance import (
    CostAwareSettings,
    cost_aware_rule,
    no_trade_bands,
    parse_rule,
    threshold_rule,
)


def test_parse_rule_accepts_the_documented_forms_and_names_mistakes():
    assert parse_rule("calendar:weekly") == ("calendar", "weekly")
    assert parse_rule("threshold:0.05") == ("threshold", 0.05)
    assert parse_rule("cost-aware") == ("cost-aware", None)
    for bad in ("calendar:hourly", "threshold:5", "threshold:x", "cost-aware:1", "yolo"):
        with pytest.raises(ValueError, match="bad --rebalance"):
            parse_rule(bad)


def test_threshold_rule_trades_all_the_way_only_past_the_threshold():
    target = np.array([0.5, 0.5])
    assert threshold_rule(np.array([0.53, 0.47]), target, 0.05).weights is None
    choice = threshold_rule(np.array([0.58, 0.42]), target, 0.05)
    assert choice.weights is target and "8.0%" in choice.reason


def test_bands_follow_leland_scaling():
    s = CostAwareSettings(band_scale=2.0, min_band=0.0)
    # 2 * cost^(1/3) * vol^(2/3): 8 times the cost doubles the band, 8 times the vol
    # quadruples it.
    b = no_trade_bands(np.array([0.001, 0.008, 0.001]), np.array([0.02, 0.02, 0.16]), s)
    assert b[0] == pytest.approx(2 * 0.1 * 0.02 ** (2 / 3))
    assert b[1] / b[0] == pytest.approx(2.0)
    assert b[2] / b[0] == pytest.approx(4.0)


def test_cost_aware_trades_to_the_band_edge_only_when_worth_it():
    s = CostAwareSettings(band_scale=1.0, min_band=0.02, risk_aversion=10, horizon=30)
    target = np.array([0.25, 0.25, 0.25, 0.25])
    costs = np.full(4, 0.001)
    vols = np.full(4, 0.01)  # bands = max(0.1 * 0.01^(2/3), 0.02) = 0.02
    cov = np.diag(vols**2) * 0 + np.diag(np.full(4, 0.04**2))
    current = np.array([0.35, 0.15, 0.26, 0.24])
    choice = cost_aware_rule(current, target, costs, vols, cov, s)
    # Assets 0 and 1 are outside their 2 % bands and go to the edge; 2 and 3 stay.
    assert choice.weights is not None
    np.testing.assert_allclose(choice.weights, [0.27, 0.23, 0.26, 0.24])
    assert choice.traded == (0, 1)
    assert choice.cost == pytest.approx((0.08 + 0.08) * 0.001)
    before = 0.1**2 * 0.04**2 * 2 + 0.01**2 * 0.04**2 * 2
    after = 0.02**2 * 0.04**2 * 2 + 0.01**2 * 0.04**2 * 2
    assert choice.benefit == pytest.approx(10 * 0.5 * (before - after) * 30)
    # The same drift in near-riskless assets is not worth paying for.
    quiet = cost_aware_rule(current, target, costs, vols, cov * 1e-4, s)
    assert quiet.weights is None and "bps of risk reduction" in quiet.reason


def test_cost_aware_follows_universe_changes_in_full():
    s = CostAwareSettings(min_band=0.05)
    current = np.array([0.5, 0.5, 0.0])
    target = np.array([0.5, 0.0, 0.5])  # asset 1 leaves, asset 2 enters
    choice = cost_aware_rule(
        current, target, np.full(3, 0.001), np.full(3, 0.03), np.eye(3) * 0.03**2, s
    )
    np.testing.assert_allclose(choice.weights, [0.5, 0.0, 0.5])


def test_tracking_error_against_a_hand_computation():
    idx = pd.date_range("2021-01-01", periods=4, freq="1D", tz="UTC")
    close = pd.DataFrame({"A": [100, 110, 99, 99], "B": [50, 50, 55, 60.5]}, index=idx)
    targets = pd.DataFrame({"A": [0.5] * 4, "B": [0.5] * 4}, index=idx)
    equity = pd.Series([1000, 1040, 1010, 1050], index=idx, dtype=float)
    # Target returns: 0.5*0.10 + 0 = 0.05; 0.5*(-0.10) + 0.5*0.10 = 0; 0 + 0.5*0.10 = 0.05.
    run = equity.pct_change().iloc[1:].to_numpy()
    active = run - np.array([0.05, 0.0, 0.05])
    expected = np.std(active, ddof=1) * np.sqrt(365)
    assert tracking_error(equity, targets, close, 365) == pytest.approx(expected)
