from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trimtab.data import DataError, panel_from_long, resample_bars, resample_panel

UTC = "UTC"


def hourly(hours: list[int], symbol: str = "BTCUSDT") -> pd.DataFrame:
    """Hourly bars at the given hour offsets from 2021-01-01 00:00 UTC; values follow the hour."""
    h = np.asarray(hours, dtype=float)
    return pd.DataFrame(
        {
            "timestamp": pd.Timestamp("2021-01-01", tz=UTC) + pd.to_timedelta(hours, unit="h"),
            "symbol": symbol,
            "open": 100 + h,
            "high": 110 + h,
            "low": 90 + h,
            "close": 101 + h,
            "volume": 1.0 + h,
            "quote_volume": 10.0 * (1 + h),
        }
    )


def test_four_hour_aggregation_on_utc_bins():
    # starts at 02:00: the first 4h bin (00-04) is a listing bin, kept with what exists
    p = panel_from_long(hourly(list(range(2, 16))), "1h")
    r = resample_panel(p, "4h")
    assert r.timeframe == "4h"
    assert list(r.index.hour) == [0, 4, 8, 12]
    row = r.open.index.get_loc(pd.Timestamp("2021-01-01 04:00", tz=UTC))
    assert r.open.iloc[row, 0] == 104  # first open of hours 4..7
    assert r.high.iloc[row, 0] == 117  # max high
    assert r.low.iloc[row, 0] == 94  # min low
    assert r.close.iloc[row, 0] == 108  # last close
    assert r.volume.iloc[row, 0] == 5 + 6 + 7 + 8
    assert r.quote_volume.iloc[row, 0] == 10 * (5 + 6 + 7 + 8)
    assert r.open.iloc[0, 0] == 102 and r.volume.iloc[0, 0] == 3 + 4
    assert r.provenance["resampled_from"] == "1h"


def test_gap_only_bin_is_a_gap_and_partial_tail_is_dropped():
    hours = [h for h in range(0, 18) if not 4 <= h < 8]  # 04-07 missing; data ends at 17:00
    p = panel_from_long(hourly(hours), "1h")
    r = resample_panel(p, "4h")
    t4 = pd.Timestamp("2021-01-01 04:00", tz=UTC)
    assert not r.has_bar.loc[t4, "BTCUSDT"]
    assert r.close.loc[t4, "BTCUSDT"] == r.close.iloc[0, 0]  # flat at the previous close
    assert r.volume.loc[t4, "BTCUSDT"] == 0
    # 16:00-19:00 is only half covered (data ends 17:00 + 1h): dropped by default
    assert r.index[-1] == pd.Timestamp("2021-01-01 12:00", tz=UTC)
    kept = resample_panel(p, "4h", keep_partial=True)
    assert kept.index[-1] == pd.Timestamp("2021-01-01 16:00", tz=UTC)
    assert kept.close.iloc[-1, 0] == 101 + 17
    # a complete last bin is kept
    full = resample_panel(panel_from_long(hourly(list(range(16))), "1h"), "4h")
    assert full.index[-1] == pd.Timestamp("2021-01-01 12:00", tz=UTC)


def test_delisted_symbol_keeps_its_last_partial_bar():
    bars = pd.concat([hourly(list(range(24))), hourly(list(range(10)), "OLDUSDT")])
    r = resample_bars(bars, "4h")
    old = r[r.symbol == "OLDUSDT"]
    assert list(old["timestamp"].dt.hour) == [0, 4, 8]  # 08-11 partly covered, but final
    assert old["close"].iloc[-1] == 101 + 9


def test_refuses_finer_or_uneven_targets(hourly_panel):
    with pytest.raises(DataError, match="finer timeframe 15m"):
        resample_panel(hourly_panel, "15m")
    eight = resample_panel(hourly_panel.slice(end="2017-09-01"), "8h")
    with pytest.raises(DataError, match="12h is not a whole number of 8h bars"):
        resample_panel(eight, "12h")
    assert resample_panel(hourly_panel, "1h") is hourly_panel


def test_real_hourly_to_4h_to_1d_matches_direct(hourly_panel):
    h4 = resample_panel(hourly_panel, "4h")
    d_via = resample_panel(h4, "1d")
    d_direct = resample_panel(hourly_panel, "1d")
    for field in ("open", "high", "low", "close"):
        pd.testing.assert_frame_equal(getattr(d_via, field), getattr(d_direct, field))
    pd.testing.assert_frame_equal(d_via.has_bar, d_direct.has_bar)
    np.testing.assert_allclose(d_via.volume, d_direct.volume, rtol=1e-12)
    assert d_direct.index[0] == pd.Timestamp("2017-08-17", tz=UTC)
    assert d_direct.index[-1] == pd.Timestamp("2021-06-09", tz=UTC)  # 06-10 has one hour only


def test_daily_from_hourly_matches_the_real_daily_file(hourly_panel, daily_panel):
    """The hourly and daily files come from the same vendor but differ before 2020-08.

    Measured on days with all 24 hourly bars: from 2020-08-02 all four pairs match the
    daily file exactly in open/high/low/close, and volumes to 0.12% (one day, 2021-04-23,
    differs by ~0.06-0.12% in all pairs). Before that, BTC and ETH closes match on all but
    ~8 days (worst 0.3%), highs/lows on ~97% of days (worst 6%, 2019-09-24 BTC low),
    opens often differ by up to 1.5% and volumes by up to 55%: the older hourly bars are
    not the aggregation of the same trades.
    """
    d = resample_panel(hourly_panel, "1d")
    complete = hourly_panel.has_bar.groupby(hourly_panel.index.floor("D")).sum() == 24
    days = d.index.intersection(daily_panel.index)
    recent = days[days >= pd.Timestamp("2020-08-02", tz=UTC)]
    for sym in d.symbols:
        ok = recent[complete[sym].reindex(recent).to_numpy()]
        assert len(ok) > 290
        for field in ("open", "high", "low", "close"):
            np.testing.assert_array_equal(
                getattr(d, field)[sym].reindex(ok), getattr(daily_panel, field)[sym].reindex(ok)
            )
        for field in ("volume", "quote_volume"):
            np.testing.assert_allclose(
                getattr(d, field)[sym].reindex(ok),
                getattr(daily_panel, field)[sym].reindex(ok),
                rtol=1.5e-3,
            )
    for sym in ("BTCUSDT", "ETHUSDT"):
        ok = days[complete[sym].reindex(days).to_numpy()]
        assert len(ok) > 1_350
        close = (d.close[sym].reindex(ok) / daily_panel.close[sym].reindex(ok) - 1).abs()
        assert close.max() < 5e-3 and (close > 1e-12).sum() <= 10
        for field in ("high", "low"):
            rel = (
                getattr(d, field)[sym].reindex(ok) / getattr(daily_panel, field)[sym].reindex(ok)
                - 1
            ).abs()
            assert (rel < 1e-12).mean() > 0.95 and rel.max() < 0.07
