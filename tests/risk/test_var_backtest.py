"""Tests of trimtab.risk.var_backtest, and the coverage of the VaR models on real data.

Oracles: hand arithmetic (in the comments), scipy's G-tests (``power_divergence`` for
Kupiec, ``chi2_contingency`` with the log-likelihood statistic for Christoffersen's
independence test, which is the G-test of the 2 x 2 transition table), and simulated
i.i.d. Bernoulli hit sequences, on which the p-values must be roughly uniform.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.conftest import DAILY_FILE  # real data, else the synthetic sample
from trimtab.risk.var import (
    METHODS,
    ewma_t_var,
    historical_var,
    portfolio_returns,
    portfolio_var,
    var_forecast,
)
from trimtab.risk.var_backtest import (
    BACKTEST_KEYS,
    backtest_var,
    christoffersen_independence,
    conditional_coverage,
    kupiec_pof,
    transition_counts,
    var_hits,
)

# --------------------------------------------------------------------------- hand examples


def test_kupiec_hand_example():
    # n = 250 bars, x = 5 hits, level 0.99 (p = 0.01), observed rate 0.02:
    # LR = -2 [245 ln 0.99 + 5 ln 0.01 - 245 ln 0.98 - 5 ln 0.02]
    #    = -2 [245 ln(0.99/0.98) + 5 ln(0.5)] = -2 [2.48733 - 3.46574] = 1.95681
    # p = chi2(1).sf(1.95681) = 0.16185
    hits = np.zeros(250, dtype=bool)
    hits[[3, 50, 100, 150, 249]] = True
    test = kupiec_pof(hits, 0.99)
    assert test.statistic == pytest.approx(1.956810, abs=1e-5)
    assert test.p_value == pytest.approx(0.161855, abs=1e-5)
    oracle = stats.power_divergence([245, 5], f_exp=[247.5, 2.5], lambda_="log-likelihood")
    assert test.statistic == pytest.approx(oracle.statistic, rel=1e-12)


def test_kupiec_edge_cases():
    # No hits: LR = -2 n ln(1 - p) = -200 ln 0.99 = 2.01007, p = 0.15626.
    t = kupiec_pof(np.zeros(100, dtype=bool), 0.99)
    assert t.statistic == pytest.approx(2.010067, abs=1e-6)
    assert t.p_value == pytest.approx(0.156258, abs=1e-6)
    # All hits: LR = -2 n ln p = -40 ln 0.01 = 184.2068, p ~ 0.
    t = kupiec_pof(np.ones(20, dtype=bool), 0.99)
    assert t.statistic == pytest.approx(184.206807, abs=1e-5)
    assert t.p_value < 1e-40
    # Exactly the expected rate: LR = 0, p = 1.
    hits = np.zeros(100, dtype=bool)
    hits[:5] = True
    assert kupiec_pof(hits, 0.95) == (0.0, 1.0)
    assert all(np.isnan(kupiec_pof([], 0.99)))
    assert kupiec_pof([0, 1, 0], 0.9) == kupiec_pof(np.array([False, True, False]), 0.9)
    with pytest.raises(ValueError, match="0/1"):
        kupiec_pof([0.0, np.nan], 0.99)


def test_christoffersen_hand_example():
    # hits 0 0 0 0 1 1 1 0 0 0 0 0 -> pairs: n00 = 3 + 4 = 7, n01 = 1, n11 = 2, n10 = 1.
    # pi01 = 1/8, pi11 = 2/3, pi = 3/11.
    # ln L(pi)        = 8 ln(8/11) + 3 ln(3/11)                  = -2.54763 - 3.89785 = -6.44548
    # ln L(pi01,pi11) = 7 ln(7/8) + ln(1/8) + ln(1/3) + 2 ln(2/3)
    #                 = -0.93472 - 2.07944 - 1.09861 - 0.81093                       = -4.92370
    # LR_ind = -2 (-6.44548 + 4.92370) = 3.04355, p = chi2(1).sf = 0.08106
    hits = np.array([0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    assert transition_counts(hits) == (7, 1, 1, 2)
    ind = christoffersen_independence(hits)
    assert ind.statistic == pytest.approx(3.043550, abs=1e-5)
    assert ind.p_value == pytest.approx(0.081058, abs=1e-5)
    g = stats.chi2_contingency([[7, 1], [1, 2]], correction=False, lambda_="log-likelihood")
    assert ind.statistic == pytest.approx(g[0], rel=1e-12)
    # Conditional coverage at level 0.95 (p = 0.05), x = 3 of n = 12:
    # LR_pof = -2 [9 ln 0.95 + 3 ln 0.05 - 9 ln 0.75 - 3 ln 0.25]
    #        = -2 [-0.46164 - 8.98720 + 2.58914 + 4.15888] = 5.40163
    # LR_cc = 5.40163 + 3.04355 = 8.44518, p = chi2(2).sf = exp(-8.44518 / 2) = 0.01466
    assert kupiec_pof(hits, 0.95).statistic == pytest.approx(5.401629, abs=1e-5)
    cc = conditional_coverage(hits, 0.95)
    assert cc.statistic == pytest.approx(8.445179, abs=1e-5)
    assert cc.p_value == pytest.approx(np.exp(-8.445179 / 2), rel=1e-6)


def test_christoffersen_edge_cases():
    # No hits / all hits: the chain never changes state -> LR_ind = 0, p = 1.
    assert christoffersen_independence(np.zeros(50, dtype=bool)) == (0.0, 1.0)
    assert christoffersen_independence(np.ones(50, dtype=bool)) == (0.0, 1.0)
    # No consecutive hits: 1 0 1 0 1 0 -> n01 = 2, n10 = 3, n00 = n11 = 0.
    # pi01 = 2/2 = 1, pi11 = 0/3 = 0: ln L(pi01, pi11) = 0 (every term is 0 ln 0 or n ln 1).
    # pi = 2/5: ln L(pi) = 3 ln(3/5) + 2 ln(2/5) = -3.36506; LR = 6.73012, p = 0.00948.
    t = christoffersen_independence([1, 0, 1, 0, 1, 0])
    assert t.statistic == pytest.approx(6.730117, abs=1e-5)
    assert t.p_value == pytest.approx(0.009480, abs=1e-5)
    # A single isolated hit (n11 = 0, n10 = 1 or 0): finite, no warning.
    with np.errstate(all="raise"):
        t = christoffersen_independence(np.r_[np.zeros(99, dtype=bool), True])
    assert np.isfinite(t.statistic)
    assert all(np.isnan(christoffersen_independence([True])))
    assert all(np.isnan(conditional_coverage([True], 0.99)))
    # Conditional coverage with no hits = Kupiec's statistic on 2 degrees of freedom.
    cc = conditional_coverage(np.zeros(100, dtype=bool), 0.99)
    assert cc.statistic == pytest.approx(kupiec_pof(np.zeros(100, dtype=bool), 0.99).statistic)


def test_christoffersen_matches_the_g_test_on_random_tables():
    rng = np.random.default_rng(5)
    for _ in range(20):
        hits = rng.random(300) < rng.uniform(0.05, 0.4)
        table = np.array(transition_counts(hits)).reshape(2, 2)
        if (table == 0).any():
            continue
        g = stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")
        ind = christoffersen_independence(hits)
        assert ind.statistic == pytest.approx(g[0], rel=1e-9)
        assert ind.p_value == pytest.approx(g[1], rel=1e-9)


# --------------------------------------------------------------------------- simulation


def test_p_values_are_roughly_uniform_on_iid_bernoulli_hits():
    rng = np.random.default_rng(2024)
    # Kupiec on the 99 % case: 2,000 series of 1,000 bars.
    hits = rng.random((2000, 1000)) < 0.01
    p = np.array([kupiec_pof(h, 0.99).p_value for h in hits])
    assert 0.03 <= np.mean(p < 0.05) <= 0.08
    assert 0.07 <= np.mean(p < 0.10) <= 0.14
    # Christoffersen needs a few consecutive hits for its chi2 limit: with p = 0.05 and
    # 1,000 bars (2.5 expected n11) it over-rejects (~8 % at 5 %); 5,000 bars are enough.
    hits = rng.random((1000, 5000)) < 0.05
    p_ind = np.array([christoffersen_independence(h).p_value for h in hits])
    p_cc = np.array([conditional_coverage(h, 0.95).p_value for h in hits])
    assert 0.03 <= np.mean(p_ind < 0.05) <= 0.075
    assert 0.03 <= np.mean(p_cc < 0.05) <= 0.075
    assert 0.07 <= np.mean(p_ind < 0.10) <= 0.13


def test_tests_have_power_against_wrong_rates_and_clustering():
    rng = np.random.default_rng(9)
    # Hits twice as frequent as the level says, over 2,000 bars (40 hits expected, not 20).
    hits = rng.random((300, 2000)) < 0.02
    assert np.mean([kupiec_pof(h, 0.99).p_value < 0.05 for h in hits]) > 0.9
    # Clustered hits: a Markov chain with P(hit | hit) = 0.3, P(hit | no hit) = 0.04.
    rejections = []
    for _ in range(200):
        u = rng.random(1000)
        h = np.zeros(1000, dtype=bool)
        for t in range(1, 1000):
            h[t] = u[t] < (0.3 if h[t - 1] else 0.04)
        rejections.append(christoffersen_independence(h).p_value < 0.05)
    assert np.mean(rejections) > 0.8


# --------------------------------------------------------------------------- backtest_var


def test_backtest_var_hand_example():
    idx = pd.date_range("2023-01-01", periods=6, freq="1D", tz="UTC")
    r = pd.Series([0.01, -0.05, -0.02, np.nan, -0.10, 0.03], index=idx)
    var = pd.Series([np.nan, 0.04, 0.02, 0.03, 0.05, 0.05], index=idx)
    # Evaluated bars: 1 (loss 0.05 > 0.04: hit), 2 (loss 0.02 = VaR: NOT a hit),
    # 4 (0.10 > 0.05: hit), 5 (gain: no hit). Bar 0 has no forecast, bar 3 no return.
    assert var_hits(r, var).tolist() == [True, False, True, False]
    out = backtest_var(r, {"m": {0.95: var}})
    res = out["m"][0.95]
    assert tuple(res) == BACKTEST_KEYS
    assert res["n"] == 4 and res["hits"] == 2
    assert res["hit_rate"] == 0.5
    assert res["expected_rate"] == pytest.approx(0.05)
    assert res["kupiec_p"] == kupiec_pof([1, 0, 1, 0], 0.95).p_value
    assert res["christoffersen_p"] == christoffersen_independence([1, 0, 1, 0]).p_value
    assert res["conditional_coverage_p"] == conditional_coverage([1, 0, 1, 0], 0.95).p_value
    assert isinstance(res["n"], int) and isinstance(res["kupiec_p"], float)


def test_backtest_var_accepts_forecast_objects_and_common_samples():
    rng = np.random.default_rng(1)
    r = pd.Series(
        rng.standard_t(4, 700) * 0.02,
        index=pd.date_range("2020-01-01", periods=700, freq="1D", tz="UTC"),
    )
    hist = historical_var(r, window=100)
    t = ewma_t_var(r, fit_window=300, min_fit=200, refit_every=20)
    out = backtest_var(r, {"historical": hist, "ewma_t": t.var})
    assert set(out) == {"historical", "ewma_t"}
    assert set(out["historical"]) == {0.95, 0.99}
    assert out["historical"][0.99]["n"] == 600
    assert out["ewma_t"][0.99]["n"] == 700 - 30 - 200
    same = backtest_var(r, {"historical": hist, "ewma_t": t}, common_sample=True)
    assert same["historical"][0.99]["n"] == same["ewma_t"][0.99]["n"] == 470
    assert same["ewma_t"] == out["ewma_t"]
    with pytest.raises(ValueError, match="align='target'"):
        backtest_var(r, {"x": historical_var(r, window=100, align="origin")})
    # Empty evaluation: NaN rates, zero counts.
    empty = backtest_var(r.iloc[:50], {"h": hist.var})["h"][0.99]
    assert empty["n"] == 0 and np.isnan(empty["hit_rate"]) and np.isnan(empty["kupiec_p"])


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def daily_close() -> pd.DataFrame:
    if not DAILY_FILE.exists():
        pytest.skip(f"shared data not found: {DAILY_FILE}")
    bars = pd.read_csv(DAILY_FILE, parse_dates=["timestamp"])
    return bars.pivot(index="timestamp", columns="symbol", values="close").sort_index()


@pytest.fixture(scope="module")
def daily_returns(daily_close) -> pd.DataFrame:
    # Close-to-close simple returns; NaN on the listing bar, before it and after a delisting.
    return daily_close.pct_change(fill_method=None)


def _fmt(res: dict) -> str:
    return ", ".join(
        f"{m} {lvl}: {x['hits']}/{x['n']} hits (p_pof={x['kupiec_p']:.3g}, "
        f"p_ind={x['christoffersen_p']:.3g})"
        for m, by in res.items()
        for lvl, x in by.items()
    )


@pytest.mark.real_data
def test_btc_daily_coverage(daily_returns):
    """BTCUSDT daily, Aug 2017 - Dec 2023; all models scored on the same 2,047 bars.

    What the data says (common sample, default parameters):

    ============  =====  ==========  ========  ======  =========  =========
    model         level  hits / n    rate      p_pof   p_ind      p_cc
    ============  =====  ==========  ========  ======  =========  =========
    historical    0.99     24 / 2047  1.17 %   0.445   0.450      0.562
    ewma_normal   0.99     39 / 2047  1.91 %   0.0003  0.773      0.0012
    ewma_t        0.99     31 / 2047  1.51 %   0.030   0.493      0.074
    ewma_t + sc   0.99     22 / 2047  1.07 %   0.737   0.235      0.467
    ewma_cf       0.99     12 / 2047  0.59 %   0.041   0.707      0.117
    (95 %: every model passes Kupiec at 5 %: hist 0.89, normal 0.17, t 0.64, cf 0.71)
    ============  =====  ==========  ========  ======  =========  =========

    The plain EWMA-t as specified (RiskMetrics scale, unit-variance t) roughly halves
    the normal model's excess of hits but is still rejected at 5 % (not at 1 %). The
    reason is the scale: BTC returns over the EWMA(0.94) forecast have an RMS of 1.11,
    not 1. With ``scale_correction=True`` (sc) the t model passes. Cornish-Fisher errs
    the other way (too few hits: the kurtosis of BTC surprises, ~15-25, is clipped at 8
    by the monotonicity safeguard, and that still over-covers).
    """
    r = daily_returns["BTCUSDT"].dropna()
    fcs = {m: var_forecast(r, m) for m in METHODS}
    fcs["ewma_t_sc"] = ewma_t_var(r, scale_correction=True)
    res = backtest_var(r, fcs, common_sample=True)
    msg = _fmt(res)
    n = res["ewma_t"][0.99]["n"]
    assert n == 2047, msg

    normal, t, t_sc = res["ewma_normal"][0.99], res["ewma_t"][0.99], res["ewma_t_sc"][0.99]
    # The thin-tailed model has far too many 99 % hits.
    assert normal["hit_rate"] > 0.015 and normal["kupiec_p"] < 0.01, msg
    # The fat-tailed t is better, but, as specified, not good enough at 5 %.
    assert t["hits"] < normal["hits"], msg
    assert 0.01 < t["kupiec_p"] < 0.05, msg
    # With its scale corrected it passes, also jointly with independence.
    assert t_sc["kupiec_p"] > 0.05 and t_sc["conditional_coverage_p"] > 0.05, msg
    assert abs(t_sc["hit_rate"] - 0.01) < 0.002, msg
    # Cornish-Fisher over-covers at 99 % (too FEW hits).
    assert res["ewma_cf"][0.99]["hit_rate"] < 0.01 and res["ewma_cf"][0.99]["kupiec_p"] > 0.01
    assert res["historical"][0.99]["kupiec_p"] > 0.05, msg
    for m in METHODS:
        assert res[m][0.95]["kupiec_p"] > 0.05, msg
        # No model's 99 % hits cluster detectably (one-bar EWMA reacts fast enough).
        assert res[m][0.99]["christoffersen_p"] > 0.05, msg
    # Fat tails: the t's 99 % CVaR is further out than the normal's for the same sigma.
    t_fc = fcs["ewma_t"]
    ratio = (t_fc.cvar[0.99] / t_fc.var[0.99]).dropna()
    assert (ratio > 2.665 / 2.326).all()


@pytest.mark.real_data
def test_equal_weight_portfolio_coverage(daily_close, daily_returns):
    """Equal weight (1/N at the close of t) over the coins listed at t, 34 Binance pairs.

    What the data says (common sample of 2,048 bars, default parameters):

    ============  =====  ==========  ========  ======  =======
    model         level  hits / n    rate      p_pof   p_ind
    ============  =====  ==========  ========  ======  =======
    historical    0.99     24 / 2048  1.17 %   0.447   0.285
    ewma_normal   0.99     47 / 2048  2.29 %   <1e-5   0.937
    ewma_t        0.99     37 / 2048  1.81 %   0.001   0.700
    ewma_t + sc   0.99     33 / 2048  1.61 %   0.011   0.560
    ewma_cf       0.99     18 / 2048  0.88 %   0.574   0.572
    historical    0.95     95 / 2048  4.64 %   0.448   0.042
    ewma_t        0.95    129 / 2048  6.30 %   0.009   0.172
    ewma_cf       0.95    104 / 2048  5.08 %   0.871   0.244
    ============  =====  ==========  ========  ======  =======

    The diversified book is negatively skewed (coins crash together), which a symmetric t
    cannot express: the t model fails at both levels even with the scale correction, while
    Cornish-Fisher, which uses the skewness, and historical simulation pass at 99 %.
    """
    returns = daily_returns
    listed = daily_close.notna()  # a coin is listed at t when it has a bar at t
    weights = listed.div(listed.sum(axis=1), axis=0).where(listed)
    pnl = portfolio_returns(returns, weights)
    fcs = {m: portfolio_var(returns, weights, method=m) for m in METHODS}
    fcs["ewma_t_sc"] = portfolio_var(returns, weights, method="ewma_t", scale_correction=True)
    res = backtest_var(pnl, fcs, common_sample=True)
    msg = _fmt(res)
    assert res["ewma_t"][0.99]["n"] == 2048, msg
    normal, t = res["ewma_normal"][0.99], res["ewma_t"][0.99]
    assert normal["hit_rate"] > 0.02 and normal["kupiec_p"] < 0.001, msg
    assert t["hits"] < normal["hits"] and t["kupiec_p"] < 0.05, msg
    assert res["ewma_t_sc"][0.99]["hits"] < t["hits"], msg
    for m in ("historical", "ewma_cf"):
        assert res[m][0.99]["kupiec_p"] > 0.05, msg
        assert res[m][0.99]["conditional_coverage_p"] > 0.05, msg
    assert res["ewma_cf"][0.95]["kupiec_p"] > 0.05, msg
