"""Trend signals: Kaufman ER, Wilder ADX, trend strength, multi-timeframe without look-ahead."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DAILY_FILE as DAILY  # real data, else the synthetic sample
from tests.conftest import HOURLY_FILE as HOURLY
from trimtab.data.panel import timeframe_seconds
from trimtab.signals import trend as T

FIELDS = ("open", "high", "low", "close")


@cache
def _load(path: Path) -> T.Bars:
    bars = pd.read_csv(path, parse_dates=["timestamp"])
    frames = {f: bars.pivot(index="timestamp", columns="symbol", values=f) for f in FIELDS}
    return T.Bars(**frames)


@pytest.fixture(scope="module")
def daily() -> T.Bars:
    if not DAILY.exists():
        pytest.skip(f"shared data not found: {DAILY}")
    return _load(DAILY)


@pytest.fixture(scope="module")
def hourly() -> T.Bars:
    if not HOURLY.exists():
        pytest.skip(f"shared data not found: {HOURLY}")
    return _load(HOURLY)


def _synthetic_hourly(n: int = 24 * 40, seed: int = 1) -> T.Bars:
    """Hourly bars starting mid-day (so the first daily bin is partial)."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2021-03-01 07:00", periods=n, freq="1h", tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0.0002, 0.006, (n, 2)), axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.002, (n, 2))))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.002, (n, 2))))
    frames = [pd.DataFrame(a, index=idx, columns=["A", "B"]) for a in (open_, high, low, close)]
    for f in frames:
        f.iloc[:100, 1] = np.nan  # B lists later
    return T.Bars(*frames)


# --------------------------------------------------------------- efficiency ratio


def test_efficiency_ratio_matches_definition():
    close = pd.DataFrame({"X": [10.0, 11.0, 10.5, 12.0, 12.0, 13.0, 11.0]})
    got = T.efficiency_ratio(close, 3)["X"]
    c = close["X"].to_numpy()
    for t in range(3, len(c)):
        path = sum(abs(c[i] - c[i - 1]) for i in range(t - 2, t + 1))
        assert got.iloc[t] == pytest.approx(abs(c[t] - c[t - 3]) / path)
    assert got.iloc[:3].isna().all()
    signed = T.efficiency_ratio(close, 3, signed=True)["X"]
    assert signed.iloc[6] == pytest.approx((11.0 - 12.0) / (0 + 1 + 2))


def test_efficiency_ratio_extremes():
    line = pd.Series(np.arange(1.0, 40.0))
    assert T.efficiency_ratio(line, 10).dropna().eq(1.0).all()
    flat = pd.Series(np.full(30, 5.0))
    assert T.efficiency_ratio(flat, 10).dropna().eq(0.0).all()
    zigzag = pd.Series([1.0, 2.0] * 20)
    assert T.efficiency_ratio(zigzag, 10).dropna().eq(0.0).all()


# ---------------------------------------------------------------------- ADX


def _wilder_loop(h, lo, c, n):
    """Wilder's ADX as in his book: running sums TR14, +DM14, -DM14, then ADX."""
    T_ = len(c)
    adx = np.full(T_, np.nan)
    pdi = np.full(T_, np.nan)
    tr_s = pdm_s = mdm_s = None
    trs, pdms, mdms, dxs = [], [], [], []
    adx_v = None
    for t in range(1, T_):
        if np.isnan(c[t - 1]):  # not listed yet
            continue
        tr = max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1]))
        up, down = h[t] - h[t - 1], lo[t - 1] - lo[t]
        pdm = up if (up > down and up > 0) else 0.0
        mdm = down if (down > up and down > 0) else 0.0
        if tr_s is None:
            trs.append(tr)
            pdms.append(pdm)
            mdms.append(mdm)
            if len(trs) < n:
                continue
            tr_s, pdm_s, mdm_s = sum(trs), sum(pdms), sum(mdms)
        else:
            tr_s = tr_s - tr_s / n + tr
            pdm_s = pdm_s - pdm_s / n + pdm
            mdm_s = mdm_s - mdm_s / n + mdm
        p, m = 100 * pdm_s / tr_s, 100 * mdm_s / tr_s
        pdi[t] = p
        dx = 100 * abs(p - m) / (p + m) if p + m > 0 else 0.0
        if adx_v is None:
            dxs.append(dx)
            if len(dxs) == n:
                adx_v = sum(dxs) / n
        else:
            adx_v = (adx_v * (n - 1) + dx) / n
        if adx_v is not None:
            adx[t] = adx_v
    return pdi, adx


