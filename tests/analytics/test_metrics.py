"""Tests of trimtab.analytics.metrics.

Oracle: empyrical-reloaded, called with the annualisation pinned (``period="daily"`` AND an
explicit ``annualization`` of 365 or 8760, so its 252-day default never applies), on real
BTC returns and on hypothesis-generated series. Where its conventions differ from ours the
conversion is explicit at the call site:

- empyrical reports drawdowns, max drawdown and VaR/CVaR as NEGATIVE returns; we report
  positive losses, so we compare against ``-ep.f(...)``;
- empyrical's ``risk_free`` / ``required_return`` are PER-PERIOD; ours is annual, so we pass
  it ``(1 + rf) ** (1 / ppy) - 1`` computed here independently;
- empyrical returns ``inf`` for a zero denominator (Sortino without losses, tail ratio with a
  zero 5th percentile, an overflowing CAGR); we return NaN;
- we treat drawdowns under 1e-12 (compounding round-off) as none, empyrical does not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import empyrical as ep
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tests.conftest import DAILY_FILE, HOURLY_FILE  # real data, else the synthetic sample
from trimtab.analytics import (
    METRIC_KEYS,
    compute_metrics,
    returns_from_equity,
)
from trimtab.analytics import metrics as m

RF = 0.04  # annual risk-free rate used where a non-zero one matters


def _btc_close(path: Path) -> pd.Series:
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    df = pd.read_csv(path, parse_dates=["timestamp"])
    btc = df.loc[df["symbol"] == "BTCUSDT", ["timestamp", "close"]]
    return btc.set_index("timestamp")["close"].sort_index().astype(float)


@pytest.fixture(scope="module")
def btc_daily_close() -> pd.Series:
    return _btc_close(DAILY_FILE)


@pytest.fixture(scope="module")
def btc_hourly_close() -> pd.Series:
    return _btc_close(HOURLY_FILE)


@pytest.fixture(scope="module", params=["daily", "hourly"])
def real_case(request, btc_daily_close, btc_hourly_close) -> tuple[pd.Series, float]:
    """(BTC returns, periods_per_year) for daily and hourly bars."""
    if request.param == "daily":
        return returns_from_equity(btc_daily_close), 365.0
    return returns_from_equity(btc_hourly_close), 8760.0


def per_period(rf: float, ppy: float) -> float:
    return (1.0 + rf) ** (1.0 / ppy) - 1.0


def close(ours: float, theirs: float, rtol: float = 1e-9, atol: float = 1e-12) -> bool:
    """Equal within tolerance, where empyrical's inf (a zero denominator) must be our NaN."""
    theirs = float(theirs)
    if math.isnan(theirs) or math.isinf(theirs):
        return math.isnan(ours)
    return math.isclose(ours, theirs, rel_tol=rtol, abs_tol=atol)


def check_against_empyrical(r: np.ndarray | pd.Series, ppy: float, rf: float) -> None:
    """Every metric with an empyrical counterpart, on the same returns and conventions."""
    ann = {"period": "daily", "annualization": ppy}
    rf_p = per_period(rf, ppy)
    with np.errstate(all="ignore"):
        assert close(m.total_return(r), ep.cum_returns_final(r))
        assert close(m.cagr(r, ppy), ep.cagr(r, **ann))
        assert close(m.annual_volatility(r, ppy), ep.annual_volatility(r, **ann))
        assert close(m.sharpe_ratio(r, ppy, rf), ep.sharpe_ratio(r, risk_free=rf_p, **ann))
        assert close(m.sortino_ratio(r, ppy, rf), ep.sortino_ratio(r, required_return=rf_p, **ann))
        # Sign: empyrical's drawdowns are negative.
        ep_mdd = ep.max_drawdown(r)
        assert close(m.max_drawdown(r), -ep_mdd)
        np.testing.assert_allclose(
            np.asarray(m.drawdown_series(r)), -np.asarray(ep.stats.drawdown_series(r)), atol=1e-12
        )
        ours_calmar = m.calmar_ratio(r, ppy)
        if abs(ep_mdd) < 1e-12:  # round-off "drawdown": none for us, tiny for empyrical
            assert math.isnan(ours_calmar)
        else:
            # Both compute the drawdown to ~1e-16 absolute, so for tiny drawdowns the
            # relative error of cagr / drawdown grows as 1e-16 / drawdown.
            rtol = 1e-9 + 1e-15 / abs(ep_mdd)
            assert close(ours_calmar, ep.calmar_ratio(r, **ann), rtol=rtol)
        for level in (0.95, 0.99):
            # Sign: empyrical's VaR/CVaR are the (negative) tail returns; cutoff = 1 - level.
            assert close(m.value_at_risk(r, level), -ep.value_at_risk(r, cutoff=1 - level))
            assert close(
                m.conditional_value_at_risk(r, level),
                -ep.conditional_value_at_risk(r, cutoff=1 - level),
            )
        # Our threshold is per period; annualization=1 stops empyrical from converting it.
        for thr in (0.0, rf_p, -0.01):
            assert close(
                m.omega_ratio(r, thr), ep.omega_ratio(r, required_return=thr, annualization=1)
            )
        assert close(m.tail_ratio(r), ep.tail_ratio(r))


