"""Funding signals: hand examples, no lookahead, and the real 7-venue file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import FUNDING_FILE as FUNDING  # real data, else the synthetic sample
from trimtab.signals.funding import (
    align_funding,
    funding_asof,
    funding_dispersion,
    funding_intervals,
    funding_signals,
    intervals_per_year,
    load_funding,
)


def _toy() -> pd.DataFrame:
    """Venue 'eight' pays every 8 h for 3 days; venue 'one' every hour for 2 days."""
    rng = np.random.default_rng(0)
    t8 = pd.date_range("2022-01-01", periods=9, freq="8h", tz="UTC")
    t1 = pd.date_range("2022-01-01", periods=48, freq="1h", tz="UTC")
    rows = [(t, "BTCUSDT", "eight", 1e-4 * (1 + i)) for i, t in enumerate(t8)]
    rows += [(t, "BTCUSDT", "one", rng.normal(1e-5, 1e-5)) for t in t1]
    return pd.DataFrame(rows, columns=["timestamp", "symbol", "venue", "funding_rate"])


def test_intervals_and_annualised_carry():
    f = _toy()
    iv = funding_intervals(f)
    assert iv["eight"] == pd.Timedelta("8h") and iv["one"] == pd.Timedelta("1h")
    assert intervals_per_year("8h") == 1095 and intervals_per_year("1h") == 8760
    s = funding_signals(f, z_window="1D", z_min_history="16h")
    eight = s[s["venue"] == "eight"].reset_index(drop=True)
    np.testing.assert_allclose(eight["carry_annual"], eight["funding_rate"] * 1095)
    one = s[s["venue"] == "one"]
    np.testing.assert_allclose(one["carry_annual"], one["funding_rate"] * 8760)
    assert (one["interval_hours"] == 1).all() and (eight["interval_hours"] == 8).all()
    # Override: pretend 'eight' pays every 4 h.
    s4 = funding_signals(f, intervals={"eight": "4h"})
    assert s4.loc[s4["venue"] == "eight", "intervals_per_year"].iloc[0] == 2190


def test_zscore_against_own_trailing_history():
    f = _toy()
    s = funding_signals(f, z_window="1D", z_min_history="16h")
    eight = s[s["venue"] == "eight"].set_index("timestamp")["carry_annual"]
    # Events in (t - 1 day, t]: 3 of them; needs 16h / 8h = 2.
    roll = eight.rolling("1D", min_periods=2)
    want = (eight - roll.mean()) / roll.std()
    got = s[s["venue"] == "eight"]["carry_z"].to_numpy()
    np.testing.assert_allclose(got, want.to_numpy(), equal_nan=True)
    assert np.isnan(got[0]) and np.isfinite(got[1:]).all()
    # Linear ramp, window of 3 -> z = 1 at every full window.
    np.testing.assert_allclose(got[2:], 1.0)


def test_dispersion_on_a_common_clock_without_lookahead():
    f = _toy()
    clock = pd.DatetimeIndex(
        ["2022-01-01 07:30", "2022-01-01 08:00", "2022-01-02 23:00", "2022-01-03 05:00"], tz="UTC"
    )
    d = funding_dispersion(f, clock)["BTCUSDT"]
    one = f[f["venue"] == "one"].set_index("timestamp")["funding_rate"] * 8760
    eight = f[f["venue"] == "eight"].set_index("timestamp")["funding_rate"] * 1095
    # 07:30: 'eight' still shows its 00:00 rate (the 08:00 one is in the future).
    a, b = eight["2022-01-01 00:00"], one["2022-01-01 07:00"]
    assert d.iloc[0] == pytest.approx(abs(a - b) / np.sqrt(2))
    a, b = eight["2022-01-01 08:00"], one["2022-01-01 08:00"]
    assert d.iloc[1] == pytest.approx(abs(a - b) / np.sqrt(2))
    assert np.isfinite(d.iloc[2])
    # 'one' stopped at 2022-01-02 23:00: 6 h later it is stale (> 3 intervals), one venue left.
    assert np.isnan(d.iloc[3])
    assert funding_dispersion(f, clock, max_age=None)["BTCUSDT"].notna().all()
    wide = funding_asof(f, clock, "funding_rate")
    assert wide[("BTCUSDT", "eight")].iloc[0] == f["funding_rate"].iloc[0]


def test_align_funding_to_bars_uses_the_rate_known_at_the_close():
    f = _toy()
    bars = pd.date_range("2021-12-31", periods=5, freq="1D", tz="UTC")
    got = align_funding(f, bars, "1d", venue="eight")
    rate = f[f["venue"] == "eight"].set_index("timestamp")["funding_rate"]
    # Bar 2021-12-31 closes at 2022-01-01 00:00, when the first rate is paid.
    assert got["BTCUSDT"].iloc[0] == rate["2022-01-01 00:00"]
    assert got["BTCUSDT"].iloc[1] == rate["2022-01-02 00:00"]
    assert got["BTCUSDT"].iloc[2] == rate["2022-01-03 00:00"]
    assert got["BTCUSDT"].iloc[3] == rate["2022-01-03 16:00"]  # last one, 8 h old at close
    assert np.isnan(got["BTCUSDT"].iloc[4])  # 32 h old: stale
    hourly = pd.date_range("2022-01-01", periods=4, freq="1h", tz="UTC")
    h = align_funding(f, hourly, venue="eight", symbols=["BTCUSDT", "ETHUSDT"])
    assert list(h.columns) == ["BTCUSDT", "ETHUSDT"] and h["ETHUSDT"].isna().all()
    assert (h["BTCUSDT"] == rate["2022-01-01 00:00"]).all()
    both = align_funding(f, bars, "1d", value="carry_annual")
    assert both.columns.nlevels == 2
    with pytest.raises(KeyError):
        align_funding(f, bars, "1d", venue="nowhere")


def test_causality_truncating_future_events():
    f = _toy()
    cut = pd.Timestamp("2022-01-02 03:00", tz="UTC")
    past = f[f["timestamp"] <= cut]
    clock = pd.date_range("2022-01-01", "2022-01-02 03:00", freq="30min", tz="UTC")
    a = funding_dispersion(f, clock)
    b = funding_dispersion(past, clock)
    pd.testing.assert_frame_equal(a, b)
    bars = pd.date_range("2022-01-01", "2022-01-02 02:00", freq="1h", tz="UTC")
    pd.testing.assert_frame_equal(align_funding(f, bars, "1h"), align_funding(past, bars, "1h"))
    sa = funding_signals(f).set_index(["timestamp", "venue"])
    sb = funding_signals(past).set_index(["timestamp", "venue"])
    pd.testing.assert_frame_equal(sa.loc[sb.index], sb)


@pytest.mark.real_data
def test_real_funding_file():
    if not FUNDING.exists():
        pytest.skip(f"shared data not found: {FUNDING}")
    f = load_funding(FUNDING)
    iv = funding_intervals(f)
    assert iv["dydx"] == pd.Timedelta("1h")
    assert (iv.drop("dydx") == pd.Timedelta("8h")).all() and len(iv) == 7
    s = funding_signals(f)
    carry = s.groupby(["symbol", "venue"])["carry_annual"].mean()
    assert 0.05 < carry[("BTCUSDT", "binance")] < 0.4  # 2020-2022: longs paid ~17 %/yr
    z = s["carry_z"].dropna()
    assert len(z) > 0.9 * len(s) and abs(z.mean()) < 0.5
    d = funding_dispersion(f)
    assert set(d.columns) == {"BTCUSDT", "ETHUSDT"}
    assert (d.stack().dropna() >= 0).all()
    assert d.mean().min() > 0.01 and (d.dropna() > 0).mean().min() > 0.9
    assert d.attrs["venues"].max().max() == 7
    daily = pd.date_range("2020-01-01", "2022-12-30", freq="1D", tz="UTC")
    aligned = align_funding(f, daily, "1d", venue="binance")
    assert aligned.notna().all().all()
