"""Regime signals: filtered (not smoothed) HMM probabilities, state order, real episodes."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

from tests.conftest import DAILY_FILE as DAILY  # real data, else the synthetic sample
from trimtab.signals import regime as R
from trimtab.signals.volatility import close_to_close_vol


@cache
def _close() -> pd.DataFrame:
    bars = pd.read_csv(DAILY, parse_dates=["timestamp"])
    return bars.pivot(index="timestamp", columns="symbol", values="close")


@pytest.fixture(scope="module")
def close() -> pd.DataFrame:
    if not DAILY.exists():
        pytest.skip(f"shared data not found: {DAILY}")
    return _close()


# A small schedule keeps the tests fast: few refits over ~3 years of BTC and ETH.
SMALL = {"min_history": 300, "refit_every": 120}


@pytest.fixture(scope="module")
def btc_eth(close) -> tuple[pd.DataFrame, R.RegimeResult]:
    c = close[["BTCUSDT", "ETHUSDT"]].loc[:"2020-09-30"]
    return c, R.fit_regimes(c, **SMALL)


def _features(c: pd.Series) -> np.ndarray:
    ret, logvol = R.regime_features(c)
    return np.column_stack([ret.iloc[:, 0], logvol.iloc[:, 0]])


def _forward_loop(x: np.ndarray, fit: R.HmmFit) -> np.ndarray:
    """Textbook normalised forward recursion, written out with scipy densities."""
    k = len(fit.startprob)
    dens = np.column_stack(
        [multivariate_normal(fit.means[i], fit.covars[i]).pdf(x) for i in range(k)]
    )
    out = np.empty((len(x), k))
    alpha = fit.startprob * dens[0]
    out[0] = alpha / alpha.sum()
    for t in range(1, len(x)):
        alpha = (out[t - 1] @ fit.transmat) * dens[t]
        out[t] = alpha / alpha.sum()
    return out


def test_filtered_probabilities_equal_a_forward_recursion(btc_eth):
    c, res = btc_eth
    index = c.index
    x = _features(c["BTCUSDT"])
    probs = np.stack([p["BTCUSDT"].to_numpy() for p in res.probs], axis=1)
    fits = res.fits["BTCUSDT"]
    assert len(fits) >= 4
    for j, fit in enumerate(fits):
        lo = index.get_loc(fit.first)
        s = index.get_loc(fit.at)
        end = index.get_loc(fits[j + 1].at) if j + 1 < len(fits) else len(index)
        want = _forward_loop(x[lo:end], fit)[s - lo :]
        np.testing.assert_allclose(probs[s:end], want, atol=1e-9)


def test_filtered_probability_is_hmmlearns_posterior_of_the_last_bar(btc_eth):
    # hmmlearn's smoothed posterior of the LAST observation is the filtered probability;
    # so with the data cut at t it is the oracle for bar t.
    from hmmlearn.hmm import GaussianHMM

    c, res = btc_eth
    x = _features(c["BTCUSDT"])
    fit = res.fits["BTCUSDT"][1]
    lo = c.index.get_loc(fit.first)
    s = c.index.get_loc(fit.at)
    model = GaussianHMM(n_components=3, covariance_type="full")
    model.startprob_, model.transmat_ = fit.startprob, fit.transmat
    model.means_, model.covars_ = fit.means, fit.covars
    for t in (s, s + 1, s + 50, s + 119):
        want = model.predict_proba(x[lo : t + 1])[-1]
        got = [p["BTCUSDT"].iloc[t] for p in res.probs]
        np.testing.assert_allclose(got, want, atol=1e-9)
    # ...whereas the smoothed posterior inside the sample differs: it uses later bars.
    smoothed = model.predict_proba(x[lo : s + 120])[s + 50 - lo]
    got = [p["BTCUSDT"].iloc[s + 50] for p in res.probs]
    assert not np.allclose(got, smoothed, atol=1e-6)


def test_probabilities_up_to_t_do_not_change_when_later_bars_are_removed(btc_eth):
    c, res = btc_eth
    first_refit = c.index.get_loc(res.fits["BTCUSDT"][0].at)
    cuts = [first_refit - 1, first_refit, first_refit + 1, first_refit + 120, len(c) - 40]
    for cut in cuts:
        part = R.fit_regimes(c.iloc[: cut + 1], **SMALL)
        for p_part, p_full in zip(part.probs, res.probs, strict=True):
            np.testing.assert_allclose(
                p_part.to_numpy(), p_full.iloc[: cut + 1].to_numpy(), atol=1e-12, equal_nan=True
            )


def test_states_are_ordered_calm_to_turbulent_and_probabilities_are_proper(btc_eth):
    c, res = btc_eth
    for fits in res.fits.values():
        for fit in fits:
            assert np.all(np.diff(fit.means[:, 1]) > 0)
            assert np.all(np.diff(fit.annual_vol) > 0)
            np.testing.assert_allclose(fit.transmat.sum(axis=1), 1.0)
    total = sum(res.probs)
    valid = total.notna()
    np.testing.assert_allclose(total[valid].stack().dropna(), 1.0, atol=1e-9)
    # Nothing before the first fit, nothing where the asset is not listed.
    first = c.index.get_loc(res.fits["ETHUSDT"][0].at)
    assert res.high_vol["ETHUSDT"].iloc[:first].isna().all()
    assert res.state["ETHUSDT"].iloc[first:].isin([0.0, 1.0, 2.0]).all()
    expected = res.expected_state()
    assert expected.stack().dropna().between(0, 2).all()


@pytest.mark.real_data
def test_btc_crashes_are_in_the_high_vol_state(close):
    res = R.fit_regimes(close[["BTCUSDT"]])  # default schedule: monthly, 1 year first
    high = res.high_vol["BTCUSDT"]
    for start, end in (("2020-03-12", "2020-03-25"), ("2021-05-19", "2021-05-31")):
        assert (high.loc[start:end] > 0.5).all(), (start, end)
    # ...and a quiet stretch is not.
    assert (res.state["BTCUSDT"].loc["2023-07-01":"2023-08-10"] < 2).all()
    vols = np.array([f.annual_vol for f in res.fits["BTCUSDT"]])
    assert (vols[:, 2] > 1.5 * vols[:, 0]).all()


@pytest.mark.real_data
def test_market_regime_on_an_equal_weight_index(close):
    res = R.market_regime(close.loc["2018-01-01":"2021-12-31"])
    high = res.high_vol["market"]
    assert (high.loc["2020-03-12":"2020-03-20"] > 0.5).all()
    assert (high.loc["2021-05-19":"2021-05-25"] > 0.5).all()


def test_portfolio_index_is_causal_and_survivorship_free():
    idx = pd.date_range("2021-01-01", periods=5, freq="1D", tz="UTC")
    close = pd.DataFrame(
        {"A": [100.0, 110.0, 99.0, 99.0, 108.9], "B": [np.nan, np.nan, 10.0, 12.0, 12.0]},
        index=idx,
    )
    level = R.portfolio_index(close)
    # Day 2: only A has a return (+10 %); day 3: A -10 %, B listed (no return yet);
    # day 4: A 0 %, B +20 %; day 5: A +10 %, B 0 %.
    want = [1.0, 1.1, 1.1 * 0.9, 1.1 * 0.9 * 1.1, 1.1 * 0.9 * 1.1 * 1.05]
    np.testing.assert_allclose(level.to_numpy(), want)
    w = pd.DataFrame({"A": [0.5] * 5, "B": [0.0, 0.0, 0.5, 0.5, 0.5]}, index=idx)
    wl = R.portfolio_index(close, w)
    np.testing.assert_allclose(
        wl.to_numpy(), [1.0, 1.05, 1.05 * 0.95, 1.05 * 0.95 * 1.1, 1.05 * 0.95 * 1.1 * 1.05]
    )


@pytest.mark.real_data
def test_regime_change_score_formula_and_causality(close):
    c = close[["BTCUSDT", "SOLUSDT"]].loc["2020-01-01":"2021-12-31"]
    z = R.regime_change_score(c, 10, 60)
    vs = close_to_close_vol(c, 10)
    vl = close_to_close_vol(c, 60)
    t = pd.Timestamp("2020-03-12", tz="UTC")
    want = math.log(vs.at[t, "BTCUSDT"] / vl.at[t, "BTCUSDT"]) * math.sqrt(18)
    assert z.at[t, "BTCUSDT"] == pytest.approx(want)
    assert z.at[t, "BTCUSDT"] > 3  # 12 March 2020 reads as a jump in volatility
    assert z.at[t - pd.Timedelta("1D"), "BTCUSDT"] < 1.5
    assert z["BTCUSDT"].iloc[:60].isna().all() and z["BTCUSDT"].iloc[60:].notna().all()
    for cut in (100, 400, 600):
        part = R.regime_change_score(c.iloc[: cut + 1], 10, 60)
        pd.testing.assert_frame_equal(part, z.iloc[: cut + 1])


def test_fit_regimes_validates_arguments(close):
    with pytest.raises(ValueError):
        R.fit_regimes(close[["BTCUSDT"]], n_states=1)
    with pytest.raises(ValueError):
        R.fit_regimes(close[["BTCUSDT"]], min_history=10)