# --------------------------------------------------------------------------- empyrical, real


@pytest.mark.parametrize("rf", [0.0, RF])
def test_all_metrics_match_empyrical_on_btc(real_case, rf):
    returns, ppy = real_case
    check_against_empyrical(returns, ppy, rf)
    # Both arrays and Series are accepted and give the same numbers.
    check_against_empyrical(returns.to_numpy(), ppy, rf)


@pytest.mark.real_data
def test_btc_values_are_plausible(btc_daily_close):
    # Guards against the oracle and us agreeing on something absurd (e.g. ppy=252 both).
    r = returns_from_equity(btc_daily_close)
    assert 0.5 < m.annual_volatility(r, 365) < 1.0  # BTC: ~60-80 % a year
    assert 0.7 < m.max_drawdown(r) < 0.9  # 2017-18: about -84 % close to close
    assert m.annual_volatility(r, 365) == pytest.approx(r.std(ddof=1) * math.sqrt(365))


@pytest.mark.real_data
def test_compute_metrics_on_btc_matches_empyrical(btc_daily_close):
    equity = btc_daily_close
    r = equity.pct_change().iloc[1:]
    res = compute_metrics(equity, periods_per_year=365, risk_free=RF)
    rf_p = per_period(RF, 365)
    ann = {"period": "daily", "annualization": 365}
    assert res["n_periods"] == len(equity) - 1
    assert res["start_equity"] == equity.iloc[0]
    assert res["end_equity"] == equity.iloc[-1]
    assert res["total_return"] == pytest.approx(equity.iloc[-1] / equity.iloc[0] - 1, rel=1e-9)
    assert res["cagr"] == pytest.approx(ep.cagr(r, **ann), rel=1e-9)
    assert res["volatility"] == pytest.approx(ep.annual_volatility(r, **ann), rel=1e-9)
    assert res["sharpe"] == pytest.approx(ep.sharpe_ratio(r, risk_free=rf_p, **ann), rel=1e-9)
    assert res["sortino"] == pytest.approx(
        ep.sortino_ratio(r, required_return=rf_p, **ann), rel=1e-9
    )
    assert res["calmar"] == pytest.approx(ep.calmar_ratio(r, **ann), rel=1e-9)
    assert res["max_drawdown"] == pytest.approx(-ep.max_drawdown(r), rel=1e-9)
    assert res["var_95"] == pytest.approx(-ep.value_at_risk(r, cutoff=0.05), rel=1e-9)
    assert res["cvar_99"] == pytest.approx(-ep.conditional_value_at_risk(r, cutoff=0.01), rel=1e-9)
    # compute_metrics uses the per-period risk-free rate as Omega's threshold.
    assert res["omega"] == pytest.approx(
        ep.omega_ratio(r, required_return=rf_p, annualization=1), rel=1e-9
    )
    assert res["tail_ratio"] == pytest.approx(ep.tail_ratio(r), rel=1e-9)
    # Peak of 2017-12-17 recovered in late 2020: roughly three years under water.
    assert 1000 < res["max_drawdown_duration_days"] < 1200


# --------------------------------------------------------------------------- empyrical, hypothesis

