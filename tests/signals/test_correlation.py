"""Correlation signals against pandas, sklearn and direct computations; causality; real data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.covariance import LedoitWolf

from tests.conftest import DAILY_FILE as DAILY  # real data, else the synthetic sample
from trimtab.signals.correlation import (
    absorption_ratio,
    average_correlation,
    average_pairwise_correlation,
    cluster_labels,
    correlation_clusters,
    correlation_distance,
    correlation_shift,
    correlation_shift_scan,
    ewma_correlation,
    ewma_correlation_at,
    ewma_covariance,
    ledoit_wolf_correlation,
    ledoit_wolf_shrinkage,
    rolling_zscore,
    window_correlation,
)


def _returns(T: int = 160, N: int = 7, seed: int = 0) -> pd.DataFrame:
    """Factor-driven returns with late listings, a delisting, a hole and a flat stretch."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((T, 1))
    beta = rng.uniform(0.2, 1.2, N)
    x = (f * beta + rng.standard_normal((T, N))) * 0.02 + 0.001
    x[:45, 2] = np.nan  # lists late
    x[110:, 3] = np.nan  # delists
    x[70, 4] = np.nan  # one missing return
    x[20:50, 5] = 0.0  # flat filler bars: zero variance in some windows
    cols = [f"C{i}" for i in range(N)]
    return pd.DataFrame(
        x, index=pd.date_range("2021-01-01", periods=T, freq="D", tz="UTC"), columns=cols
    )


