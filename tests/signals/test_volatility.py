"""Volatility estimators: against independent computations, causality, real wicks."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DAILY_FILE as DAILY  # real data, else the synthetic sample
from trimtab.signals import volatility as V
from trimtab.signals.features import trailing_volatility


@cache
def _daily() -> dict[str, pd.DataFrame]:
    bars = pd.read_csv(DAILY, parse_dates=["timestamp"])
    return {
        f: bars.pivot(index="timestamp", columns="symbol", values=f)
        for f in ("open", "high", "low", "close")
    }


@pytest.fixture(scope="module")
def daily() -> dict[str, pd.DataFrame]:
    if not DAILY.exists():
        pytest.skip(f"shared data not found: {DAILY}")
    return _daily()


def _ohlc(n: int = 300, seed: int = 0, start: str = "2021-01-01") -> dict[str, pd.DataFrame]:
    """Random-walk OHLC for three assets; B lists late, C delists early."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range(start, periods=n, freq="1D", tz="UTC")
    cols = ["A", "B", "C"]
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, (n, 3)), axis=0))
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0, 0.002, (n, 3)))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.01, (n, 3))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.01, (n, 3))))
    out = {}
    for name, arr in (("open", open_), ("high", high), ("low", low), ("close", close)):
        f = pd.DataFrame(arr, index=idx, columns=cols)
        f.iloc[: n // 5, 1] = np.nan
        f.iloc[-n // 6 :, 2] = np.nan
        out[name] = f
    return out


# ----------------------------------------------------------------- close-to-close


def test_close_to_close_matches_pandas_rolling_std_per_column():
    p = _ohlc()
    got = V.close_to_close_vol(p["close"], 20, 365)
    for col in p["close"]:
        r = p["close"][col].pct_change(fill_method=None)
        want = r.rolling(20).std() * math.sqrt(365)
        pd.testing.assert_series_equal(got[col], want, check_names=False)


def test_close_to_close_matches_features_trailing_volatility_and_explicit_windows():
    p = _ohlc()
    close = p["close"]
    got = V.close_to_close_vol(close, 20, 8760).to_numpy()
    np.testing.assert_allclose(
        got, trailing_volatility(close.to_numpy(), 20, 8760), rtol=1e-9, equal_nan=True
    )
    r = close["A"].to_numpy()[1:] / close["A"].to_numpy()[:-1] - 1
    t = 150
    assert got[t, 0] == pytest.approx(np.std(r[t - 20 : t], ddof=1) * math.sqrt(8760))


def test_close_to_close_nan_before_enough_history_and_outside_listing():
    p = _ohlc()
    vol = V.close_to_close_vol(p["close"], 20)
    first_b = p["close"]["B"].first_valid_index()
    pos = p["close"].index.get_loc(first_b)
    assert vol["B"].iloc[: pos + 20].isna().all()
    assert np.isfinite(vol["B"].iloc[pos + 20])
    assert vol["C"][p["close"]["C"].isna()].isna().all()


# ----------------------------------------------------------------------- EWMA


def _ewma_loop(close: np.ndarray, lam: float, m: int, ppy: float) -> np.ndarray:
    out = np.full(len(close), np.nan)
    squares: list[float] = []
    var = None
    for t in range(1, len(close)):
        if not (np.isfinite(close[t]) and np.isfinite(close[t - 1])):
            continue
        r = close[t] / close[t - 1] - 1
        if var is None:
            squares.append(r * r)
            if len(squares) == m:
                var = sum(squares) / m
        else:
            var = lam * var + (1 - lam) * r * r
        if var is not None:
            out[t] = math.sqrt(var * ppy)
    return out


def test_ewma_matches_a_direct_loop():
    p = _ohlc()
    got = V.ewma_vol(p["close"], lam=0.94, min_periods=25, periods_per_year=365)
    for j, col in enumerate(p["close"]):
        want = _ewma_loop(p["close"][col].to_numpy(), 0.94, 25, 365)
        np.testing.assert_allclose(got.iloc[:, j].to_numpy(), want, rtol=1e-12, equal_nan=True)


def test_ewma_halflife_is_lambda():
    p = _ohlc()
    a = V.ewma_vol(p["close"], halflife=10)
    b = V.ewma_vol(p["close"], lam=0.5 ** (1 / 10))
    pd.testing.assert_frame_equal(a, b)
    series = V.ewma_vol(p["close"]["A"])
    assert isinstance(series, pd.Series)
    pd.testing.assert_series_equal(series, V.ewma_vol(p["close"])["A"])


# ----------------------------------------------------------------- range-based


def _bars(rows: list[tuple[float, float, float, float]]) -> dict[str, pd.DataFrame]:
    idx = pd.date_range("2022-01-01", periods=len(rows), freq="1D", tz="UTC")
    arr = np.array(rows, dtype=float)
    return {
        name: pd.DataFrame(arr[:, i], index=idx, columns=["X"])
        for i, name in enumerate(("open", "high", "low", "close"))
    }


HAND = [
    (100.0, 104.0, 98.0, 102.0),
    (102.0, 103.0, 97.0, 99.0),
    (99.5, 101.0, 95.0, 100.0),
    (100.0, 106.0, 99.0, 105.0),
]


def test_parkinson_hand_example():
    b = _bars(HAND)
    got = V.parkinson_vol(b["high"], b["low"], 3, 365, wick_mult=None)["X"]
    sq = [math.log(h / lo) ** 2 for _, h, lo, _ in HAND]
    for t in (2, 3):
        var = sum(sq[t - 2 : t + 1]) / 3 / (4 * math.log(2))
        assert got.iloc[t] == pytest.approx(math.sqrt(var * 365), rel=1e-12)
    assert got.iloc[:2].isna().all()


def test_yang_zhang_hand_example():
    b = _bars(HAND)
    got = V.yang_zhang_vol(b["open"], b["high"], b["low"], b["close"], 3, 365, wick_mult=None)
    n = 3
    k = 0.34 / (1.34 + (n + 1) / (n - 1))
    bars = HAND[1:]  # the first bar has no previous close, hence no gap term
    prev_close = [c for *_, c in HAND[:-1]]
    o = [math.log(op / pc) for (op, *_), pc in zip(bars, prev_close, strict=True)]
    c = [math.log(cl / op) for op, _, _, cl in bars]
    rs = [
        math.log(h / op) * (math.log(h / op) - math.log(cl / op))
        + math.log(lo / op) * (math.log(lo / op) - math.log(cl / op))
        for op, h, lo, cl in bars
    ]

    def var(x):
        m = sum(x) / len(x)
        return sum((v - m) ** 2 for v in x) / (len(x) - 1)

    want = math.sqrt((var(o) + k * var(c) + (1 - k) * sum(rs) / n) * 365)
    assert got["X"].iloc[3] == pytest.approx(want, rel=1e-12)
    assert got["X"].iloc[:3].isna().all()


def test_robust_equals_naive_when_no_wick_is_extreme():
    p = _ohlc()
    args = (p["high"], p["low"], 20, 365)
    naive = V.parkinson_vol(*args, wick_mult=None)
    robust = V.parkinson_vol(*args, close=p["close"], open=p["open"], wick_mult=50)
    both = robust.notna()
    np.testing.assert_allclose(robust[both], naive[both], rtol=1e-12)
    # The robust one starts REF_MIN bars later: a listing bar has no reference yet.
    a_first = robust["A"].first_valid_index()
    assert p["close"].index.get_loc(a_first) == V.REF_MIN + 20 - 1


def test_clip_wicks_rule_on_a_bad_print():
    p = _ohlc()
    low = p["low"].copy()
    t = 200
    low.iloc[t, 0] = 1e-4  # a LINK-style print
    h2, l2 = V.clip_wicks(p["high"], low, p["close"], p["open"])
    body_lo = min(p["open"].iloc[t, 0], p["close"].iloc[t, 0])
    ref = np.log(p["high"]["A"] / low["A"]).iloc[t - V.REF_WINDOW : t].median()
    assert l2.iloc[t, 0] == pytest.approx(body_lo * math.exp(-V.WICK_MULT * ref))
    # Ordinary bars keep their prices.
    assert l2.iloc[t - 1, 0] == p["low"].iloc[t - 1, 0]
    assert h2.iloc[t, 0] == p["high"].iloc[t, 0]


def test_robust_parkinson_needs_close():
    p = _ohlc()
    with pytest.raises(ValueError, match="close"):
        V.parkinson_vol(p["high"], p["low"])


@pytest.mark.real_data
def test_real_wicks_blow_up_naive_estimators_but_not_robust_ones(daily):
    o, h, lo, c = (daily[k] for k in ("open", "high", "low", "close"))
    cc = V.close_to_close_vol(c, 30)
    naive_pk = V.parkinson_vol(h, lo, 30, wick_mult=None)
    robust_pk = V.parkinson_vol(h, lo, 30, close=c, open=o)
    naive_yz = V.yang_zhang_vol(o, h, lo, c, 30, wick_mult=None)
    robust_yz = V.yang_zhang_vol(o, h, lo, c, 30)

    # LINK traded at 0.0001 on 2020-03-12: a 30-day window holding that bar.
    for day in ("2020-03-12", "2020-03-25"):
        ref = cc.at[pd.Timestamp(day, tz="UTC"), "LINKUSDT"]
        at = (pd.Timestamp(day, tz="UTC"), "LINKUSDT")
        assert naive_pk.at[at] > 8 * ref
        assert naive_yz.at[at] > 8 * ref
        assert robust_pk.at[at] < 2 * ref
        assert robust_yz.at[at] < 2 * ref

    # FIL printed 430 on its listing day (2020-10-15, open 10, close 62.5). The naive
    # Parkinson window that holds that bar reads ~800 % a year; the robust one leaves the
    # unjudgeable listing bar out and its first value is in line with close-to-close.
    fil = c["FILUSDT"].dropna()
    first_full = fil.index[29]
    assert naive_pk.at[first_full, "FILUSDT"] > 5.0
    assert np.isnan(robust_pk.at[first_full, "FILUSDT"])
    first_robust = robust_pk["FILUSDT"].first_valid_index()
    ratio = robust_pk.at[first_robust, "FILUSDT"] / cc.at[first_robust, "FILUSDT"]
    assert 0.5 < ratio < 2.0

    # Over the whole panel the robust estimators track close-to-close; the naive ones
    # have blow-ups.
    both = cc.notna() & robust_yz.notna()
    rel = (robust_yz[both] / cc[both]).stack().dropna()
    assert rel.quantile(0.99) < 2.0
    assert rel.max() < 4.0
    assert (naive_yz[both] / cc[both]).stack().max() > 10.0


def test_clipping_is_rare_on_real_data(daily):
    o, h, lo, c = (daily[k] for k in ("open", "high", "low", "close"))
    h2, l2 = V.clip_wicks(h, lo, c, o)
    judged = h2.notna()
    changed = ((h2 != h) | (l2 != lo)) & judged
    assert changed.to_numpy().sum() / judged.to_numpy().sum() < 0.005


# ------------------------------------------------------------------------- ATR


def _atr_loop(h: np.ndarray, lo: np.ndarray, c: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(c), np.nan)
    trs: list[float] = []
    atr = None
    for t in range(1, len(c)):
        tr = max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1]))
        if atr is None:
            trs.append(tr)
            if len(trs) == n:
                atr = sum(trs) / n
        else:
            atr = (atr * (n - 1) + tr) / n
        if atr is not None:
            out[t] = atr
    return out


