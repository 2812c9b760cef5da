"""External series: reading, validation errors, causal alignment, z-scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trimtab.data.errors import DataError
from trimtab.signals.external import (
    align_external,
    bar_closes,
    read_external,
    to_wide,
    zscore_by_observation,
)

LONG = """timestamp,symbol,inflow,outflow
2021-01-01T00:00:00Z,BTCUSDT,100,90
2021-01-01T00:00:00Z,ETHUSDT,1000,1100
2021-01-02T00:00:00Z,BTCUSDT,120,80
2021-01-02T00:00:00Z,ETHUSDT,900,
2021-01-03T12:00:00+02:00,BTCUSDT,150,70
2021-01-04T00:00:00Z,BTCUSDT,130,95
"""


def _write(tmp_path, text: str, name: str = "flows.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_read_long_file(tmp_path):
    data = read_external(_write(tmp_path, LONG))
    assert list(data.columns) == ["timestamp", "symbol", "inflow", "outflow"]
    assert data.attrs["layout"] == "long"
    assert str(data["timestamp"].dt.tz) == "UTC"
    btc = data[data["symbol"] == "BTCUSDT"]
    assert btc["timestamp"].tolist()[2] == pd.Timestamp("2021-01-03 10:00", tz="UTC")  # +02:00
    assert np.isnan(data.loc[data["symbol"] == "ETHUSDT", "outflow"].iloc[1])
    wide = to_wide(data, "inflow")
    assert wide.loc[pd.Timestamp("2021-01-02", tz="UTC"), "ETHUSDT"] == 900


def test_read_wide_file_and_epoch_times(tmp_path):
    ms = pd.Timestamp("2021-01-01", tz="UTC").value // 10**6
    text = f"timestamp,BTCUSDT,ETHUSDT\n{ms},1.5,2.5\n{ms + 86_400_000},1.7,\n"
    data = read_external(_write(tmp_path, text), value_name="netflow")
    assert data.attrs["layout"] == "wide"
    assert list(data.columns) == ["timestamp", "symbol", "netflow"]
    assert len(data) == 3  # the empty ETH cell is dropped
    assert data["timestamp"].iloc[0] == pd.Timestamp("2021-01-01", tz="UTC")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("timestamp,symbol,x\n2021-01-01 00:00:00,BTC,1\n", r"row\(s\) 2 has no timezone"),
        (
            "timestamp,symbol,x\n2021-01-01T00:00Z,BTC,1\nyesterday,BTC,2\n",
            r"'yesterday' in row\(s\) 3",
        ),
        (
            "timestamp,symbol,x\n2021-01-01T00:00Z,BTC,1\n2021-01-01T01:00+01:00,BTC,2\n",
            r"duplicate .* row\(s\) 2, 3",
        ),
        (
            "timestamp,symbol,x\n2021-01-01T00:00Z,BTC,1\n2021-01-02T00:00Z,BTC,abc\n",
            r"column 'x': 'abc' in row\(s\) 3",
        ),
        ("timestamp,symbol,x\n2021-01-01T00:00Z,,1\n", r"column 'symbol': empty in row\(s\) 2"),
        ("time,symbol,x\n2021-01-01T00:00Z,BTC,1\n", "no 'timestamp' column"),
        (
            "timestamp,BTC\n2021-01-01T00:00Z,1\n2021-01-01T00:00Z,2\n",
            r"duplicate timestamp .* row\(s\) 2, 3",
        ),
        ("timestamp,symbol,x\n", "no rows"),
        ("", "empty"),
    ],
)
def test_validation_errors_name_file_row_and_column(tmp_path, text, match):
    p = _write(tmp_path, text)
    with pytest.raises(DataError, match=match) as info:
        read_external(p)
    assert str(p) in str(info.value)


def test_alignment_rule_at_bar_close(tmp_path):
    data = read_external(_write(tmp_path, LONG))
    bars = pd.date_range("2020-12-31", periods=6, freq="1D", tz="UTC")
    got = align_external(data, bars, "inflow", "1d")
    btc = got["BTCUSDT"]
    # Bar 2020-12-31 closes 2021-01-01 00:00: the value stamped then is usable.
    assert btc.iloc[0] == 100
    assert btc.iloc[1] == 120  # bar 01-01 closes 01-02 00:00
    assert btc.iloc[2] == 120  # bar 01-02 closes 01-03 00:00; 01-03 10:00 is later
    assert btc.iloc[3] == 130  # bar 01-03 closes 01-04 00:00 (after 10:00 and at 00:00)
    assert btc.iloc[5] == 130
    # A one-day publication delay pushes everything one bar later.
    late = align_external(data, bars, "inflow", "1d", delay="1D")["BTCUSDT"]
    assert np.isnan(late.iloc[0]) and late.iloc[1] == 100 and late.iloc[2] == 120
    # Staleness: at most a day old at the close.
    fresh = align_external(data, bars, "inflow", "1d", max_age="1D")["BTCUSDT"]
    assert fresh.iloc[3] == 130 and fresh.iloc[4] == 130 and np.isnan(fresh.iloc[5])
    # Symbols reindexed to a panel and a listing mask.
    live = pd.DataFrame(True, index=bars, columns=["BTCUSDT", "SOLUSDT"])
    live.iloc[:2, 0] = False
    m = align_external(data, bars, "outflow", "1d", symbols=["BTCUSDT", "SOLUSDT"], live=live)
    assert list(m.columns) == ["BTCUSDT", "SOLUSDT"] and m["SOLUSDT"].isna().all()
    assert m["BTCUSDT"].iloc[:2].isna().all() and m["BTCUSDT"].iloc[2] == 80
    with pytest.raises(ValueError, match="several value columns"):
        align_external(data, bars)
    assert (bar_closes(bars) == bars + pd.Timedelta("1D")).all()


def test_no_lookahead_truncation(tmp_path):
    rng = np.random.default_rng(0)
    ts = pd.date_range("2021-01-01", periods=200, freq="7h", tz="UTC")
    text = "timestamp,symbol,flow\n" + "".join(
        f"{t.isoformat()},BTCUSDT,{v:.6f}\n"
        for t, v in zip(ts, rng.normal(size=len(ts)), strict=True)
    )
    data = read_external(_write(tmp_path, text))
    bars = pd.date_range("2021-01-01", periods=55, freq="1D", tz="UTC")
    full = align_external(data, bars, "flow", zscore_window=20, zscore_min_periods=10)
    for k in (10, 30, 54):
        close = bars[k] + pd.Timedelta("1D")
        part = align_external(
            data[data["timestamp"] <= close],
            bars[: k + 1],
            "flow",
            zscore_window=20,
            zscore_min_periods=10,
        )
        pd.testing.assert_frame_equal(part, full.iloc[: k + 1])
    # The 1-day bars see the latest 7-hourly value with stamp <= close.
    raw = align_external(data, bars, "flow")["BTCUSDT"]
    s = data.set_index("timestamp")["flow"]
    for k in (0, 20, 40):
        close = bars[k] + pd.Timedelta("1D")
        assert raw.iloc[k] == s[s.index <= close].iloc[-1]


def test_zscore_by_observation_equals_pandas():
    ts = pd.date_range("2021-01-01", periods=30, freq="1D", tz="UTC")
    rng = np.random.default_rng(1)
    data = pd.DataFrame(
        {
            "timestamp": list(ts) * 2,
            "symbol": ["A"] * 30 + ["B"] * 30,
            "x": rng.normal(size=60),
        }
    )
    z = zscore_by_observation(data, "x", 10, 5)
    for sym in ("A", "B"):
        s = data.loc[data["symbol"] == sym, "x"].reset_index(drop=True)
        want = (s - s.rolling(10, min_periods=5).mean()) / s.rolling(10, min_periods=5).std()
        got = z.loc[z["symbol"] == sym, "x"].to_numpy()
        np.testing.assert_allclose(got, want.to_numpy(), equal_nan=True)
    aligned = align_external(data, ts, "x", "1d", zscore_window=10, zscore_min_periods=5)
    za = z.loc[z["symbol"] == "A", "x"].to_numpy()
    # Bar k closes at ts[k + 1], when observation k + 1 is published.
    np.testing.assert_allclose(aligned["A"].to_numpy()[:-1], za[1:], equal_nan=True)
    assert aligned["A"].iloc[-1] == za[-1]