def test_adx_matches_wilder_loop(daily):
    cols = ["BTCUSDT", "SOLUSDT"]
    h, lo, c = (getattr(daily, k)[cols].loc["2020-06-01":"2021-12-31"] for k in FIELDS[1:])
    plus_di, _, adx = T.directional_index(h, lo, c, 14)
    for col in cols:
        want_pdi, want_adx = _wilder_loop(*(f[col].to_numpy() for f in (h, lo, c)), 14)
        np.testing.assert_allclose(plus_di[col].to_numpy(), want_pdi, rtol=1e-9, equal_nan=True)
        np.testing.assert_allclose(adx[col].to_numpy(), want_adx, rtol=1e-9, equal_nan=True)
    # TA-Lib's lookback: the first ADX at bar 2n - 1 of a listing.
    assert adx["BTCUSDT"].first_valid_index() == c.index[27]
    sol = c["SOLUSDT"].dropna().index
    assert adx["SOLUSDT"].first_valid_index() == sol[27]
    pd.testing.assert_frame_equal(adx, T.adx(h, lo, c, 14))


def test_trend_strength_scale():
    n = 200
    idx = pd.date_range("2022-01-01", periods=n, freq="1D", tz="UTC")
    trend = pd.Series(100 * 1.01 ** np.arange(n), index=idx)
    rng = np.random.default_rng(3)
    walk = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))), index=idx)
    chop = pd.Series(100 + np.where(np.arange(n) % 2, 1.0, -1.0), index=idx)
    out = {}
    for name, c in (("trend", trend), ("walk", walk), ("chop", chop)):
        h, lo = c * 1.002, c * 0.998
        out[name] = T.trend_strength(h, lo, c, 14).dropna()
        assert out[name].between(0, 1).all()
    assert out["trend"].min() > 0.95
    assert out["chop"].max() < 0.05
    assert 0.05 < out["walk"].mean() < 0.6


# ------------------------------------------------------------- multi-timeframe


def test_resample_ohlc_bins_on_the_utc_grid():
    bars = _synthetic_hourly()
    coarse = T.resample_ohlc(bars, "4h")
    assert (coarse.close.index.hour % 4 == 0).all()
    b = pd.Timestamp("2021-03-02 08:00", tz="UTC")
    sl = slice(b, b + pd.Timedelta("3h"))
    assert coarse.open.at[b, "A"] == bars.open.loc[sl, "A"].iloc[0]
    assert coarse.high.at[b, "A"] == bars.high.loc[sl, "A"].max()
    assert coarse.low.at[b, "A"] == bars.low.loc[sl, "A"].min()
    assert coarse.close.at[b, "A"] == bars.close.loc[sl, "A"].iloc[-1]
    # The data start at 07:00, inside the 04:00 bin: that first bin is partial.
    assert coarse.close.index[0] == pd.Timestamp("2021-03-01 04:00", tz="UTC")
    weekly = T.resample_ohlc(bars, "1w")
    assert (weekly.close.index.day_of_week == 0).all()


@pytest.mark.parametrize("tf", ["4h", "1d"])
def test_no_fine_bar_sees_an_open_coarse_bar(tf):
    bars = _synthetic_hourly()
    # The signal is the coarse bar's own open time: it names which coarse bar is seen.
    seen = T.multi_timeframe(
        bars,
        lambda b: pd.DataFrame(
            {c: b.close.index.asi8.astype(float) for c in b.close.columns}, index=b.close.index
        ),
        [tf],
    )[tf]["A"]
    step = pd.Timedelta(seconds=timeframe_seconds(tf))
    hour = pd.Timedelta("1h")
    for t, value in seen.items():
        if np.isnan(value):
            # Nothing closed yet: the first coarse bar closes after this fine bar does.
            first_bin = bars.close.index[0].floor(step)
            assert first_bin + step > t + hour
            continue
        opened = pd.Timestamp(int(value), unit=bars.close.index.unit, tz="UTC")
        closes = opened + step
        assert closes <= t + hour  # closed by the time the fine bar closes
        assert closes + step > t + hour  # and it is the latest such bar