def _naive_average(df: pd.DataFrame, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The obvious pandas way: rolling(w).corr(), then average the off-diagonal."""
    rc = df.rolling(window).corr()
    T, N = df.shape
    per = np.full((T, N), np.nan)
    mkt = np.full(T, np.nan)
    iu = np.triu_indices(N, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, t in enumerate(df.index):
            m = rc.loc[t].to_numpy(dtype=float).copy()
            np.fill_diagonal(m, np.nan)
            per[i] = np.nanmean(m, axis=1)
            mkt[i] = np.nanmean(m[iu])
    return per, mkt


@pytest.mark.parametrize("window", [10, 30])
def test_average_correlation_equals_pandas_rolling_corr(window):
    df = _returns()
    per, mkt = _naive_average(df, window)
    fast = average_correlation(df, window)
    assert fast.index.equals(df.index) and fast.columns.equals(df.columns)
    np.testing.assert_array_equal(np.isnan(fast.to_numpy()), np.isnan(per))
    np.testing.assert_allclose(fast.to_numpy(), per, atol=1e-10, equal_nan=True)
    m = average_pairwise_correlation(df, window)
    np.testing.assert_allclose(m.to_numpy(), mkt, atol=1e-10, equal_nan=True)
    # The listing rules: C2 only after 45 + window bars; C3 gone after delisting.
    assert fast["C2"].iloc[: 45 + window - 1].isna().all()
    assert fast["C2"].iloc[45 + window - 1 :].notna().all()
    assert fast["C3"].iloc[110:].isna().all()


def test_average_pairwise_is_mean_of_per_asset_values():
    df = _returns()
    per = average_correlation(df, 20)
    m = average_pairwise_correlation(df, 20)
    np.testing.assert_allclose(
        per.mean(axis=1).to_numpy(), m.to_numpy(), atol=1e-12, equal_nan=True
    )


def test_window_correlation_equals_pandas():
    df = _returns()
    at = df.index[100]
    got = window_correlation(df, 30, at)
    block = df.loc[:at].iloc[-30:].dropna(axis=1)
    block = block.loc[:, block.std() > 0]
    pd.testing.assert_frame_equal(got, block.corr(), atol=1e-12, check_names=False)


def test_rolling_zscore_equals_pandas():
    rng = np.random.default_rng(3)
    df = pd.DataFrame(rng.standard_normal((200, 4)) * 0.1 + 0.3)
    df.iloc[:30, 1] = np.nan
    df.iloc[90:95, 2] = np.nan
    df.iloc[120:160, 3] = 0.25  # constant stretch: std 0 -> NaN
    got = rolling_zscore(df, 50, 10)
    roll = df.rolling(50, min_periods=10)
    want = (df - roll.mean()) / roll.std()
    want = want.where(np.isfinite(want))
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), atol=1e-8, equal_nan=True)
    s = rolling_zscore(df[0], 50, 10)
    assert isinstance(s, pd.Series)
    np.testing.assert_allclose(s.to_numpy(), want[0].to_numpy(), atol=1e-8, equal_nan=True)


def test_correlation_shift_equals_naive_pandas():
    df = _returns(T=220, N=6, seed=1)
    short, long, zw, zmin = 10, 40, 60, 20
    got = correlation_shift(df, short, long, zw, zmin)
    s_per, s_m = _naive_average(df, short)
    l_per, l_m = _naive_average(df, long)
    shift = pd.DataFrame(s_per - l_per, index=df.index, columns=df.columns)
    roll = shift.rolling(zw, min_periods=zmin)
    z = (shift - roll.mean()) / roll.std()
    np.testing.assert_allclose(got.shift.to_numpy(), shift.to_numpy(), atol=1e-10, equal_nan=True)
    np.testing.assert_allclose(got.z.to_numpy(), z.to_numpy(), atol=1e-7, equal_nan=True)
    mshift = pd.Series(s_m - l_m, index=df.index)
    mroll = mshift.rolling(zw, min_periods=zmin)
    mz = (mshift - mroll.mean()) / mroll.std()
    np.testing.assert_allclose(got.market_z.to_numpy(), mz.to_numpy(), atol=1e-7, equal_nan=True)
    assert got.z.notna().to_numpy().sum() > 500


def test_scan_is_last_row_of_full_computation_and_sorted():
    rng = np.random.default_rng(2)
    T, N = 700, 60
    f = rng.standard_normal((T, 1))
    x = (0.5 * f + rng.standard_normal((T, N))) * 0.03
    # Half the assets start co-moving with the factor in the last 30 bars.
    x[-30:, : N // 2] += 1.5 * f[-30:] * 0.03
    x[:650, -1] = np.nan  # too young for the long window
    df = pd.DataFrame(
        x,
        index=pd.date_range("2020-01-01", periods=T, tz="UTC"),
        columns=[f"A{i:02d}" for i in range(N)],
    )
    scan = correlation_shift_scan(df, 30, 180, 365)
    full = correlation_shift(df, 30, 180, 365)
    assert list(scan.columns) == ["avg_corr_short", "avg_corr_long", "shift", "shift_z"]
    assert len(scan) == N and scan.attrs["asof"] == df.index[-1]
    np.testing.assert_allclose(
        scan["shift_z"].to_numpy(),
        full.z.iloc[-1].reindex(scan.index).to_numpy(),
        atol=1e-9,
        equal_nan=True,
    )
    z = scan["shift_z"].to_numpy()
    finite = z[np.isfinite(z)]
    assert np.all(np.diff(finite) <= 0)
    assert scan.index[-1] == f"A{N - 1:02d}" and np.isnan(z[-1])
    top = set(scan.index[: N // 2])
    assert len(top & {f"A{i:02d}" for i in range(N // 2)}) >= N // 2 - 2
    assert scan["shift_z"].iloc[0] > 2


def test_causality_truncating_the_future_changes_nothing():
    df = _returns(T=220, N=6, seed=4)
    cut = 150
    full_a = average_correlation(df, 20)
    full_s = correlation_shift(df, 10, 40, 60, 20)
    full_ar = absorption_ratio(df, 40)
    full_e = ewma_correlation(df)
    part = df.iloc[:cut]
    np.testing.assert_allclose(
        average_correlation(part, 20).to_numpy(),
        full_a.iloc[:cut].to_numpy(),
        atol=1e-12,
        equal_nan=True,
    )
    ps = correlation_shift(part, 10, 40, 60, 20)
    np.testing.assert_allclose(
        ps.z.to_numpy(), full_s.z.iloc[:cut].to_numpy(), atol=1e-9, equal_nan=True
    )
    np.testing.assert_allclose(
        absorption_ratio(part, 40).to_numpy(),
        full_ar.iloc[:cut].to_numpy(),
        atol=1e-12,
        equal_nan=True,
    )
    np.testing.assert_allclose(ewma_correlation(part), full_e[:cut], atol=1e-12, equal_nan=True)
    # And a future shock does not move the past.
    shocked = df.copy()
    shocked.iloc[cut:] = shocked.iloc[cut:] * 5 + 0.1
    np.testing.assert_allclose(
        average_correlation(shocked, 20).iloc[:cut].to_numpy(),
        full_a.iloc[:cut].to_numpy(),
        atol=1e-12,
        equal_nan=True,
    )


def test_ewma_covariance_and_correlation_equal_pandas_ewm():
    df = _returns(T=120, N=6, seed=5)
    lam, mp = 0.94, 10
    cov = ewma_covariance(df, lam, mp)
    corr = ewma_correlation(df, lam, mp)
    x = df.to_numpy()
    T, N = x.shape
    for i in range(N):
        for j in range(N):
            joint = np.isfinite(x[:, i]) & np.isfinite(x[:, j])
            prod = pd.Series(np.where(joint, x[:, i] * x[:, j], np.nan))
            want = (
                prod.ewm(alpha=1 - lam, adjust=True, ignore_na=False, min_periods=mp)
                .mean()
                .to_numpy()
            )
            sq_i = (
                pd.Series(np.where(joint, x[:, i] ** 2, np.nan))
                .ewm(alpha=1 - lam, min_periods=mp)
                .mean()
            )
            sq_j = (
                pd.Series(np.where(joint, x[:, j] ** 2, np.nan))
                .ewm(alpha=1 - lam, min_periods=mp)
                .mean()
            )
            want_c = want / np.sqrt(sq_i.to_numpy() * sq_j.to_numpy())
            if i == j:
                want_c = np.where(np.isfinite(want), 1.0, np.nan)
            now = np.isfinite(x[:, i]) & np.isfinite(x[:, j])
            want = np.where(now, want, np.nan)
            want_c = np.where(now, want_c, np.nan)
            np.testing.assert_allclose(cov[:, i, j], want, rtol=1e-10, atol=1e-14, equal_nan=True)
            np.testing.assert_allclose(corr[:, i, j], want_c, atol=1e-10, equal_nan=True)
    ok = np.isfinite(corr)
    assert ok.sum() > 0.6 * corr.size and np.all(np.abs(corr[ok]) <= 1)
    at = df.index[90]
    one = ewma_correlation_at(df, at, lam, mp)
    keep = [df.columns.get_loc(c) for c in one.columns]
    np.testing.assert_allclose(one.to_numpy(), corr[90][np.ix_(keep, keep)], atol=1e-12)
    assert (
        "C3" in one.columns and "C3" not in ewma_correlation_at(df, df.index[-1], lam, mp).columns
    )


def test_ewma_recursion_by_hand():
    r = np.array([[0.01, 0.02], [-0.02, -0.01], [0.03, 0.0]])
    lam = 0.9
    w = lam ** np.arange(2, -1, -1)
    cov = ewma_covariance(r, lam, 1)
    want = (w[:, None, None] * r[:, :, None] * r[:, None, :]).sum(0) / w.sum()
    np.testing.assert_allclose(cov[-1], want, rtol=1e-12)


def test_ledoit_wolf_equals_sklearn():
    df = _returns(T=200, N=7, seed=6)
    at = df.index[-1]
    got = ledoit_wolf_correlation(df, 60, at)
    x = df.iloc[-60:][got.columns].to_numpy()
    z = (x - x.mean(0)) / x.std(0)
    lw = LedoitWolf().fit(z)
    np.testing.assert_allclose(got.to_numpy(), lw.covariance_, atol=1e-12)
    assert got.attrs["shrinkage"] == pytest.approx(lw.shrinkage_, abs=1e-12)
    assert 0 < got.attrs["shrinkage"] < 1
    np.testing.assert_allclose(np.diag(got), 1.0)
    assert np.linalg.eigvalsh(got.to_numpy()).min() > 0
    raw = LedoitWolf().fit(x)
    assert ledoit_wolf_shrinkage(x) == pytest.approx(raw.shrinkage_, abs=1e-12)


def test_absorption_ratio_equals_direct_eigen_computation():
    df = _returns(T=150, N=7, seed=7)
    w = 40
    ar = absorption_ratio(df, w, fraction=0.3)
    ar_c = absorption_ratio(df, w, k=2, use_correlation=True)
    for t in [39, 60, 99, 120, 149]:
        block = df.iloc[t - w + 1 : t + 1].dropna(axis=1)
        block = block.loc[:, block.std() > 0]
        n = block.shape[1]
        ev = np.sort(np.linalg.eigvalsh(np.cov(block.to_numpy(), rowvar=False)))[::-1]
        k = min(int(np.ceil(0.3 * n)), n - 1)
        assert ar.iloc[t] == pytest.approx(ev[:k].sum() / ev.sum(), rel=1e-9)
        evc = np.sort(np.linalg.eigvalsh(np.corrcoef(block.to_numpy(), rowvar=False)))[::-1]
        assert ar_c.iloc[t] == pytest.approx(evc[:2].sum() / evc.sum(), rel=1e-9)
    assert ar.iloc[: w - 1].isna().all()


def test_absorption_ratio_one_factor_vs_independent():
    rng = np.random.default_rng(8)
    T, N = 300, 10
    idx = pd.date_range("2022-01-01", periods=T, tz="UTC")
    indep = pd.DataFrame(rng.standard_normal((T, N)), index=idx)
    one = pd.DataFrame(rng.standard_normal((T, 1)) + 0.1 * rng.standard_normal((T, N)), index=idx)
    a_ind = absorption_ratio(indep, 100, k=2).dropna()
    a_one = absorption_ratio(one, 100, k=2).dropna()
    assert a_one.min() > 0.95
    assert a_ind.max() < 0.45 and a_ind.mean() == pytest.approx(0.2 + 0.1, abs=0.1)


def test_clusters_recover_blocks_and_mark_unlisted():
    rng = np.random.default_rng(9)
    T = 200
    f1, f2 = rng.standard_normal((T, 1)), rng.standard_normal((T, 1))
    a = f1 + 0.3 * rng.standard_normal((T, 3))
    b = f2 + 0.3 * rng.standard_normal((T, 4))
    c = rng.standard_normal((T, 1))
    x = np.hstack([a, b, c, rng.standard_normal((T, 1))])
    x[:150, -1] = np.nan
    cols = ["a1", "a2", "a3", "b1", "b2", "b3", "b4", "solo", "young"]
    df = pd.DataFrame(x, index=pd.date_range("2021-01-01", periods=T, tz="UTC"), columns=cols)
    labels = correlation_clusters(df, df.index[-1], window=90)
    assert labels.index.tolist() == cols
    assert pd.isna(labels["young"])
    assert labels[["b1", "b2", "b3", "b4"]].nunique() == 1 and labels["b1"] == 1  # largest first
    assert labels[["a1", "a2", "a3"]].nunique() == 1 and labels["a1"] == 2
    assert labels["solo"] == 3
    two = correlation_clusters(df, df.index[-1], window=90, n_clusters=2, shrink=True)
    assert two.dropna().nunique() == 2
    d = correlation_distance(pd.DataFrame([[1.0, -1.0], [-1.0, 1.0]]))
    np.testing.assert_allclose(d.to_numpy(), [[0, 1], [1, 0]])
    one = cluster_labels(pd.DataFrame([[1.0]], index=["x"], columns=["x"]))
    assert one.tolist() == [1]


def test_scan_runs_on_a_wide_panel():
    # Speed is measured in bench/, not asserted here; this checks the wide case works.
    rng = np.random.default_rng(10)
    T, N = 600, 500
    df = pd.DataFrame((0.4 * rng.standard_normal((T, 1)) + rng.standard_normal((T, N))) * 0.03)
    df.index = pd.date_range("2021-01-01", periods=T, tz="UTC")
    scan = correlation_shift_scan(df)
    assert scan["shift_z"].notna().all()
    assert list(scan.index) == list(scan.sort_values("shift_z", ascending=False).index)


@pytest.fixture(scope="module")
def daily_returns() -> pd.DataFrame:
    if not DAILY.exists():
        pytest.skip(f"shared data not found: {DAILY}")
    bars = pd.read_csv(DAILY, parse_dates=["timestamp"], usecols=["timestamp", "symbol", "close"])
    close = bars.pivot(index="timestamp", columns="symbol", values="close").sort_index()
    return close.pct_change(fill_method=None)


@pytest.mark.real_data
def test_real_data_average_correlation_spikes_in_march_2020(daily_returns):
    avg = average_pairwise_correlation(daily_returns, 30)
    calm = avg["2020-01-01":"2020-02-29"].mean()
    crash = avg["2020-03-12":"2020-04-15"].max()
    assert crash > 0.9 and crash > calm + 0.2
    ar = absorption_ratio(daily_returns, 60, fraction=0.2)
    assert ar["2020-03-12":"2020-04-15"].max() > ar["2019-06-01":"2020-02-29"].median()
    shift = correlation_shift(daily_returns, 30, 180, 365)
    assert shift.market_z["2020-03-12":"2020-04-15"].max() > 2
    scan = correlation_shift_scan(daily_returns)
    assert len(scan) == daily_returns.shape[1] and scan["shift_z"].notna().sum() >= 25
