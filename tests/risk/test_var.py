"""Tests of trimtab.risk.var: estimators, closed forms, convergence, causality, portfolios.

Oracles: analytics.metrics for the historical estimator on one window, scipy quadrature
for every CVaR closed form, scipy / arch for the standardised-t density, a plain Python
loop for the EWMA recursion, and large simulated Student-t samples for convergence.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from arch.univariate import StudentsT
from scipy import integrate, stats

from trimtab.analytics import metrics
from trimtab.risk.var import (
    CF_MAX_ABS_SKEW,
    METHODS,
    cornish_fisher_cvar,
    cornish_fisher_quantile,
    cornish_fisher_safeguard,
    ewma_cornish_fisher_var,
    ewma_normal_var,
    ewma_t_var,
    ewma_volatility,
    fit_standardized_t_df,
    historical_var,
    normal_cvar,
    normal_var,
    portfolio_returns,
    portfolio_var,
    standardized_t_cvar,
    standardized_t_logpdf,
    standardized_t_var,
    var_forecast,
)

# Short fitting windows keep the model tests fast while still refitting several times.
FAST = {"fit_window": 150, "min_fit": 60, "refit_every": 7}
FAST_KW = {
    "historical": {"window": 60},
    "ewma_normal": {},
    "ewma_t": FAST,
    "ewma_cf": {"fit_window": 150, "min_fit": 60},
}


def t_returns(n: int, df: float, sigma: float, seed: int) -> np.ndarray:
    """i.i.d. returns sigma * Z with Z a unit-variance Student-t."""
    rng = np.random.default_rng(seed)
    return sigma * rng.standard_t(df, n) * math.sqrt((df - 2.0) / df)


def series(values: np.ndarray, start: str = "2020-01-01") -> pd.Series:
    idx = pd.date_range(start, periods=len(values), freq="1D", tz="UTC")
    return pd.Series(values, index=idx, name="r")


@pytest.fixture(scope="module")
def fat_returns() -> pd.Series:
    # A GARCH-like path: volatility clusters, so EWMA has something to track.
    rng = np.random.default_rng(11)
    n = 400
    z = rng.standard_t(4, n) * math.sqrt(0.5)
    r = np.empty(n)
    s2 = 4e-4
    for i in range(n):
        r[i] = math.sqrt(s2) * z[i]
        s2 = 2e-5 + 0.1 * r[i] ** 2 + 0.85 * s2
    return series(r)


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("df", [2.5, 3.0, 4.0, 6.0, 10.0, 50.0])
@pytest.mark.parametrize("level", [0.95, 0.99, 0.999])
def test_standardized_t_var_and_cvar_against_quadrature(df, level):
    scale = math.sqrt((df - 2.0) / df)
    dist = stats.t(df, scale=scale)
    assert dist.var() == pytest.approx(1.0, rel=1e-12)  # the scaling gives unit variance
    var = standardized_t_var(level, df)
    assert var == pytest.approx(dist.ppf(level), rel=1e-12)
    # CVaR = mean loss beyond VaR = (1 / (1 - level)) * integral_{VaR}^{inf} x f(x) dx.
    tail, _ = integrate.quad(lambda x: x * dist.pdf(x), var, np.inf, epsabs=1e-13, limit=200)
    assert standardized_t_cvar(level, df) == pytest.approx(tail / (1.0 - level), rel=1e-7)
    assert standardized_t_cvar(level, df) > var


def test_standardized_t_multipliers_vectorise_and_tend_to_normal():
    dfs = np.array([3.0, 5.0, 1e6])
    v = standardized_t_var(0.99, dfs)
    c = standardized_t_cvar(0.99, dfs)
    assert v.shape == c.shape == (3,)
    assert v[-1] == pytest.approx(normal_var(0.99), rel=1e-5)
    assert c[-1] == pytest.approx(normal_cvar(0.99), rel=1e-5)
    # A unit-variance t has MORE mass in the far tail and less in the shoulders.
    assert standardized_t_var(0.999, 4.0) > normal_var(0.999)
    assert standardized_t_var(0.95, 4.0) < normal_var(0.95)


def test_normal_cvar_against_quadrature():
    for level in (0.95, 0.99):
        var = normal_var(level)
        tail, _ = integrate.quad(lambda x: x * stats.norm.pdf(x), var, np.inf)
        assert normal_cvar(level) == pytest.approx(tail / (1.0 - level), rel=1e-9)
    assert normal_var(0.99) == pytest.approx(2.3263478740, rel=1e-9)


def test_standardized_t_logpdf_matches_scipy_and_arch():
    z = np.linspace(-8, 8, 41)
    for df in (2.5, 4.0, 12.0):
        scale = math.sqrt((df - 2.0) / df)
        expected = stats.t.logpdf(z, df, scale=scale)
        np.testing.assert_allclose(standardized_t_logpdf(z, df), expected, rtol=1e-12)
        # arch's StudentsT is the same unit-variance t (resids / sqrt(sigma2) = z).
        arch_ll = StudentsT().loglikelihood([df], z, np.ones_like(z), individual=True)
        np.testing.assert_allclose(standardized_t_logpdf(z, df), arch_ll, rtol=1e-10)


@pytest.mark.parametrize("df", [3.5, 5.0, 8.0])
def test_fit_standardized_t_df_recovers_the_true_df(df):
    z = t_returns(40_000, df, 1.0, seed=int(df * 10))
    assert fit_standardized_t_df(z) == pytest.approx(df, rel=0.12)


def test_fit_standardized_t_df_bounds_and_small_samples():
    rng = np.random.default_rng(0)
    assert fit_standardized_t_df(rng.standard_normal(20_000)) > 50  # normal -> large df
    assert math.isnan(fit_standardized_t_df(np.array([0.1, np.nan, -0.2])))


# --------------------------------------------------------------------------- Cornish-Fisher


def test_cornish_fisher_reduces_to_normal_and_matches_the_textbook_formula():
    assert cornish_fisher_quantile(0.01, 0.0, 0.0) == pytest.approx(stats.norm.ppf(0.01))
    assert cornish_fisher_cvar(0.99, 0.0, 0.0) == pytest.approx(normal_cvar(0.99), rel=1e-12)
    # z = Phi^-1(0.01) = -2.32635, s = -0.5, k = 3; z^2 = 5.41190, z^3 = -12.58993:
    # z + (z^2-1)s/6 + (z^3-3z)k/24 - (2z^3-5z)s^2/36
    # = -2.32635 + 4.41190*(-0.083333) + (-5.61089)*0.125 - (-13.54812)*0.0069444
    # = -2.32635 - 0.36766 - 0.70136 + 0.09408 = -3.30128
    z = stats.norm.ppf(0.01)
    hand = z + (z**2 - 1) * (-0.5) / 6 + (z**3 - 3 * z) * 3 / 24 - (2 * z**3 - 5 * z) * 0.25 / 36
    assert cornish_fisher_quantile(0.01, -0.5, 3.0) == pytest.approx(hand, rel=1e-12)
    assert hand == pytest.approx(-3.30128, abs=1e-4)


@pytest.mark.parametrize(
    ("s", "k"), [(0.0, 0.0), (0.0, 3.0), (-0.6, 4.0), (0.8, 2.5), (-1.5, 6.0), (0.0, 8.0)]
)
@pytest.mark.parametrize("level", [0.95, 0.99])
def test_cornish_fisher_cvar_against_quadrature(s, k, level):
    s_, k_ = cornish_fisher_safeguard(s, k)
    assert (s_, k_) == (s, k)  # all inside the monotonic domain
    a = 1.0 - level
    # CVaR = -(1/a) * integral_0^a q(u) du with q(u) = CF quantile at u.
    integral, _ = integrate.quad(
        lambda u: cornish_fisher_quantile(u, s, k), 0.0, a, limit=400, epsabs=1e-12
    )
    assert cornish_fisher_cvar(level, s, k) == pytest.approx(-integral / a, rel=1e-6)
    assert cornish_fisher_cvar(level, s, k) >= -cornish_fisher_quantile(a, s, k)


def _cf_slope_min(s: float, k: float) -> float:
    # dx/dz = z^2 (k/8 - s^2/6) + z s/3 + (1 - k/8 + 5 s^2/36), on a wide grid.
    z = np.linspace(-40, 40, 80_001)
    return float(np.min(z * z * (k / 8 - s * s / 6) + z * s / 3 + (1 - k / 8 + 5 * s * s / 36)))


def test_cornish_fisher_safeguard_makes_the_expansion_monotonic():
    rng = np.random.default_rng(3)
    s = rng.uniform(-4, 4, 300)
    k = rng.uniform(-3, 40, 300)
    s_, k_ = cornish_fisher_safeguard(s, k)
    assert np.all(np.abs(s_) <= CF_MAX_ABS_SKEW)
    for a, b in zip(s_, k_, strict=True):
        assert _cf_slope_min(a, b) >= -1e-9
    # The domain at s = 0 is exactly k in [0, 8], and it is tight: k = 8.5 is non-monotonic.
    assert cornish_fisher_safeguard(0.0, 20.0)[1] == pytest.approx(8.0)
    assert cornish_fisher_safeguard(0.0, -1.0)[1] == pytest.approx(0.0)
    assert _cf_slope_min(0.0, 8.5) < 0
    # Inside the domain nothing changes; NaN stays NaN.
    assert cornish_fisher_safeguard(0.5, 3.0) == (0.5, 3.0)
    assert np.isnan(cornish_fisher_safeguard(np.nan, np.nan)[1])


# --------------------------------------------------------------------------- estimators


def test_historical_matches_metrics_on_each_window():
    r = series(t_returns(120, 4.0, 0.03, seed=1))
    fc = historical_var(r, window=50, min_periods=20, align="origin")
    for i in (19, 20, 35, 49, 50, 80, 119):
        window = r.iloc[max(0, i - 49) : i + 1].to_numpy()
        for level in (0.95, 0.99):
            assert fc.var[level].iloc[i] == pytest.approx(metrics.value_at_risk(window, level))
            assert fc.cvar[level].iloc[i] == pytest.approx(
                metrics.conditional_value_at_risk(window, level)
            )
    assert fc.var[0.99].iloc[:19].isna().all()
    assert fc.volatility is None


def test_ewma_volatility_matches_a_plain_loop():
    r = t_returns(200, 5.0, 0.02, seed=2)
    lam, seed = 0.94, 30
    expected = np.full(200, np.nan)
    s2 = np.mean(r[:seed] ** 2)  # seed: mean square of the first 30 returns
    expected[seed - 1] = s2
    for i in range(seed, 200):
        s2 = lam * s2 + (1 - lam) * r[i] ** 2
        expected[i] = s2
    got = ewma_volatility(series(r), align="origin").to_numpy()
    np.testing.assert_allclose(got, np.sqrt(expected), rtol=1e-12)
    target = ewma_volatility(series(r)).to_numpy()  # forecast FOR bar t sits at t
    np.testing.assert_allclose(target[1:], np.sqrt(expected[:-1]), rtol=1e-12)
    fc = ewma_normal_var(series(r))
    np.testing.assert_allclose(fc.var[0.99], target * normal_var(0.99), rtol=1e-12)
    np.testing.assert_allclose(fc.cvar[0.95], target * normal_cvar(0.95), rtol=1e-12)


def test_cf_model_uses_trailing_moments_of_standardised_returns(fat_returns):
    fc = ewma_cornish_fisher_var(fat_returns, fit_window=150, min_fit=60, align="origin")
    sigma = fc.volatility.to_numpy()
    r = fat_returns.to_numpy()
    z = np.full(r.size, np.nan)
    z[1:] = r[1:] / sigma[:-1]
    i = 300
    window = z[i - 149 : i + 1]
    s = stats.skew(window, bias=False)
    k = stats.kurtosis(window, bias=False)
    assert fc.params["skewness"].iloc[i] == pytest.approx(s, rel=1e-6)
    assert fc.params["excess_kurtosis"].iloc[i] == pytest.approx(k, rel=1e-6)
    s_, k_ = cornish_fisher_safeguard(s, k)
    assert fc.var[0.99].iloc[i] == pytest.approx(
        -sigma[i] * cornish_fisher_quantile(0.01, s_, k_), rel=1e-6
    )
    assert fc.cvar[0.99].iloc[i] == pytest.approx(sigma[i] * cornish_fisher_cvar(0.99, s_, k_))


def test_t_model_refits_on_schedule(fat_returns):
    fc = ewma_t_var(fat_returns, align="origin", **FAST)
    df = fc.params["df"]
    first = df.first_valid_index()
    start = fat_returns.index.get_loc(first)
    # 30 seed bars, then z from bar 30: the 60th z is at bar 89.
    assert start == 30 + 60 - 1
    changes = np.flatnonzero(np.diff(df.to_numpy()[start:]) != 0) + 1
    assert set(changes) <= set(range(0, 400, 7))  # only on refit bars
    assert len(changes) > 20
    sigma = fc.volatility.iloc[start:]
    np.testing.assert_allclose(
        fc.var[0.99].iloc[start:], sigma * standardized_t_var(0.99, df.iloc[start:])
    )


def test_scale_correction_multiplies_sigma_by_the_trailing_rms(fat_returns):
    kw = {"align": "origin", **FAST}
    plain = ewma_t_var(fat_returns, **kw)
    corrected = ewma_t_var(fat_returns, scale_correction=True, **kw)
    sigma = plain.volatility.to_numpy()
    r = fat_returns.to_numpy()
    z = r[1:] / sigma[:-1]
    i = 250
    rms = math.sqrt(np.mean(z[i - 150 : i] ** 2))  # z[i-1] is r[i] / sigma[i-1]
    assert corrected.params["scale"].iloc[i] == pytest.approx(rms, rel=1e-9)
    df = corrected.params["df"].iloc[i]
    assert corrected.var[0.99].iloc[i] == pytest.approx(
        sigma[i] * rms * standardized_t_var(0.99, df), rel=1e-9
    )
    cf = ewma_cornish_fisher_var(fat_returns, scale_correction=True, fit_window=150, min_fit=60)
    cf0 = ewma_cornish_fisher_var(fat_returns, fit_window=150, min_fit=60)
    np.testing.assert_allclose(cf.var[0.95], cf0.var[0.95] * cf.params["scale"], rtol=1e-12)


# --------------------------------------------------------------------------- convergence


def test_historical_converges_to_the_t_values_on_a_large_sample():
    df, sigma, n = 4.0, 0.02, 60_000
    r = series(t_returns(n + 1, df, sigma, seed=21))
    fc = historical_var(r, window=n, align="origin")
    for level in (0.95, 0.99):
        assert fc.var[level].iloc[-1] == pytest.approx(
            sigma * standardized_t_var(level, df), rel=0.03
        )
        assert fc.cvar[level].iloc[-1] == pytest.approx(
            sigma * standardized_t_cvar(level, df), rel=0.05
        )


def test_parametric_models_converge_to_the_t_values_on_a_large_sample():
    # i.i.d. t(6) at constant volatility. A slow EWMA (lam = 0.999) estimates that constant
    # volatility almost without noise, so the fitted df and the multipliers converge.
    df, sigma, n = 6.0, 0.02, 30_000
    r = series(t_returns(n, df, sigma, seed=5))
    kw = {"lam": 0.999, "seed": 2000, "align": "origin"}
    t_fc = ewma_t_var(r, fit_window=n, min_fit=20_000, refit_every=n, **kw)
    assert t_fc.params["df"].iloc[-1] == pytest.approx(df, rel=0.15)
    for level in (0.95, 0.99):
        assert t_fc.var[level].iloc[-1] == pytest.approx(
            sigma * standardized_t_var(level, df), rel=0.05
        )
        assert t_fc.cvar[level].iloc[-1] == pytest.approx(
            sigma * standardized_t_cvar(level, df), rel=0.06
        )
    # Cornish-Fisher converges to ITS OWN approximation at the true moments of a
    # unit-variance t(6): skewness 0, excess kurtosis 6 / (df - 4) = 3.
    cf = ewma_cornish_fisher_var(r, fit_window=n, min_fit=20_000, **kw)
    for level in (0.95, 0.99):
        assert cf.var[level].iloc[-1] == pytest.approx(
            -sigma * cornish_fisher_quantile(1 - level, 0.0, 3.0), rel=0.1
        )
        assert cf.cvar[level].iloc[-1] == pytest.approx(
            sigma * cornish_fisher_cvar(level, 0.0, 3.0), rel=0.12
        )


# --------------------------------------------------------------------------- causality


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cut", [100, 177, 260, 333])
def test_truncating_the_future_changes_no_forecast(fat_returns, method, cut):
    kw = FAST_KW[method]
    full = var_forecast(fat_returns, method, **kw)
    cut_fc = var_forecast(fat_returns.iloc[: cut + 1], method, **kw)
    for level in (0.95, 0.99):
        pd.testing.assert_series_equal(full.var[level].iloc[: cut + 1], cut_fc.var[level])
        pd.testing.assert_series_equal(full.cvar[level].iloc[: cut + 1], cut_fc.cvar[level])
    # The forecast FOR bar t+1 (target-aligned) exists and ignores r[t+1]: perturb it.
    shocked = fat_returns.copy()
    shocked.iloc[cut + 1 :] = -0.5
    sh = var_forecast(shocked, method, **kw)
    for level in (0.95, 0.99):
        pd.testing.assert_series_equal(
            full.var[level].iloc[: cut + 2], sh.var[level].iloc[: cut + 2]
        )
    assert not full.var[0.99].iloc[cut + 2 :].equals(sh.var[0.99].iloc[cut + 2 :])


@pytest.mark.parametrize("method", ["ewma_t", "ewma_cf"])
def test_truncation_with_scale_correction(fat_returns, method):
    kw = {**FAST_KW[method], "scale_correction": True}
    full = var_forecast(fat_returns, method, **kw)
    cut = var_forecast(fat_returns.iloc[:250], method, **kw)
    pd.testing.assert_series_equal(full.var[0.99].iloc[:250], cut.var[0.99])


def test_origin_alignment_is_target_shifted_by_one_observation(fat_returns):
    for method in METHODS:
        tgt = var_forecast(fat_returns, method, **FAST_KW[method])
        org = var_forecast(fat_returns, method, align="origin", **FAST_KW[method])
        np.testing.assert_array_equal(tgt.var[0.99].to_numpy()[1:], org.var[0.99].to_numpy()[:-1])
        assert org.align == "origin"


def test_dataframe_columns_run_on_their_own_observed_bars(fat_returns):
    a = fat_returns.rename("A")
    b = fat_returns.iloc[::-1].set_axis(fat_returns.index).rename("B")
    b.iloc[:50] = np.nan  # listed later
    b.iloc[200:203] = np.nan  # a gap
    frame = pd.concat([a, b], axis=1)
    for method in METHODS:
        fc = var_forecast(frame, method, **FAST_KW[method])
        alone = var_forecast(b.dropna(), method, **FAST_KW[method])
        got = fc.var[0.99]["B"]
        pd.testing.assert_series_equal(
            got.loc[alone.var[0.99].index], alone.var[0.99], check_names=False
        )
        # The bar after the gap gets the forecast made at the last observed bar; missing
        # bars get none.
        assert got.iloc[200:203].isna().all()
        assert np.isfinite(got.iloc[203])
        pd.testing.assert_series_equal(
            fc.var[0.99]["A"], var_forecast(a, method, **FAST_KW[method]).var[0.99]
        )


def test_input_validation():
    r = series(np.array([0.01, -0.02, 0.03]))
    with pytest.raises(ValueError, match="infinite"):
        historical_var(r.replace(0.03, np.inf))
    with pytest.raises(ValueError, match="-100%"):
        historical_var(r.replace(0.03, -1.5))
    with pytest.raises(ValueError, match="increasing"):
        historical_var(r.iloc[::-1])
    with pytest.raises(ValueError, match="level"):
        historical_var(r, levels=(0.3,))
    with pytest.raises(ValueError, match="unknown VaR method"):
        var_forecast(r, "garch")
    with pytest.raises(ValueError, match="lambda"):
        ewma_normal_var(r, lam=1.0)
    with pytest.raises(ValueError, match="align"):
        ewma_normal_var(r, align="both")
    with pytest.raises(ValueError, match="Series or DataFrame"):
        historical_var([0.1, 0.2])
    # Too short a history is not an error: the forecasts are NaN.
    assert historical_var(r).var[0.99].isna().all()


# --------------------------------------------------------------------------- portfolios


@pytest.fixture(scope="module")
def asset_panel() -> pd.DataFrame:
    rng = np.random.default_rng(8)
    n = 400
    common = rng.standard_t(4, n) * 0.02
    frame = pd.DataFrame(
        {
            "A": common + rng.standard_normal(n) * 0.01,
            "B": 0.5 * common + rng.standard_t(5, n) * 0.02,
            "C": common + rng.standard_normal(n) * 0.03,
        },
        index=pd.date_range("2021-01-01", periods=n, freq="1D", tz="UTC"),
    )
    frame.iloc[:120, 2] = np.nan  # C lists on bar 120
    return frame


def test_portfolio_returns_hand_example():
    idx = pd.date_range("2022-01-01", periods=3, freq="1D", tz="UTC")
    r = pd.DataFrame({"X": [0.10, 0.02, -0.04], "Y": [np.nan, 0.05, np.nan]}, index=idx)
    w = pd.DataFrame({"X": [0.5, 1.0, 0.0], "Y": [0.5, np.nan, 0.3]}, index=idx)
    # bar 1: weights of bar 0 (0.5, 0.5) x returns (0.02, 0.05) = 0.035
    # bar 2: weights of bar 1 (1.0, NaN -> 0) x returns (-0.04, NaN) = -0.04
    got = portfolio_returns(r, w)
    assert np.isnan(got.iloc[0])
    assert got.iloc[1:].tolist() == pytest.approx([0.035, -0.04])
    # Constant weights: known before the first bar too; Y has no return on bar 0 -> cash.
    const = portfolio_returns(r, pd.Series({"X": 0.5, "Y": 0.25}))
    assert const.tolist() == pytest.approx([0.05, 0.0225, -0.02])
    with pytest.raises(ValueError, match="held"):
        portfolio_returns(r, pd.Series({"X": 0.5, "Y": 0.25}), strict=True)
    with pytest.raises(ValueError, match="without returns"):
        portfolio_returns(r, pd.Series({"Z": 1.0}))


@pytest.mark.parametrize("method", METHODS)
def test_single_asset_portfolio_equals_the_single_series_model(method, fat_returns):
    frame = fat_returns.to_frame("A")
    kw = FAST_KW[method]
    alone = var_forecast(fat_returns, method, **kw)
    for weights in (pd.Series({"A": 1.0}), pd.DataFrame({"A": 1.0}, index=frame.index)):
        port = portfolio_var(frame, weights, method=method, **kw)
        np.testing.assert_allclose(port.var[0.99], alone.var[0.99], rtol=1e-10)
        np.testing.assert_allclose(port.cvar[0.95], alone.cvar[0.95], rtol=1e-10)
    # Leverage scales every model linearly (the standardised shape is scale-free).
    double = portfolio_var(frame, pd.Series({"A": 2.0}), method=method, **kw)
    np.testing.assert_allclose(double.var[0.99], 2 * alone.var[0.99], rtol=1e-10)


def test_portfolio_historical_applies_current_weights_to_past_returns(asset_panel):
    rng = np.random.default_rng(2)
    w = pd.DataFrame(
        rng.uniform(0, 0.5, asset_panel.shape), index=asset_panel.index, columns=asset_panel.columns
    )
    w.iloc[:120, 2] = np.nan
    fc = portfolio_var(asset_panel, w, method="historical", window=100, align="origin")
    # History with C proxied by the mean of the listed assets before its listing.
    hist = asset_panel.copy()
    hist["C"] = hist["C"].fillna(hist[["A", "B"]].mean(axis=1))
    for i in (99, 150, 399):
        pnl = hist.iloc[i - 99 : i + 1].to_numpy() @ w.fillna(0).iloc[i].to_numpy()
        assert fc.var[0.99].iloc[i] == pytest.approx(metrics.value_at_risk(pnl, 0.99))
        assert fc.cvar[0.95].iloc[i] == pytest.approx(metrics.conditional_value_at_risk(pnl, 0.95))


def test_portfolio_ewma_sigma_is_the_quadratic_form_of_the_ewma_covariance(asset_panel):
    w = pd.Series({"A": 0.6, "B": -0.2, "C": 0.5})
    fc = portfolio_var(asset_panel, w, method="ewma_normal", align="origin")
    hist = asset_panel.copy()
    hist["C"] = hist["C"].fillna(hist[["A", "B"]].mean(axis=1))
    x = hist.to_numpy()
    cov = x[:30].T @ x[:30] / 30
    for t in range(30, 300):
        cov = 0.94 * cov + 0.06 * np.outer(x[t], x[t])
    sigma = math.sqrt(w.to_numpy() @ cov @ w.to_numpy())
    assert fc.volatility.iloc[299] == pytest.approx(sigma, rel=1e-10)
    assert fc.var[0.99].iloc[299] == pytest.approx(sigma * normal_var(0.99), rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_portfolio_forecasts_use_no_future_weights_or_returns(asset_panel, method):
    rng = np.random.default_rng(4)
    w = pd.DataFrame(
        rng.uniform(0, 0.4, asset_panel.shape), index=asset_panel.index, columns=asset_panel.columns
    )
    kw = FAST_KW[method]
    full = portfolio_var(asset_panel, w, method=method, **kw)
    cut = 300
    trunc = portfolio_var(asset_panel.iloc[: cut + 1], w.iloc[: cut + 1], method=method, **kw)
    pd.testing.assert_series_equal(full.var[0.99].iloc[: cut + 1], trunc.var[0.99])
    # New weights at the close of `cut` change the forecast for cut+1, and nothing before.
    w2 = w.copy()
    w2.iloc[cut:] = 0.9
    moved = portfolio_var(asset_panel, w2, method=method, **kw)
    pd.testing.assert_series_equal(full.var[0.99].iloc[: cut + 1], moved.var[0.99].iloc[: cut + 1])
    assert moved.var[0.99].iloc[cut + 1] != full.var[0.99].iloc[cut + 1]
    assert np.isfinite(full.var[0.99].iloc[-1])


def test_portfolio_var_validation(asset_panel):
    with pytest.raises(ValueError, match="same index"):
        portfolio_var(asset_panel, pd.DataFrame({"A": 1.0}, index=asset_panel.index[:-1]))
    with pytest.raises(ValueError, match="unknown VaR method"):
        portfolio_var(asset_panel, pd.Series({"A": 1.0}), method="mc")
    with pytest.raises(ValueError, match="DataFrame"):
        portfolio_var(asset_panel["A"], pd.Series({"A": 1.0}))
