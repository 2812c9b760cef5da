from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trimtab.data import DataError, DataIssue, DataValidationError, validate_bars
from trimtab.data.panel import LONG_COLUMNS

from ._support import DAILY

H = pd.Timedelta(hours=1)
T0 = pd.Timestamp("2021-01-01", tz="UTC")


def bars(rows: list[tuple], *, naive: bool = False) -> pd.DataFrame:
    """Long bars from (hour offset, symbol, open, high, low, close, volume, quote_volume)."""
    df = pd.DataFrame(rows, columns=["h", *LONG_COLUMNS[1:]])
    ts = T0 + pd.to_timedelta(df.pop("h").to_numpy(), unit="h")
    df.insert(0, "timestamp", ts.tz_localize(None) if naive else ts)
    return df


def good(n: int = 5, symbol: str = "BTCUSDT", start: int = 0) -> list[tuple]:
    return [(start + i, symbol, 10.0 + i, 12.0 + i, 9.0 + i, 11.0 + i, 5.0, 55.0) for i in range(n)]


def kinds(issues: list[DataIssue]) -> list[str]:
    return [i.kind for i in issues]


# ------------------------------------------------------------------ real data


def test_real_daily_file_is_clean(daily_raw):
    clean, issues = validate_bars(daily_raw, source=DAILY.name, timeframe="1d")
    assert issues == []
    assert len(clean) == 57_194
    assert list(clean.columns) == list(LONG_COLUMNS)
    assert str(clean["timestamp"].dtype) == "datetime64[us, UTC]"
    keys = list(zip(clean["symbol"], clean["timestamp"], strict=True))
    assert keys == sorted(keys)
    # Speed is measured in bench/bench_backtest.py (load + validate), not asserted here.


def test_real_hourly_gaps_are_warnings(shared):
    from trimtab.data import read_shared_csv

    from ._support import HOURLY

    raw = read_shared_csv(HOURLY)
    clean, issues = validate_bars(raw, source=HOURLY.name, timeframe="1h")
    assert len(clean) == len(raw)
    gaps = [i for i in issues if i.kind == "gap"]
    assert all(i.severity == "warning" for i in issues)
    # 8 outages in the file; BTC and ETH share one in 2017, all four share seven later.
    assert len({i.timestamp for i in gaps}) == 8
    assert len(gaps) == 2 + 7 * 4
    first = min(gaps, key=lambda i: i.timestamp)
    assert first.timestamp == pd.Timestamp("2017-09-22 20:00", tz="UTC")
    assert "4 missing bars" in first.message
    # The one hourly row with no quote volume gets it derived, with a warning.
    (derived,) = [i for i in issues if i.kind == "derived_volume"]
    assert (derived.symbol, derived.row) == ("ETHUSDT", 67_854)  # line in the file (header = 1)
    row = clean[(clean.symbol == "ETHUSDT") & (clean.timestamp == derived.timestamp)]
    assert row["quote_volume"].iloc[0] == pytest.approx(6747.07 * 189.43)


# ------------------------------------------------------------------ each check, each policy


def test_duplicates_identical_and_conflicting():
    rows = good(4)
    df = bars(rows + [rows[1]] + [(2, "BTCUSDT", 10.0, 13.0, 9.0, 12.5, 6.0, 70.0)])
    with pytest.raises(DataValidationError) as e:
        validate_bars(df, source="f.csv", timeframe="1h")
    # rows 5 and 6 are also out of order: they go back in time after row 4
    assert sorted(kinds(e.value.issues)) == ["duplicate", "duplicate", "out_of_order"]
    assert "rows 2, 5" in str(e.value) and "identical" in str(e.value)
    assert "rows 3, 6" in str(e.value) and "different values" in str(e.value)

    dropped, issues = validate_bars(df, source="f.csv", policy="drop", timeframe="1h")
    # identical copies collapse to one; conflicting ones are all dropped, leaving a gap
    assert list(dropped["timestamp"]) == [T0, T0 + H, T0 + 3 * H]
    assert "gap" in kinds(issues)

    repaired, _ = validate_bars(df, source="f.csv", policy="repair", timeframe="1h")
    assert len(repaired) == 4
    assert repaired["close"].iloc[2] == 12.5  # the last copy in file order wins


def test_out_of_order_rows_are_sorted_under_drop_and_repair():
    rows = good(6) + good(3, "ETHUSDT")
    shuffled = bars([rows[i] for i in (3, 0, 7, 5, 1, 8, 2, 6, 4)])
    with pytest.raises(DataValidationError) as e:
        validate_bars(shuffled, source="f.csv")
    assert set(kinds(e.value.issues)) == {"out_of_order"}
    assert {i.symbol for i in e.value.issues} == {"BTCUSDT", "ETHUSDT"}
    expected, _ = validate_bars(bars(rows), source="f.csv")
    for policy in ("drop", "repair"):
        out, issues = validate_bars(shuffled, source="f.csv", policy=policy)
        pd.testing.assert_frame_equal(out, expected)
        assert all(i.severity == "warning" for i in issues)


