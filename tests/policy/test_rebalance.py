import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.analytics import tracking_error
from trimtab.policy.rebalance import (
    CostAwareSettings,
    MarketInputs,
    SampleCovariance,
    cost_aware_rule,
    no_trade_bands,
    parse_rule,
    regime_bands,
    relative_volatility,
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


def _market(costs, cov, **kw):
    return MarketInputs(np.asarray(costs, float), np.asarray(cov, float), 365.0, **kw)


def test_relative_volatility_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    common = rng.normal(0, 0.03, 2000)
    r = np.column_stack(
        [
            common + rng.normal(0, 0.01, 2000),
            common + rng.normal(0, 0.02, 2000),
            rng.normal(0, 0.04, 2000),
        ]
    )
    w = np.array([0.4, 0.3, 0.2])  # 10 % cash
    got = relative_volatility(np.cov(r, rowvar=False), w, 365.0)
    for i in range(3):
        rest = np.delete(w, i) / (1 - w[i])
        active = r[:, i] - np.delete(r, i, axis=1) @ rest
        assert got[i] == pytest.approx(np.std(active, ddof=1) * np.sqrt(365), rel=1e-9)
    # The asset that moves with the others drifts least against them.
    assert got[0] < got[1] < got[2]


def test_bands_follow_leland_scaling_in_cost_weight_and_volatility():
    s = CostAwareSettings(band_scale=1.0, min_band=0.0)
    cov = np.diag([0.02, 0.02, 0.08]) ** 2  # independent assets
    w = np.array([0.2, 0.2, 0.2])
    b = no_trade_bands(w, _market([0.001, 0.008, 0.001], cov), s)
    sigma = relative_volatility(cov, w, 365.0)
    assert b[0] == pytest.approx(0.1 * 0.2 * 0.8 * sigma[0])
    assert b[1] / b[0] == pytest.approx(2.0)  # 8 times the cost doubles the band
    assert b[2] / b[0] == pytest.approx(sigma[2] / sigma[0])
    # A smaller target weight gets a proportionally narrower band: w (1 - w).
    small = no_trade_bands(np.array([0.05, 0.2, 0.2]), _market([0.001] * 3, cov), s)
    ratio = (0.05 * 0.95 * relative_volatility(cov, [0.05, 0.2, 0.2], 365)[0]) / (
        0.2 * 0.8 * sigma[0]
    )
    assert small[0] / b[0] == pytest.approx(ratio)


def test_cost_aware_trades_to_the_band_edge_only_when_worth_it():
    s = CostAwareSettings(
        min_band=0.02, band_scale=1e-6, risk_aversion=1.0, horizon_days=30, force_multiple=10
    )
    target = np.array([0.25, 0.25, 0.25, 0.25])
    cov = np.eye(4) * 0.04**2
    market = _market(np.full(4, 0.001), cov)
    current = np.array([0.35, 0.15, 0.26, 0.24])
    choice = cost_aware_rule(current, target, market, s)
    # Assets 0 and 1 are outside their 2 % bands and go to the edge; 2 and 3 stay.
    assert choice.weights is not None
    np.testing.assert_allclose(choice.weights, [0.27, 0.23, 0.26, 0.24])
    assert choice.traded == (0, 1)
    assert choice.cost == pytest.approx((0.08 + 0.08) * 0.001)
    before = (0.1**2 * 2 + 0.01**2 * 2) * 0.04**2 * 365
    after = (0.02**2 * 2 + 0.01**2 * 2) * 0.04**2 * 365
    assert choice.benefit == pytest.approx(0.5 * (before - after) * 30 / 365)
    # Half way from the edge to target, and all the way.
    half = cost_aware_rule(
        current, target, market, CostAwareSettings(**{**s.__dict__, "trade_fraction": 0.5})
    )
    np.testing.assert_allclose(half.weights, [0.26, 0.24, 0.26, 0.24])
    full = cost_aware_rule(
        current, target, market, CostAwareSettings(**{**s.__dict__, "trade_fraction": 1.0})
    )
    np.testing.assert_allclose(full.weights, [0.25, 0.25, 0.26, 0.24])
    # The same drift in near-riskless assets is not worth paying for.
    quiet = cost_aware_rule(current, target, _market(np.full(4, 0.001), cov * 1e-4), s)
    assert quiet.weights is None and "bps of risk reduction" in quiet.reason
    # Unless the drift is far outside the band: 10 % is 5 bands, past a 3-band limit.
    forced = cost_aware_rule(
        current,
        target,
        _market(np.full(4, 0.001), cov * 1e-4),
        CostAwareSettings(**{**s.__dict__, "force_multiple": 3.0}),
    )
    assert forced.weights is not None and "beyond 3x their band" in forced.reason


def test_bands_tighten_under_stress_and_widen_for_calm_winners():
    s = CostAwareSettings(min_band=0.0)
    cov = np.eye(3) * 0.03**2
    w = np.full(3, 1 / 3)
    plain = no_trade_bands(w, _market([0.002] * 3, cov), s)
    market = _market(
        [0.002] * 3, cov, vol_ratio=np.array([2.0, 0.8, 0.8]), trend=np.array([0.1, 0.1, -0.1])
    )
    bands, factor = regime_bands(plain, market, s)
    np.testing.assert_allclose(factor, [0.5, 1.5, 1.0])
    np.testing.assert_allclose(bands, plain * factor)
    # The stressed asset is traded at a drift the plain band would have tolerated.
    current = w + np.array([0.7, -0.35, -0.35]) * plain[0]
    assert cost_aware_rule(current, w, _market([0.002] * 3, cov), s).weights is None
    stressed = cost_aware_rule(
        current, w, market, CostAwareSettings(min_band=0.0, risk_aversion=100)
    )
    assert stressed.weights is not None and 0 in stressed.traded


def test_momentum_delay_is_bounded_in_time_and_drift():
    s = CostAwareSettings(
        min_band=0.02, band_scale=1e-6, max_delay_bars=3, max_delay_drift=2.0, risk_aversion=100
    )
    target = np.array([0.5, 0.5])
    cov = np.eye(2) * 0.04**2
    winner = np.array([0.53, 0.47])  # 3 % over a 2 % band

    def run(current, trend, waited):
        return cost_aware_rule(
            current,
            target,
            _market([0.001] * 2, cov, trend=np.array(trend), delayed=np.array(waited)),
            s,
        )

    waits = run(winner, [0.5, 0.0], [0, 0])
    assert waits.weights is None and waits.delayed == (0,) and "trending winner" in waits.reason
    assert run(winner, [0.5, 0.0], [3, 0]).weights is not None  # waited long enough
    assert run(winner, [0.1, 0.0], [0, 0]).weights is not None  # trend too weak
    far = run(np.array([0.55, 0.45]), [0.5, 0.0], [0, 0])  # 5 % > 2 x the 2 % band
    assert far.weights is not None and far.delayed == ()
    # An underweight asset is always bought back, however it trends.
    under = run(np.array([0.47, 0.53]), [0.5, 0.0], [0, 0])
    assert under.delayed == () and under.traded == (0, 1)


def test_cost_aware_follows_universe_changes_in_full():
    s = CostAwareSettings(min_band=0.05)
    current = np.array([0.5, 0.5, 0.0])
    target = np.array([0.5, 0.0, 0.5])  # asset 1 leaves, asset 2 enters
    choice = cost_aware_rule(current, target, _market(np.full(3, 0.001), np.eye(3) * 0.03**2), s)
    np.testing.assert_allclose(choice.weights, [0.5, 0.0, 0.5])


def test_settings_name_what_is_wrong():
    with pytest.raises(ValueError, match="trade_fraction"):
        CostAwareSettings(trade_fraction=1.5)
    with pytest.raises(ValueError, match="band_scale"):
        CostAwareSettings(band_scale=0)


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


def test_expected_costs_match_the_cost_model_order_by_order():
    from trimtab.execution.costs import CostModel
    from trimtab.policy.trading import expected_costs

    model = CostModel(taker_fee_bps=7, half_spread_bps=3, impact_bps_at_1pct=12)
    notional = np.array([0.0, 1_000.0, 50_000.0, 2_000.0, 500.0])
    volume = np.array([1e6, 1e7, 1e6, 0.0, np.nan])
    spreads = np.array([np.nan, 5.0, 1.0, np.nan, 9.0])
    got = expected_costs(model, notional, volume, spreads)
    for k in range(5):
        h = None if np.isnan(spreads[k]) else spreads[k]
        assert got[k] == pytest.approx(
            model.fee_rate(False) + model.slippage(notional[k], volume[k], h)
        )


@st.composite
def _books(draw):
    n = draw(st.integers(2, 8))
    raw_t = np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    raw_c = np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    invested_t, invested_c = draw(st.floats(0.2, 1.0)), draw(st.floats(0.0, 1.0))
    target = raw_t / raw_t.sum() * invested_t if raw_t.sum() > 0 else np.zeros(n)
    current = raw_c / raw_c.sum() * invested_c if raw_c.sum() > 0 else np.zeros(n)
    vols = np.array(draw(st.lists(st.floats(0.005, 0.1), min_size=n, max_size=n)))
    rho = draw(st.floats(0.0, 0.9))
    cov = (rho + (1 - rho) * np.eye(n)) * np.outer(vols, vols)
    costs = np.array(draw(st.lists(st.floats(0.0, 0.01), min_size=n, max_size=n)))
    trend = np.array(draw(st.lists(st.floats(-0.5, 0.5), min_size=n, max_size=n)))
    ratio = np.array(draw(st.lists(st.floats(0.5, 3.0), min_size=n, max_size=n)))
    waited = np.array(draw(st.lists(st.integers(0, 12), min_size=n, max_size=n)), dtype=float)
    fraction = draw(st.floats(0.0, 1.0))
    return current, target, MarketInputs(costs, cov, 365.0, ratio, trend, waited), fraction


@given(_books())
@settings(max_examples=300, deadline=None)
def test_every_trade_moves_toward_target_within_the_budget(book):
    current, target, market, fraction = book
    choice = cost_aware_rule(current, target, market, CostAwareSettings(trade_fraction=fraction))
    if choice.weights is None:
        assert choice.traded == ()
        return
    new = choice.weights
    assert np.isfinite(new).all() and (new >= -1e-12).all()
    # Never past the target, never away from it; untouched assets stay as they are.
    assert (np.abs(new - target) <= np.abs(current - target) + 1e-12).all()
    assert ((new - target) * (current - target) >= -1e-12).all()
    untouched = np.setdiff1d(np.arange(len(new)), choice.traded)
    np.testing.assert_allclose(new[untouched], current[untouched], atol=1e-12)
    # Buys are paid from cash and sales: the book never grows past what it holds or
    # what the target asks for.
    assert new.sum() <= max(current.sum(), target.sum()) + 1e-9
    assert choice.cost >= 0


def _calendar_pair(panel, **spec):
    from trimtab.engine.runner import RunSpec, run_comparison

    run = RunSpec(
        policy="equal-weight",
        rebalance="calendar:monthly",
        baselines=("equal-monthly",),
        fee_bps=0.0,
        **spec,
    )
    c = run_comparison(run, panel=panel)
    return c, c.results["equal-weight"], c.results["equal-monthly"]


def test_hold_bars_keep_the_last_target_in_both_monthly_policies(make_panel):
    """Old code: before its first trade equal-monthly recorded a zero target (and on hold
    bars today's weights), equal-weight none, so the same trades had two tracking errors."""
    rng = np.random.default_rng(7)
    closes = {s: list(100 * np.cumprod(1 + rng.normal(0, 0.03, 150))) for s in "ABC"}
    closes["C"][100:] = [np.nan] * 50  # C delists mid-month (2021-04-11)
    panel = make_panel({f"{s}USDT": v for s, v in closes.items()})
    # top:3 admits nothing for the first 30 bars: no target before the first trade.
    c, rule, monthly = _calendar_pair(panel, universe="top:3")
    assert len(rule.trades) == len(monthly.trades)
    pd.testing.assert_frame_equal(rule.target_weights, monthly.target_weights)
    assert c.metrics["equal-weight"]["tracking_error"] == pytest.approx(
        c.metrics["equal-monthly"]["tracking_error"], rel=1e-12
    )
    targets = monthly.target_weights
    first = targets.dropna(how="all").index[0]
    assert first == pd.Timestamp("2021-02-01", tz="UTC")  # the first monthly trade
    # After C delists the last target (a third each) holds until the May rebalance.
    assert targets.loc["2021-04-20"].tolist() == pytest.approx([1 / 3] * 3)
    assert targets.loc["2021-05-01"].tolist() == pytest.approx([0.5, 0.5, 0.0])


def test_monthly_tracking_errors_agree_from_the_start_of_the_real_data(daily_panel):
    """The issue's case: top:10 from where the data starts, 2021-01-01."""
    panel = daily_panel.slice("2021-01-01", "2021-12-31")
    c, rule, monthly = _calendar_pair(panel, universe="top:10")
    te = c.metrics["equal-weight"]["tracking_error"]
    assert te == pytest.approx(c.metrics["equal-monthly"]["tracking_error"], rel=1e-12)
    pd.testing.assert_frame_equal(rule.target_weights, monthly.target_weights)


def _gappy_returns(rng, bars, assets):
    """Fat-tailed returns with listing gaps (leading zeros) and missing bars (zeros), as
    the trader feeds them: missing returns already 0."""
    r = rng.standard_t(3, (bars, assets)) * rng.uniform(0.01, 0.08, assets)
    listed = rng.integers(0, bars, assets)
    r[np.arange(bars)[:, None] < listed[None, :] * (rng.random(assets) < 0.3)] = np.nan
    r[rng.random((bars, assets)) < 0.05] = np.nan
    return np.where(np.isnan(r), 0.0, r)


@pytest.mark.parametrize("bars, assets", [(3, 1), (4, 7), (61, 40), (61, 130), (20, 300)])
def test_sample_covariance_products_match_the_matrix_of_np_cov(bars, assets):
    rng = np.random.default_rng(bars * 1000 + assets)
    r = _gappy_returns(rng, bars, assets)
    full = np.atleast_2d(np.cov(r, rowvar=False))
    cov = SampleCovariance(r)
    w = rng.dirichlet(np.ones(assets)) * 0.9
    scale = np.abs(full).max()
    np.testing.assert_allclose(cov.matrix(), full, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(cov.diagonal(), np.diag(full), rtol=1e-12)
    np.testing.assert_allclose(cov.dot(w), full @ w, rtol=0, atol=1e-12 * scale)
    assert cov.quadratic(w) == pytest.approx(w @ full @ w, rel=1e-12)
    got = relative_volatility(cov, w, 365.0)
    np.testing.assert_allclose(got, relative_volatility(full, w, 365.0), rtol=1e-9, atol=1e-12)


def test_sample_covariance_of_fewer_than_three_bars_is_zero():
    cov = SampleCovariance(np.ones((2, 4)) * 0.01)
    assert cov.quadratic(np.ones(4)) == 0.0 and not cov.diagonal().any()


def test_cost_aware_rule_decides_the_same_on_the_factored_covariance():
    rng = np.random.default_rng(11)
    s = CostAwareSettings()
    same = 0
    for _ in range(40):
        n = int(rng.integers(2, 90))
        r = _gappy_returns(rng, 61, n)
        target = rng.dirichlet(np.ones(n)) * rng.uniform(0.5, 1.0)
        target[rng.random(n) < 0.1] = 0.0
        current = np.clip(target + rng.normal(0, 0.02, n), 0.0, None)
        costs = rng.uniform(0.0005, 0.004, n)
        trend, ratio = rng.normal(0, 0.2, n), rng.uniform(0.6, 1.8, n)
        kw = dict(vol_ratio=ratio, trend=trend, delayed=rng.integers(0, 12, n).astype(float))
        dense = cost_aware_rule(
            current, target, MarketInputs(costs, np.cov(r, rowvar=False), 365.0, **kw), s
        )
        fast = cost_aware_rule(
            current, target, MarketInputs(costs, SampleCovariance(r), 365.0, **kw), s
        )
        np.testing.assert_allclose(fast.bands, dense.bands, rtol=1e-9)
        assert fast.traded == dense.traded and fast.delayed == dense.delayed
        assert (fast.weights is None) == (dense.weights is None)
        if dense.weights is not None:
            np.testing.assert_allclose(fast.weights, dense.weights, rtol=1e-9, atol=1e-15)
            same += 1
        assert fast.benefit == pytest.approx(dense.benefit, rel=1e-9, abs=1e-15)
    assert 5 < same < 40  # both trades and holds were compared
