"""Liquidity signals: paper formulas by hand, simulated spreads, causality, real data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DAILY_FILE as DAILY  # real data, else the synthetic sample
from trimtab.data.panel import panel_from_long
from trimtab.signals.liquidity import (
    abdi_ranaldo_spread,
    amihud_illiquidity,
    ar_two_bar_squared_spread,
    corwin_schultz_spread,
    cs_two_bar_spread,
    liquidity_signals,
    volume_trend,
)

# A few real-looking daily bars: (high, low, close); the third opens with a gap up.
BARS = [
    (101.0, 98.0, 100.0),
    (102.5, 99.0, 101.5),
    (106.0, 102.0, 104.0),
    (104.5, 100.5, 101.0),
    (103.0, 100.0, 102.8),
]


def _frames(bars=BARS):
    idx = pd.date_range("2021-01-01", periods=len(bars), tz="UTC")
    h, lo, c = (pd.DataFrame({"X": [b[i] for b in bars]}, index=idx) for i in range(3))
    return h, lo, c


def _cs_paper(h0, l0, h1, l1, c0):
    """Corwin and Schultz (2012), eqs. (14), (18)-(19), with the overnight adjustment."""
    if l1 > c0:
        h1, l1 = h1 - (l1 - c0), c0
    elif h1 < c0:
        h1, l1 = c0, l1 + (c0 - h1)
    beta = math.log(h0 / l0) ** 2 + math.log(h1 / l1) ** 2
    gamma = math.log(max(h0, h1) / min(l0, l1)) ** 2
    k = 3 - 2 * math.sqrt(2)
    alpha = (math.sqrt(2 * beta) - math.sqrt(beta)) / k - math.sqrt(gamma / k)
    return 2 * (math.exp(alpha) - 1) / (1 + math.exp(alpha))


def _ar_paper(h0, l0, c0, h1, l1):
    """Abdi and Ranaldo (2017), eq. (9): 4 (c_t - eta_t)(c_t - eta_t+1)."""
    eta0 = (math.log(h0) + math.log(l0)) / 2
    eta1 = (math.log(h1) + math.log(l1)) / 2
    c = math.log(c0)
    return 4 * (c - eta0) * (c - eta1)


def test_two_bar_estimates_equal_the_paper_formulas():
    h, lo, c = _frames()
    cs = cs_two_bar_spread(h, lo, c)["X"].to_numpy()
    ar = ar_two_bar_squared_spread(h, lo, c)["X"].to_numpy()
    assert np.isnan(cs[0]) and np.isnan(ar[0])
    for t in range(1, len(BARS)):
        (h0, l0, c0), (h1, l1, _) = BARS[t - 1], BARS[t]
        assert cs[t] == pytest.approx(_cs_paper(h0, l0, h1, l1, c0), abs=1e-14)
        assert ar[t] == pytest.approx(_ar_paper(h0, l0, c0, h1, l1), abs=1e-14)
    # Bar 3 opened above the previous close (low 102 > close 101.5): the adjustment bites.
    h2, l2 = BARS[2][0] - 0.5, BARS[2][1] - 0.5
    unadjusted = cs_two_bar_spread(h, lo, c, adjust_gaps=False)["X"].iloc[2]
    assert unadjusted != pytest.approx(cs[2])
    assert cs[2] == pytest.approx(_cs_paper(101.0 + 1.5, 99.0, h2 + 0.5, l2 + 0.5, 101.5))


def test_window_handling_of_negatives():
    h, lo, c = _frames()
    cs = cs_two_bar_spread(h, lo, c)["X"].to_numpy()[1:]
    ar = ar_two_bar_squared_spread(h, lo, c)["X"].to_numpy()[1:]
    got_w = corwin_schultz_spread(h, lo, c, window=4, min_periods=4)["X"].iloc[-1]
    got_2 = corwin_schultz_spread(h, lo, c, window=4, min_periods=4, negatives="two_bar")["X"].iloc[
        -1
    ]
    assert got_w == pytest.approx(max(cs.mean(), 0) * 1e4)
    assert got_2 == pytest.approx(np.maximum(cs, 0).mean() * 1e4)
    a_w = abdi_ranaldo_spread(h, lo, c, window=4, min_periods=4)["X"].iloc[-1]
    a_2 = abdi_ranaldo_spread(h, lo, c, window=4, min_periods=4, negatives="two_bar")["X"].iloc[-1]
    assert a_w == pytest.approx(math.sqrt(max(ar.mean(), 0)) * 1e4)
    assert a_2 == pytest.approx(np.sqrt(np.maximum(ar, 0)).mean() * 1e4)
    assert corwin_schultz_spread(h, lo, c, window=4, min_periods=4)["X"].iloc[:-1].isna().all()


def _simulate(spread: float, T: int = 1500, ticks: int = 300, vol: float = 0.01, seed: int = 0):
    """Bars from a tick random walk; trades at mid * exp(+-spread/2), buyer or seller at random."""
    rng = np.random.default_rng(seed)
    mid = np.cumsum(rng.standard_normal(T * ticks) * vol / math.sqrt(ticks)).reshape(T, ticks)
    trade = mid + spread / 2 * rng.choice([-1.0, 1.0], size=(T, ticks))
    idx = pd.date_range("2020-01-01", periods=T, tz="UTC")
    frame = lambda a: pd.DataFrame({"X": np.exp(a)}, index=idx)  # noqa: E731
    return frame(trade.max(1)), frame(trade.min(1)), frame(trade[:, -1])


@pytest.mark.parametrize("seed", [0, 1])
def test_spread_estimators_on_a_simulated_random_walk(seed):
    h, lo, c = _simulate(0.0, seed=seed)
    w = len(h)
    cs0 = corwin_schultz_spread(h, lo, c, window=w)["X"].iloc[-1]
    ar0 = abdi_ranaldo_spread(h, lo, c, window=w)["X"].iloc[-1]
    assert cs0 < 20 and ar0 < 20  # bps, against 100 bps daily volatility
    true_bps = 60.0
    h, lo, c = _simulate(true_bps / 1e4, seed=seed)
    cs = corwin_schultz_spread(h, lo, c, window=w)["X"].iloc[-1]
    ar = abdi_ranaldo_spread(h, lo, c, window=w)["X"].iloc[-1]
    assert cs == pytest.approx(true_bps, rel=0.15)
    assert ar == pytest.approx(true_bps, rel=0.15)
    # A rolling month is noisier but still centred near the truth.
    monthly = corwin_schultz_spread(h, lo, c, window=30)["X"].dropna()
    assert monthly.median() == pytest.approx(true_bps, rel=0.4)


def test_amihud_and_volume_trend_by_hand():
    idx = pd.date_range("2022-01-01", periods=6, tz="UTC")
    close = pd.DataFrame({"X": [100, 101, 99.99, 99.99, 102, 100.0]}, index=idx)
    qv = pd.DataFrame({"X": [1e6, 2e6, 1e6, 0.0, 4e6, 2e6]}, index=idx)
    hb = pd.DataFrame({"X": [True, True, True, False, True, True]}, index=idx)
    got = amihud_illiquidity(close, qv, window=3, min_periods=2, has_bar=hb)["X"]
    r = close["X"].pct_change().abs()
    ratio = (r / qv["X"] * 1e6).where(hb["X"] & (qv["X"] > 0))
    want = ratio.rolling(3, min_periods=2).mean()
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), equal_nan=True)
    assert got.iloc[2] == pytest.approx(np.mean([0.01 / 2, 0.01 / 1]))
    vt = volume_trend(qv, short=2, long=4, min_periods=2)["X"]
    assert vt.iloc[5] == pytest.approx(math.log(3e6 / np.mean([1e6, 0.0, 4e6, 2e6])))
    assert np.isnan(vt.iloc[0])
    close2 = close.copy()
    close2.iloc[:2] = np.nan  # not listed yet
    assert amihud_illiquidity(close2, qv, 3, 1)["X"].iloc[:3].isna().all()


def test_causality():
    h, lo, c = _simulate(0.003, T=200, ticks=50)
    qv = c * 1e6
    fns = [
        lambda H, L, C, Q: corwin_schultz_spread(H, L, C, 20),
        lambda H, L, C, Q: abdi_ranaldo_spread(H, L, C, 20),
        lambda H, L, C, Q: amihud_illiquidity(C, Q, 20),
        lambda H, L, C, Q: volume_trend(Q, 5, 30),
    ]
    cut = 120
    for fn in fns:
        full = fn(h, lo, c, qv).iloc[:cut]
        part = fn(h.iloc[:cut], lo.iloc[:cut], c.iloc[:cut], qv.iloc[:cut])
        pd.testing.assert_frame_equal(full, part)
        assert part.iloc[-50:].notna().all().all()


@pytest.fixture(scope="module")
def daily_panel():
    if not DAILY.exists():
        pytest.skip(f"shared data not found: {DAILY}")
    bars = pd.read_csv(DAILY, parse_dates=["timestamp"])
    bars = bars.rename(columns={"volume_base": "volume", "volume_quote": "quote_volume"})
    return panel_from_long(bars)


@pytest.mark.real_data
def test_real_data_sanity(daily_panel):
    sig = liquidity_signals(daily_panel)
    assert set(sig) == {"amihud", "volume_trend", "spread_cs_bps", "spread_ar_bps"}
    for name, frame in sig.items():
        assert frame.shape == daily_panel.close.shape, name
        # Nothing where the asset is not listed.
        assert not frame.where(~daily_panel.live).notna().any().any(), name
    ami = sig["amihud"]["2021":"2023"].median()
    assert ami["BTCUSDT"] < ami["ETHUSDT"] < ami["ZRXUSDT"]
    assert ami.idxmin() == "BTCUSDT" and ami["BTCUSDT"] * 10 < ami.drop("BTCUSDT").median()
    for k in ("spread_cs_bps", "spread_ar_bps"):
        v = sig[k].stack().dropna()
        assert len(v) > 50_000 and (v >= 0).all() and v.median() < 500