def test_atr_matches_wilder_loop(daily):
    cols = ["BTCUSDT", "ETHUSDT"]
    h, lo, c = (daily[k][cols].iloc[:400] for k in ("high", "low", "close"))
    got = V.atr(h, lo, c, 14)
    for col in cols:
        want = _atr_loop(h[col].to_numpy(), lo[col].to_numpy(), c[col].to_numpy(), 14)
        np.testing.assert_allclose(got[col].to_numpy(), want, rtol=1e-10, equal_nan=True)
    assert got["BTCUSDT"].first_valid_index() == c.index[14]


# ----------------------------------------------------------------------- GARCH


def _btc_returns(daily, n: int) -> pd.Series:
    c = daily["close"]["BTCUSDT"].iloc[:n]
    return np.log(c / c.shift(1))


def _arch_vol(y: np.ndarray, dist: str = "t", mean: str = "Zero", horizon: int = 1) -> float:
    from arch import arch_model

    am = arch_model(
        y,
        mean=mean,
        vol="GARCH",
        p=1,
        q=1,
        dist="studentst" if dist == "t" else "normal",
        rescale=False,
    )
    res = am.fit(disp="off", show_warning=False)
    var = res.forecast(horizon=horizon, reindex=False).variance.to_numpy()[-1]
    return float(np.sqrt(var.mean() * 365) / 100)