@pytest.mark.parametrize("value", [-5.0, 0.0, np.nan, np.inf])
def test_bad_prices(value):
    rows = good(5)
    rows[2] = (2, "BTCUSDT", 12.0, 14.0, 11.0, value, 5.0, 55.0)
    df = bars(rows)
    with pytest.raises(DataValidationError) as e:
        validate_bars(df, source="f.csv", timeframe="1h")
    (issue,) = e.value.issues
    assert (issue.kind, issue.row, issue.symbol, issue.timestamp) == (
        "bad_price",
        3,
        "BTCUSDT",
        T0 + 2 * H,
    )
    assert f"close {value!r}" in issue.message
    for policy in ("drop", "repair"):  # a price cannot be repaired: the row goes
        out, issues = validate_bars(df, source="f.csv", policy=policy, timeframe="1h")
        assert T0 + 2 * H not in set(out["timestamp"])
        assert kinds(issues) == ["bad_price", "gap"]


def test_high_below_low_and_inconsistent_ohlc():
    rows = good(4)
    rows[1] = (1, "BTCUSDT", 11.0, 9.0, 12.0, 10.5, 5.0, 55.0)  # high < low
    rows[2] = (2, "BTCUSDT", 12.0, 12.5, 11.0, 13.0, 5.0, 55.0)  # high < close
    rows[3] = (3, "BTCUSDT", 13.0, 14.0, 13.5, 13.8, 5.0, 55.0)  # low > open
    df = bars(rows)
    with pytest.raises(DataValidationError) as e:
        validate_bars(df, source="f.csv")
    assert kinds(e.value.issues) == ["high_below_low", "ohlc_inconsistent", "ohlc_inconsistent"]
    dropped, _ = validate_bars(df, source="f.csv", policy="drop")
    assert len(dropped) == 1
    repaired, issues = validate_bars(df, source="f.csv", policy="repair")
    assert repaired[["high", "low"]].to_numpy().tolist() == [
        [12.0, 9.0],
        [11.0, 10.5],  # high := max(high, open, close), low := min(low, open, close)
        [13.0, 11.0],
        [14.0, 13.0],
    ]
    assert "repaired: high 11.0, low 10.5" in issues[0].message


def test_volumes():
    rows = good(5)
    rows[1] = (1, "BTCUSDT", 11.0, 13.0, 10.0, 12.0, -1.0, 55.0)
    rows[2] = (2, "BTCUSDT", 12.0, 14.0, 11.0, 13.0, np.nan, np.nan)
    rows[3] = (3, "BTCUSDT", 13.0, 15.0, 12.0, 14.0, 2.0, np.nan)  # derivable
    df = bars(rows)
    with pytest.raises(DataValidationError) as e:
        validate_bars(df, source="f.csv")
    assert kinds(e.value.issues) == ["bad_volume", "bad_volume"]
    repaired, issues = validate_bars(df, source="f.csv", policy="repair")
    assert repaired["volume"].tolist() == [5.0, 0.0, 0.0, 2.0, 5.0]
    assert repaired["quote_volume"].tolist() == [55.0, 55.0, 0.0, 28.0, 55.0]
    assert kinds(issues) == ["bad_volume", "bad_volume", "derived_volume"]
    dropped, _ = validate_bars(df, source="f.csv", policy="drop")
    assert dropped["quote_volume"].tolist() == [55.0, 28.0, 55.0]


def test_naive_timestamps():
    df = bars(good(3), naive=True)
    with pytest.raises(DataValidationError) as e:
        validate_bars(df, source="f.csv")
    assert kinds(e.value.issues) == ["naive_timestamp"]
    assert "no timezone" in str(e.value)
    for policy in ("drop", "repair"):
        out, issues = validate_bars(df, source="f.csv", policy=policy)
        assert out["timestamp"].iloc[0] == T0
        assert issues[0].severity == "warning" and "assumed UTC" in issues[0].message


def test_misaligned_and_bad_timestamps_and_symbols():
    df = bars(good(4))
    df["timestamp"] = df["timestamp"].astype(object)
    df.loc[1, "timestamp"] = T0 + H + pd.Timedelta(minutes=30)
    df.loc[2, "timestamp"] = "not a time"
    df.loc[3, "symbol"] = ""
    with pytest.raises(DataValidationError) as e:
        validate_bars(df, source="f.csv", timeframe="1h")
    assert kinds(e.value.issues) == ["misaligned", "bad_timestamp", "missing_symbol"]
    assert "'not a time'" in str(e.value)
    out, issues = validate_bars(df, source="f.csv", policy="repair", timeframe="1h")
    assert len(out) == 1 and all(i.severity == "warning" for i in issues)