returns_arrays = arrays(
    np.float64,
    st.integers(min_value=2, max_value=200),
    elements=st.one_of(
        st.floats(min_value=-0.95, max_value=1.0, allow_nan=False, allow_subnormal=False),
        st.sampled_from([0.0, -0.01, 0.01]),  # ties and flat stretches
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    r=returns_arrays,
    ppy=st.sampled_from([365.0, 8760.0]),
    rf=st.sampled_from([0.0, RF]),
)
def test_all_metrics_match_empyrical_hypothesis(r, ppy, rf):
    check_against_empyrical(r, ppy, rf)


def naive_duration_wealth(wealth: np.ndarray) -> int:
    """Loop oracle: longest peak-to-recovery (or peak-to-end) span in periods of a wealth path."""
    peak, last_high, longest = wealth[0], 0, 0
    for i in range(1, len(wealth)):
        peak = max(peak, wealth[i])
        if 1.0 - wealth[i] / peak < 1e-12:  # at the peak again
            if i - last_high > 1:
                longest = max(longest, i - last_high)
            last_high = i
    return max(longest, len(wealth) - 1 - last_high)


def naive_duration(r: np.ndarray) -> int:
    wealth = [1.0]
    for x in r:
        wealth.append(wealth[-1] * (1.0 + x))
    return naive_duration_wealth(np.array(wealth))


@settings(max_examples=150, deadline=None)
@given(r=returns_arrays)
def test_drawdown_duration_and_tail_properties(r):
    assert m.max_drawdown_duration(r) == naive_duration(r)
    dd = m.drawdown_series(r)
    assert np.all((dd >= 0) & (dd <= 1))
    assert m.max_drawdown(r) == pytest.approx(dd.max(), abs=0.0)
    for level in (0.95, 0.99):
        assert m.conditional_value_at_risk(r, level) >= m.value_at_risk(r, level) - 1e-15
    assert m.value_at_risk(r, 0.99) >= m.value_at_risk(r, 0.95) - 1e-15


@settings(max_examples=60, deadline=None)
@given(r=returns_arrays)
def test_compute_metrics_agrees_with_the_metric_functions(r):
    equity = pd.Series(
        100.0 * np.concatenate(([1.0], np.cumprod(1.0 + r))),
        index=pd.date_range("2021-01-01", periods=len(r) + 1, freq="D", tz="UTC"),
    )
    res = compute_metrics(equity, periods_per_year=365, risk_free=RF)
    back = returns_from_equity(equity).to_numpy()
    np.testing.assert_allclose(back, r, atol=1e-9)
    expected = {
        "total_return": m.total_return(back),
        "cagr": m.cagr(back, 365),
        "volatility": m.annual_volatility(back, 365),
        "sharpe": m.sharpe_ratio(back, 365, RF),
        "sortino": m.sortino_ratio(back, 365, RF),
        "calmar": m.calmar_ratio(back, 365),
        "max_drawdown": m.max_drawdown(back),
        "var_95": m.value_at_risk(back, 0.95),
        "cvar_95": m.conditional_value_at_risk(back, 0.95),
        "var_99": m.value_at_risk(back, 0.99),
        "cvar_99": m.conditional_value_at_risk(back, 0.99),
        "omega": m.omega_ratio(back, per_period(RF, 365)),
        "tail_ratio": m.tail_ratio(back),
    }
    for key, value in expected.items():
        assert res[key] == value or (math.isnan(res[key]) and math.isnan(value)), key
    # Daily index without gaps: the duration in days is the duration in periods of the
    # equity path itself.
    wealth = equity.to_numpy() / equity.iloc[0]
    assert res["max_drawdown_duration_days"] == naive_duration_wealth(wealth)


# --------------------------------------------------------------------------- hand examples


def day_index(n: int, start: str = "2023-01-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="D", tz="UTC")


def test_per_period_rate_compounds():
    assert m.per_period_rate(0.10, 1) == pytest.approx(0.10)
    # 1 % a day compounds to 1.01**365 - 1 a year; the inverse must give back exactly 1 %.
    assert m.per_period_rate(1.01**365 - 1, 365) == pytest.approx(0.01, rel=1e-12)
    # Not the simple division rf / ppy (0.1 / 365 = 2.7397e-4).
    assert m.per_period_rate(0.10, 365) == pytest.approx(2.6116e-4, rel=1e-4)


def test_sharpe_uses_annual_risk_free():
    r = np.array([0.01, -0.02, 0.03, 0.0, 0.015])
    rf_p = 1.05 ** (1 / 365) - 1
    x = r - rf_p
    expected = x.mean() / x.std(ddof=1) * math.sqrt(365)
    assert m.sharpe_ratio(r, 365, risk_free=0.05) == pytest.approx(expected, rel=1e-12)
    assert m.sharpe_ratio(r, 365, 0.05) < m.sharpe_ratio(r, 365, 0.0)


def test_returns_from_equity():
    eq = pd.Series([100.0, 110.0, 99.0], index=day_index(3))
    r = returns_from_equity(eq)
    assert list(r.index) == list(eq.index[1:])
    np.testing.assert_allclose(r.to_numpy(), [0.10, -0.10])


# Equity 100, 110, 99, 105, 111, 108, 120, 90, 95 (bars 0..8). New highs at bars 0, 1, 4
# and 6. Spans between highs: 1->4 = 3 periods (peak 110 at bar 1, recovered by 111 at bar
# 4), 4->6 = 2 periods, then from the peak 120 at bar 6 not recovered by the end (bar 8):
# 2 periods. Longest: 3. Deepest: 120 -> 90 = 25 %.
HAND_EQUITY = [100.0, 110.0, 99.0, 105.0, 111.0, 108.0, 120.0, 90.0, 95.0]


def test_drawdown_hand_example():
    eq = pd.Series(HAND_EQUITY, index=day_index(9))
    r = returns_from_equity(eq)
    assert m.max_drawdown(r) == pytest.approx(0.25)
    assert m.max_drawdown_duration(r) == 3
    assert m.max_drawdown_duration_days(eq) == 3.0
    # Drawdowns after each bar: 0, 0.1 (99/110), 1-105/110, 0, 1-108/111, 0, 0.25, 1-95/120.
    expected = [0, 0.1, 1 - 105 / 110, 0, 1 - 108 / 111, 0, 0.25, 1 - 95 / 120]
    dd = m.drawdown_series(r)
    assert list(dd.index) == list(r.index)
    np.testing.assert_allclose(dd.to_numpy(), expected, atol=1e-12)
    # Hourly bars: the same 3 periods are 3 hours.
    eq_h = pd.Series(HAND_EQUITY, index=pd.date_range("2023-01-01", periods=9, freq="h"))
    assert m.max_drawdown_duration_days(eq_h) == pytest.approx(3 / 24)


def test_drawdown_duration_edge_cases():
    # A loss on the very first period is a drawdown from the starting equity.
    assert m.max_drawdown_duration([-0.1, 0.0, 0.0]) == 3  # never recovered: peak-to-end
    assert m.max_drawdown([-0.1, 0.0, 0.0]) == pytest.approx(0.1)
    # One losing period recovered on the next: peak (bar 0) to recovery (bar 2) = 2.
    assert m.max_drawdown_duration([-0.5, 1.0]) == 2
    # Ending one bar under water: peak-to-end = 1.
    assert m.max_drawdown_duration([0.1, 0.1, -0.01]) == 1
    # Rising only, or flat: no drawdown.
    assert m.max_drawdown_duration([0.1, 0.0, 0.2]) == 0
    assert m.max_drawdown_duration([]) == 0


def test_drawdown_duration_days_uses_timestamps():
    # Bars on days 0, 1, 5, 6: 100 -> 90 -> 100 (recovered) -> 80. Peak at day 0 recovered
    # on day 5: 5 days (2 periods); peak on day 5 unrecovered at day 6: 1 day (1 period).
    idx = pd.DatetimeIndex(["2023-01-01", "2023-01-02", "2023-01-06", "2023-01-07"], tz="UTC")
    eq = pd.Series([100.0, 90.0, 100.0, 80.0], index=idx)
    assert m.max_drawdown_duration_days(eq) == 5.0
    assert m.max_drawdown_duration(returns_from_equity(eq)) == 2


def test_var_cvar_tail_omega_hand_example():
    r = np.array([0.05, -0.10, 0.30, 0.0, -0.05])  # sorted: -0.10 -0.05 0 0.05 0.30
    # 5 % quantile at position (5-1)*0.05 = 0.2: -0.10 + 0.2 * 0.05 = -0.09.
    assert m.value_at_risk(r, 0.95) == pytest.approx(0.09)
    # CVaR 95: k = floor(0.2) + 1 = 1 smallest return -> 0.10.
    assert m.conditional_value_at_risk(r, 0.95) == pytest.approx(0.10)
    # 25 % quantile at position 1.0: -0.05; CVaR 75: k = 2 -> mean(-0.10, -0.05).
    assert m.value_at_risk(r, 0.75) == pytest.approx(0.05)
    assert m.conditional_value_at_risk(r, 0.75) == pytest.approx(0.075)
    # 95 % quantile at position 3.8: 0.05 + 0.8 * 0.25 = 0.25; tail = 0.25 / 0.09.
    assert m.tail_ratio(r) == pytest.approx(0.25 / 0.09)
    # Omega at 0: gains 0.35 / losses 0.15. At 0.05 per period: 0.25 / (0.15 + 0.10 + 0.05).
    assert m.omega_ratio(r) == pytest.approx(0.35 / 0.15)
    assert m.omega_ratio(r, threshold=0.05) == pytest.approx(0.25 / 0.30)


def test_cagr_and_total_return_hand_example():
    # +21 % over 730 daily periods = 2 years: 1.1 a year.
    r = np.full(730, 1.21 ** (1 / 730) - 1)
    assert m.total_return(r) == pytest.approx(0.21)
    assert m.cagr(r, 365) == pytest.approx(0.10)
    # The same returns read as hourly span 730 / 8760 years.
    assert m.cagr(r, 8760) == pytest.approx(1.21 ** (8760 / 730) - 1)


TRADES_COLUMNS = ["timestamp", "symbol", "side", "quantity", "price", "fee", "reason"]


def make_trades(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=TRADES_COLUMNS)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    return df


def test_turnover_fees_exposure_hand_example():
    eq = pd.Series([1000.0, 1100.0, 1050.0, 1200.0], index=day_index(4))
    trades = make_trades(
        [
            # 10 * 100 = 1000 / equity 1000 = 1.0
            ("2023-01-01", "BTCUSDT", "buy", 10.0, 100.0, 1.00, "rebalance"),
            # 5 * 110 = 550 / equity 1100 = 0.5
            ("2023-01-02", "BTCUSDT", "sell", 5.0, 110.0, 0.55, "rebalance"),
            # mid-bar fill: equity as of 2023-01-03 (1050); 2 * 105 = 210 / 1050 = 0.2
            ("2023-01-03 12:00", "ETHUSDT", "buy", 2.0, 105.0, 0.21, "signal"),
        ]
    )
    # One-way: 0.5 * (1.0 + 0.5 + 0.2) = 0.85 over 3 periods = 3/365 years.
    assert m.turnover(trades, eq, 365) == pytest.approx(0.85 * 365 / 3)
    assert m.fees_paid(trades) == pytest.approx(1.76)
    assert m.average_exposure(pd.Series([0.0, 1.0, 0.5, 0.5], index=eq.index)) == 0.5

    res = compute_metrics(
        eq,
        periods_per_year=365,
        trades=trades,
        gross_exposure=pd.Series([0.0, 1.0, 0.5, 0.5], index=eq.index),
    )
    assert res["turnover"] == pytest.approx(0.85 * 365 / 3)
    assert res["fees_paid"] == pytest.approx(1.76)
    assert res["average_exposure"] == 0.5


def test_turnover_full_buy_in_counts_half():
    # 366 daily bars = 365 periods = 1 year; one buy of all the equity -> 0.5 a year.
    eq = pd.Series(1000.0, index=day_index(366))
    trades = make_trades([("2023-01-01", "BTCUSDT", "buy", 0.5, 2000.0, 0.0, "entry")])
    assert m.turnover(trades, eq, 365) == pytest.approx(0.5)
    # Round trip (buy all, sell all) counts 1.0.
    trades2 = make_trades(
        [
            ("2023-01-01", "BTCUSDT", "buy", 0.5, 2000.0, 0.0, "entry"),
            ("2023-06-01", "BTCUSDT", "sell", 0.5, 2000.0, 0.0, "exit"),
        ]
    )
    assert m.turnover(trades2, eq, 365) == pytest.approx(1.0)


def test_turnover_edge_cases():
    eq = pd.Series([1000.0, 500.0, 0.0], index=day_index(3))
    empty = make_trades([])
    assert m.turnover(empty, eq, 365) == 0.0
    assert m.fees_paid(empty) == 0.0
    # A liquidation fill at the wipe-out (equity 0) has no ratio and is left out:
    # only 1 * 500 / 1000 = 0.5 counts -> 0.5 * 0.5 / (2/365).
    trades = make_trades(
        [
            ("2023-01-01", "BTCUSDT", "buy", 1.0, 500.0, 0.5, "entry"),
            ("2023-01-03", "BTCUSDT", "sell", 1.0, 10.0, 0.01, "liquidation"),
        ]
    )
    assert m.turnover(trades, eq, 365) == pytest.approx(0.25 * 365 / 2)
    # Equity spanning no period: turnover undefined.
    assert math.isnan(m.turnover(trades, eq.iloc[:1], 365))


# --------------------------------------------------------------------------- degenerate inputs


def test_compute_metrics_keys_and_types():
    eq = pd.Series(HAND_EQUITY, index=day_index(9))
    res = compute_metrics(eq, periods_per_year=365)
    assert tuple(res) == METRIC_KEYS
    assert set(res) == {
        "total_return", "cagr", "volatility", "sharpe", "sortino", "calmar", "max_drawdown",
        "max_drawdown_duration_days", "var_95", "cvar_95", "var_99", "cvar_99", "omega",
        "tail_ratio", "turnover", "fees_paid", "average_exposure", "n_periods",
        "start_equity", "end_equity",
    }  # fmt: skip
    assert all(type(v) is float for v in res.values())
    json.dumps(res)  # plain floats serialise (NaN as NaN; the lead maps it to null)
    # Not given: trade metrics are undefined.
    assert math.isnan(res["turnover"]) and math.isnan(res["fees_paid"])
    assert math.isnan(res["average_exposure"])
    assert res["max_drawdown"] == pytest.approx(0.25)
    assert res["max_drawdown_duration_days"] == 3.0
    assert res["n_periods"] == 8.0


def no_inf(res: dict[str, float]) -> None:
    assert not any(math.isinf(v) for v in res.values()), res


def test_empty_equity():
    res = compute_metrics(pd.Series([], dtype=float, index=day_index(0)), periods_per_year=365)
    no_inf(res)
    assert res["n_periods"] == 0.0
    assert all(math.isnan(v) for k, v in res.items() if k != "n_periods")


def test_one_bar_equity():
    res = compute_metrics(pd.Series([500.0], index=day_index(1)), periods_per_year=365)
    no_inf(res)
    assert res["n_periods"] == 0.0
    assert res["total_return"] == 0.0 and res["max_drawdown"] == 0.0
    assert res["max_drawdown_duration_days"] == 0.0
    assert res["start_equity"] == res["end_equity"] == 500.0
    for key in ("cagr", "volatility", "sharpe", "sortino", "calmar", "var_95", "cvar_95", "omega"):
        assert math.isnan(res[key]), key


def test_constant_equity():
    res = compute_metrics(pd.Series(100.0, index=day_index(30)), periods_per_year=365)
    no_inf(res)
    assert res["total_return"] == 0.0 and res["cagr"] == 0.0 and res["volatility"] == 0.0
    assert res["max_drawdown"] == 0.0 and res["max_drawdown_duration_days"] == 0.0
    assert res["var_95"] == 0.0 and res["cvar_99"] == 0.0
    assert math.copysign(1.0, res["var_95"]) == 1.0  # not -0.0
    # Zero dispersion / no losses / no drawdown / zero 5th percentile: undefined.
    for key in ("sharpe", "sortino", "calmar", "omega", "tail_ratio"):
        assert math.isnan(res[key]), key


def test_zero_volatility_with_growth():
    # Identical positive returns: std is 0 (not a 1e-18 residue), Sharpe undefined; no
    # losing period, so Sortino and Omega are undefined too; CAGR is finite.
    r = np.full(50, 0.001)
    assert m.annual_volatility(r, 365) == 0.0
    assert math.isnan(m.sharpe_ratio(r, 365))
    assert math.isnan(m.sortino_ratio(r, 365))
    assert math.isnan(m.omega_ratio(r))
    assert m.cagr(r, 365) == pytest.approx(1.001**365 - 1)
    # Above the risk-free rate (4 % a year ~ 0.0107 % a day) still zero dispersion.
    assert math.isnan(m.sharpe_ratio(r, 365, RF))


def test_wipe_out():
    eq = pd.Series([100.0, 50.0, 0.0, 0.0, 0.0], index=day_index(5))
    r = returns_from_equity(eq)
    np.testing.assert_array_equal(r.to_numpy(), [-0.5, -1.0, 0.0, 0.0])
    res = compute_metrics(eq, periods_per_year=365)
    no_inf(res)
    assert res["total_return"] == -1.0 and res["cagr"] == -1.0
    assert res["max_drawdown"] == 1.0 and res["calmar"] == -1.0
    assert res["max_drawdown_duration_days"] == 4.0  # peak at day 0, never recovered
    assert res["cvar_99"] == 1.0
    assert res["end_equity"] == 0.0
    assert np.isfinite(res["sharpe"]) and res["sharpe"] < 0


def test_cagr_overflow_is_nan_not_inf():
    # +50 % in one hour extrapolated over 8,760 hours overflows float64.
    assert math.isnan(m.cagr([0.5], 8760))
    assert m.cagr([0.5], 1) == pytest.approx(0.5)


def test_short_series_statistics_are_nan():
    for f in (m.annual_volatility, m.sharpe_ratio, m.sortino_ratio):
        assert math.isnan(f([0.01], 365))
        assert math.isnan(f([], 365))
    assert math.isnan(m.cagr([], 365))
    for f in (m.value_at_risk, m.conditional_value_at_risk, m.omega_ratio, m.tail_ratio):
        assert math.isnan(f([]))
    assert m.total_return([]) == 0.0 and m.max_drawdown([]) == 0.0
    assert math.isnan(m.average_exposure(pd.Series([], dtype=float)))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("values", "index", "match"),
    [
        ([1.0, 2.0, 3.0], day_index(3)[::-1], "strictly increasing"),
        ([1.0, 2.0, 3.0], day_index(3)[[0, 1, 1]], "strictly increasing"),
        ([1.0, np.nan, 3.0], day_index(3), "NaN"),
        ([1.0, np.inf, 3.0], day_index(3), "NaN or infinite"),
        ([1.0, -2.0, 3.0], day_index(3), "negative"),
        ([0.0, 1.0, 1.0], day_index(3), "starts at 0"),
        ([1.0, 0.0, 1.0], day_index(3), "recovers from 0"),
    ],
)
def test_bad_equity_raises(values, index, match):
    eq = pd.Series(values, index=index)
    with pytest.raises(ValueError, match=match):
        compute_metrics(eq, periods_per_year=365)
    with pytest.raises(ValueError, match=match):
        returns_from_equity(eq)


def test_bad_returns_and_parameters_raise():
    with pytest.raises(ValueError, match="NaN"):
        m.sharpe_ratio(pd.Series([1.0, 2.0]).pct_change(), 365)
    with pytest.raises(ValueError, match="-100%"):
        m.max_drawdown([0.1, -1.5])
    with pytest.raises(ValueError, match="one-dimensional"):
        m.total_return(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="periods_per_year"):
        m.cagr([0.1], 0)
    with pytest.raises(ValueError, match="level"):
        m.value_at_risk([0.1], 95)
    with pytest.raises(ValueError, match="annual rate"):
        m.sharpe_ratio([0.1, 0.2], 365, risk_free=-1.0)
    with pytest.raises(ValueError, match="DatetimeIndex"):
        compute_metrics(pd.Series([1.0, 2.0]), periods_per_year=365)
    with pytest.raises(ValueError, match="non-negative"):
        m.average_exposure(pd.Series([0.5, -0.1]))


def test_bad_trades_raise():
    eq = pd.Series([1000.0, 1100.0], index=day_index(2))
    good = ("2023-01-01", "BTCUSDT", "buy", 1.0, 100.0, 0.1, "x")
    with pytest.raises(ValueError, match="missing column"):
        m.fees_paid(make_trades([good]).drop(columns="fee"))
    with pytest.raises(ValueError, match="quantity"):
        m.turnover(make_trades([good[:3] + (-1.0,) + good[4:]]), eq, 365)
    with pytest.raises(ValueError, match="side"):
        m.turnover(make_trades([good[:2] + ("long",) + good[3:]]), eq, 365)
    with pytest.raises(ValueError, match="fee"):
        m.fees_paid(make_trades([good[:5] + (np.nan,) + good[6:]]))
    with pytest.raises(ValueError, match="precedes"):
        m.turnover(make_trades([("2022-12-31",) + good[1:]]), eq, 365)
    naive = make_trades([good])
    naive["timestamp"] = naive["timestamp"].dt.tz_localize(None)
    with pytest.raises(ValueError, match="tz-aware"):
        m.turnover(naive, eq, 365)