def test_garch_equals_arch_forecast_at_refits_and_fixed_filter_between(daily):
    from arch import arch_model

    close = daily["close"][["BTCUSDT"]].iloc[:700]
    res = V.fit_garch(close, refit_every=150, min_history=400, engine="arch", warm_start=False)
    vol = res.vol["BTCUSDT"]
    y = (np.log(close["BTCUSDT"] / close["BTCUSDT"].shift(1)) * 100).to_numpy()
    fits = res.fits["BTCUSDT"]
    assert [f.n_obs for f in fits] == [400, 550]
    assert vol.iloc[:400].isna().all() and vol.iloc[400:].notna().all()
    for f in fits:
        s = close.index.get_loc(f.at)
        assert vol.iloc[s] == pytest.approx(_arch_vol(y[1 : s + 1]), rel=1e-6)
        # Between refits: arch's own forecast with the refit's parameters held fixed.
        for t in (s + 1, s + 77):
            if t >= len(y):
                continue
            am = arch_model(y[1 : t + 1], mean="Zero", vol="GARCH", dist="studentst", rescale=False)
            fx = am.fix([f.omega, f.alpha, f.beta, f.nu])
            var = fx.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0]
            assert vol.iloc[t] == pytest.approx(math.sqrt(var * 365) / 100, rel=1e-9)