def test_gaps_are_warnings_under_every_policy():
    df = bars(good(2) + good(2, start=5))
    for policy in ("fail", "drop", "repair"):
        out, issues = validate_bars(df, source="f.csv", policy=policy, timeframe="1h")
        assert len(out) == 4
        (gap,) = issues
        assert (gap.kind, gap.severity, gap.row, gap.timestamp) == (
            "gap",
            "warning",
            3,
            T0 + 2 * H,
        )
        assert "3 missing bars" in gap.message


def test_row_numbers_come_from_a_row_index():
    df = bars(good(3))
    df.index = pd.Index([10, 11, 12], name="row")
    df.loc[11, "close"] = -1.0
    with pytest.raises(DataValidationError) as e:
        validate_bars(df, source="f.csv")
    assert e.value.issues[0].row == 11


def test_error_message_lists_twenty_and_counts_the_rest():
    rows = [(i, "BTCUSDT", 10.0, 12.0, 9.0, -1.0, 5.0, 55.0) for i in range(25)]
    with pytest.raises(DataValidationError) as e:
        validate_bars(bars(rows), source="prices.csv")
    msg = str(e.value)
    assert msg.startswith("prices.csv: 25 data problems found")
    assert msg.count("\n  - ") == 20
    assert "... and 5 more" in msg
    assert "prices.csv, row 1: BTCUSDT 2021-01-01 00:00 UTC: close -1.0" in msg
    assert len(e.value.issues) == 25
    assert isinstance(e.value, DataError)


def test_missing_columns_and_bad_policy():
    with pytest.raises(DataError, match="lack column.*quote_volume"):
        validate_bars(bars(good(2)).drop(columns="quote_volume"), source="f.csv")
    with pytest.raises(ValueError, match="policy"):
        validate_bars(bars(good(2)), source="f.csv", policy="ignore")  # type: ignore[arg-type]


def test_empty_frame_is_fine():
    out, issues = validate_bars(bars(good(0)), source="f.csv")
    assert out.empty and issues == []


# ------------------------------------------------------------------ property


_values = st.one_of(
    st.floats(min_value=0.01, max_value=1e6),
    st.sampled_from([0.0, -1.0, np.nan, np.inf]),
)
_row = st.tuples(
    st.integers(0, 12),
    st.sampled_from(["BTCUSDT", "ETHUSDT", "", "SOLUSDT"]),
    _values,
    _values,
    _values,
    _values,
    st.one_of(st.floats(0, 1e6), st.sampled_from([-3.0, np.nan])),
    st.one_of(st.floats(0, 1e6), st.sampled_from([-3.0, np.nan, np.inf])),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row, max_size=30), naive=st.booleans(), half=st.lists(st.booleans()))
def test_repair_output_always_passes_fail_validation(rows, naive, half):
    df = bars(rows, naive=naive)
    # some rows half an hour off the grid
    for i, flag in enumerate(half[: len(df)]):
        if flag and i % 3 == 0:
            df.loc[i, "timestamp"] = df.loc[i, "timestamp"] + pd.Timedelta(minutes=30)
    out, issues = validate_bars(df, source="p.csv", policy="repair", timeframe="1h")
    assert all(i.severity == "warning" for i in issues)
    again, issues2 = validate_bars(out, source="p.csv", policy="fail", timeframe="1h")
    assert {i.kind for i in issues2} <= {"gap"}
    pd.testing.assert_frame_equal(again, out)
    keys = list(zip(out["symbol"], out["timestamp"], strict=True))
    assert keys == sorted(set(keys))
    dropped, _ = validate_bars(df, source="p.csv", policy="drop", timeframe="1h")
    validate_bars(dropped, source="p.csv", policy="fail", timeframe="1h")


def test_timestamp_forms():
    df = bars(good(3))
    # different UTC offsets are converted, not refused
    df["timestamp"] = [
        "2021-01-01T03:00:00+03:00",
        "2021-01-01 01:00:00Z",
        "2021-01-01 02:00:00+00:00",
    ]
    out, issues = validate_bars(df, source="f.csv", timeframe="1h")
    assert list(out["timestamp"]) == [T0, T0 + H, T0 + 2 * H] and issues == []
    # epoch milliseconds
    df["timestamp"] = [1609459200000 + i * 3_600_000 for i in range(3)]
    out, _ = validate_bars(df, source="f.csv", timeframe="1h")
    assert out["timestamp"].iloc[2] == T0 + 2 * H
    # a naive Timestamp among zoned ones is refused, not silently taken as UTC
    df["timestamp"] = [T0, (T0 + H).tz_localize(None), T0 + 2 * H]
    with pytest.raises(DataError, match="mixes timestamps without a timezone"):
        validate_bars(df, source="f.csv")