def test_coarse_value_appears_on_the_last_fine_bar_of_its_bin():
    bars = _synthetic_hourly()
    daily_close = T.multi_timeframe(bars, lambda b: b.close, ["1d"])["1d"]["A"]
    day = pd.Timestamp("2021-03-05", tz="UTC")
    last_hour = day + pd.Timedelta("23h")
    assert daily_close.at[last_hour] == bars.close.at[last_hour, "A"]
    assert (
        daily_close.at[last_hour - pd.Timedelta("1h")]
        == bars.close.at[day - pd.Timedelta("1h"), "A"]
    )


def test_multi_timeframe_is_causal_under_truncation():
    bars = _synthetic_hourly()

    def run(b: T.Bars) -> pd.DataFrame:
        per_tf = T.multi_timeframe(b, lambda x: T.trend_strength(x.high, x.low, x.close, 3))
        return T.combine_timeframes(per_tf, "mean")

    full = run(bars)
    assert full["A"].notna().sum() > 100
    for cut in (300, 400, 401, 500, 700, 899):  # mid-day and day-end cuts
        part = run(T.Bars(*(f.iloc[: cut + 1] for f in bars)))
        np.testing.assert_allclose(
            part.to_numpy(), full.iloc[: cut + 1].to_numpy(), rtol=1e-12, equal_nan=True
        )


def test_multi_timeframe_masks_unlisted_and_checks_timeframes():
    bars = _synthetic_hourly()
    per_tf = T.multi_timeframe(bars, lambda b: b.close, ["1h", "4h", "1d"])
    for frame in per_tf.values():
        assert frame["B"].iloc[:100].isna().all()
    with pytest.raises(ValueError):
        T.multi_timeframe(bars, lambda b: b.close, ["90m"])


def test_combine_timeframes():
    idx = pd.RangeIndex(3)
    a = pd.DataFrame({"X": [0.2, 0.8, np.nan]}, index=idx)
    b = pd.DataFrame({"X": [0.6, 0.9, 0.1]}, index=idx)
    sig = {"1h": a, "1d": b}
    np.testing.assert_allclose(T.combine_timeframes(sig, "mean")["X"], [0.4, 0.85, np.nan])
    np.testing.assert_allclose(T.combine_timeframes(sig, "min")["X"], [0.2, 0.8, np.nan])
    np.testing.assert_allclose(T.combine_timeframes(sig, "count")["X"], [1.0, 2.0, np.nan])


def test_multi_timeframe_trend_on_real_hourly_bars(hourly):
    got = T.multi_timeframe_trend(hourly, ("1h", "4h", "1d"))
    assert got.shape == hourly.close.shape
    valid = got.stack().dropna()
    assert valid.between(0, 1).all()
    assert len(valid) > 0.9 * hourly.close.notna().to_numpy().sum()
    # BNB and ADA start in 2020-08: nothing before their listing.
    bnb_first = hourly.close["BNBUSDT"].first_valid_index()
    assert got["BNBUSDT"].loc[: bnb_first - pd.Timedelta("1h")].isna().all()


def test_trend_signals_are_causal_on_real_daily_bars(daily):
    cols = ["BTCUSDT", "FILUSDT"]
    frames = T.Bars(*(f[cols].loc["2020-06-01":"2021-06-01"] for f in daily))
    funcs = [
        lambda b: T.efficiency_ratio(b.close, 10),
        lambda b: T.adx(b.high, b.low, b.close, 14),
        lambda b: T.trend_strength(b.high, b.low, b.close, 14),
    ]
    for fn in funcs:
        full = fn(frames)
        for cut in (20, 140, 141, 200, 360):
            part = fn(T.Bars(*(f.iloc[: cut + 1] for f in frames)))
            np.testing.assert_allclose(
                part.to_numpy(), full.iloc[: cut + 1].to_numpy(), rtol=1e-12, equal_nan=True
            )


def test_walk_er_level():
    # The random-walk level 1 / sqrt(n) that trend_strength uses as its zero.
    rng = np.random.default_rng(7)
    walk = pd.Series(np.cumsum(rng.normal(0, 1, 200_000)))
    er = T.efficiency_ratio(walk, 16).dropna()
    assert er.mean() == pytest.approx(1 / math.sqrt(16), rel=0.1)