def test_fast_engine_matches_arch(daily):
    close = daily["close"][["BTCUSDT", "ETHUSDT"]].iloc[:900]
    kw = {"refit_every": 200, "min_history": 400, "warm_start": False}
    ref = V.fit_garch(close, engine="arch", **kw).vol
    for warm in (False, True):
        fast = V.fit_garch(close, engine="fast", **{**kw, "warm_start": warm}).vol
        pd.testing.assert_frame_equal(fast.isna(), ref.isna())
        np.testing.assert_allclose(fast.to_numpy(), ref.to_numpy(), rtol=2e-3, equal_nan=True)


@pytest.mark.parametrize("dist,mean", [("normal", "constant"), ("t", "constant")])
def test_garch_other_specs_and_horizon_match_arch(daily, dist, mean):
    close = daily["close"]["BTCUSDT"].iloc[:500]
    y = (np.log(close / close.shift(1)) * 100).to_numpy()[1:]
    got = V.garch_forecast(
        close, min_history=499, dist=dist, mean=mean, horizon=5, engine="arch", warm_start=False
    )
    assert isinstance(got, pd.Series)
    want = _arch_vol(y, dist, "Constant", horizon=5)
    assert got.iloc[-1] == pytest.approx(want, rel=1e-6)
    fast = V.garch_forecast(close, min_history=499, dist=dist, mean=mean, horizon=5)
    assert fast.iloc[-1] == pytest.approx(want, rel=2e-3)


def test_garch_on_log_returns_and_hourly_scale(daily):
    close = daily["close"][["BTCUSDT"]].iloc[:500]
    lr = np.log(close / close.shift(1))
    a = V.garch_forecast(close, min_history=400, refit_every=50)
    b = V.garch_forecast(log_returns=lr, min_history=400, refit_every=50)
    pd.testing.assert_frame_equal(a, b)
    # Same returns called hourly: the per-bar variance is the same, so annualised vol
    # scales by sqrt(8760 / 365) (the internal scaling must not change the fit).
    c = V.garch_forecast(close, min_history=400, refit_every=50, periods_per_year=8760)
    np.testing.assert_allclose(c.to_numpy(), a.to_numpy() * math.sqrt(24), rtol=1e-4)


# ------------------------------------------------------------------ causality


def _truncation_check(fn, frames: dict[str, pd.DataFrame], cuts: list[int]) -> None:
    full = fn(frames)
    for t in cuts:
        part = fn({k: v.iloc[: t + 1] for k, v in frames.items()})
        np.testing.assert_allclose(
            part.to_numpy(), full.iloc[: t + 1].to_numpy(), rtol=1e-12, atol=0, equal_nan=True
        )


CAUSAL = {
    "close_to_close": lambda p: V.close_to_close_vol(p["close"], 20),
    "ewma": lambda p: V.ewma_vol(p["close"], min_periods=10),
    "parkinson": lambda p: V.parkinson_vol(p["high"], p["low"], 20, close=p["close"]),
    "parkinson_naive": lambda p: V.parkinson_vol(p["high"], p["low"], 20, wick_mult=None),
    "yang_zhang": lambda p: V.yang_zhang_vol(p["open"], p["high"], p["low"], p["close"], 20),
    "atr": lambda p: V.atr(p["high"], p["low"], p["close"], 14),
    "clip_wicks_low": lambda p: V.clip_wicks(p["high"], p["low"], p["close"], p["open"])[1],
}


@pytest.mark.parametrize("name", sorted(CAUSAL))
def test_causal_truncation(daily, name):
    cols = ["BTCUSDT", "LINKUSDT", "FILUSDT"]
    frames = {k: v[cols].loc["2019-06-01":"2021-06-01"] for k, v in daily.items()}
    n = len(frames["close"])
    _truncation_check(CAUSAL[name], frames, [30, 200, 290, 505, n - 2])


def test_garch_causal_truncation(daily):
    cols = ["BTCUSDT", "LINKUSDT"]
    close = daily["close"][cols].loc["2019-01-01":"2020-09-01"]

    def fn(p):
        return V.garch_forecast(p["close"], min_history=300, refit_every=60)

    # BTC refits at bars 300, 360, ...; LINK (listed 2019-01-16) at 315, 375, ...
    # Cuts on refit bars, just after one, and mid-block.
    _truncation_check(fn, {"close": close}, [299, 300, 315, 361, 390, 500])
