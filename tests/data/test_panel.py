from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trimtab.data import panel_from_long, periods_per_year
from trimtab.data.panel import infer_timeframe, timeframe_seconds

UTC = "UTC"


def long(rows):
    df = pd.DataFrame(rows, columns=["h", "symbol", "close"])
    out = pd.DataFrame(
        {
            "timestamp": pd.Timestamp("2021-01-01", tz=UTC) + pd.to_timedelta(df["h"], unit="h"),
            "symbol": df["symbol"],
            "open": df["close"],
            "high": df["close"] + 1,
            "low": df["close"] - 1,
            "close": df["close"],
            "volume": 2.0,
            "quote_volume": 2.0 * df["close"],
        }
    )
    return out


def test_periods_per_year_uses_365_days():
    assert periods_per_year("1d") == 365
    assert periods_per_year("1h") == 8760
    assert periods_per_year("4h") == 2190
    with pytest.raises(ValueError, match="unknown timeframe"):
        timeframe_seconds("3d")


def test_listing_gaps_and_delisting():
    bars = long([(0, "A", 10), (1, "A", 11), (3, "A", 13), (2, "B", 20), (3, "B", 21)])
    p = panel_from_long(bars)
    assert p.timeframe == "1h" and p.symbols == ["A", "B"]
    assert np.isnan(p.close.iloc[:2]["B"]).all()  # before listing: NaN, not back-filled
    gap = p.index[2]
    assert p.close.loc[gap, "A"] == 11 and p.high.loc[gap, "A"] == 11  # flat
    assert p.volume.loc[gap, "A"] == 0 and not p.has_bar.loc[gap, "A"]
    assert p.live.sum().to_dict() == {"A": 4, "B": 2}
    back = p.to_long()
    assert len(back) == 5 and set(back.columns) >= {"timestamp", "symbol", "close"}


def test_off_grid_bars_are_refused_not_dropped():
    bars = long([(0, "A", 10), (1, "A", 11), (2, "A", 12)])
    bars.loc[2, "timestamp"] += pd.Timedelta(minutes=30)
    with pytest.raises(ValueError, match="not on the 1h grid"):
        panel_from_long(bars, "1h")


def test_slice_and_select(daily_panel):
    p = daily_panel.slice("2023-10-15", "2023-10-25")
    assert p.index[0] == pd.Timestamp("2023-10-15", tz=UTC) and len(p.index) == 11
    assert "ARBUSD" in p.symbols
    assert "ARBUSD" not in daily_panel.slice("2023-11-01").symbols
    with pytest.raises(KeyError, match="LUNAUSDT"):
        daily_panel.select(["LUNAUSDT"])
    assert infer_timeframe(p.index) == "1d"
