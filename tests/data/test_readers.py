from __future__ import annotations

import gzip
import hashlib
import json
import random
import shutil

import numpy as np
import pandas as pd
import pytest

from trimtab.data import (
    DataError,
    DataValidationError,
    load_bars,
    load_panel,
    read_freqtrade,
    read_freqtrade_funding,
    read_funding,
    read_market_caps,
    read_shared_csv,
)
from trimtab.data.readers import classify_file, parse_freqtrade_name, timeframe_from_name

from ._support import CAPS, DAILY, FREQTRADE, FUNDING, HOURLY, set_field, write_lines

UTC = "UTC"


# ------------------------------------------------------------------ shared CSV


@pytest.mark.real_data
def test_read_shared_csv(daily_raw):
    assert list(daily_raw.columns) == [
        "timestamp",
        "symbol",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
    ]
    assert len(daily_raw) == 57_194
    assert daily_raw.index.name == "row" and daily_raw.index[0] == 2  # line 1 is the header
    first = daily_raw.iloc[0]
    assert (first.symbol, first.timestamp, first.high) == (
        "AAVEUSDT",
        pd.Timestamp("2020-10-15", tz=UTC),
        59.0,
    )
    assert first.quote_volume == pytest.approx(4650960.754)


@pytest.mark.real_data
def test_load_panel_daily_folder_default(daily_panel, shared):
    p = load_panel(shared)
    assert p.timeframe == "1d"
    assert len(p.symbols) == 34 and "BTCUSDT" in p.symbols
    pd.testing.assert_frame_equal(p.close, daily_panel.close)
    prov = p.provenance
    (f,) = prov["files"]
    assert f["path"] == str(DAILY)
    assert f["sha256"] == hashlib.sha256(DAILY.read_bytes()).hexdigest()
    assert f["rows"] == 57_194 and len(f["symbols"]) == 34
    assert f["first"].startswith("2017-08-17") and f["last"].startswith("2023-12-31")
    assert prov["policy"] == "fail" and prov["timeframe"] == "1d"
    assert prov["issues"] == {"errors": 0, "warnings": 0}
    skipped = {s["path"].split("/")[-1]: s["reason"] for s in prov["skipped"]}
    assert "funding" in skipped[FUNDING.name]
    assert "market caps" in skipped[CAPS.name]
    assert any(name.startswith("universe_cmc") for name in skipped)
    json.dumps(prov)  # provenance must be serialisable for the journal


@pytest.mark.real_data
def test_listing_and_delisting_are_nan_never_filled(daily_panel):
    p = daily_panel
    arb = p.close["ARBUSD"]
    assert arb.last_valid_index() == pd.Timestamp("2023-10-20", tz=UTC)
    after = p.index > pd.Timestamp("2023-10-20", tz=UTC)
    for field in ("open", "high", "low", "close", "volume", "quote_volume"):
        assert getattr(p, field)["ARBUSD"][after].isna().all(), field
    assert not p.live["ARBUSD"][after].any() and not p.has_bar["ARBUSD"][after].any()
    sol = p.close["SOLUSDT"]
    assert sol.first_valid_index() == pd.Timestamp("2020-08-11", tz=UTC)
    assert sol[: pd.Timestamp("2020-08-10", tz=UTC)].isna().all()
    assert p.index[0] == pd.Timestamp("2017-08-17", tz=UTC)
    assert p.index[-1] == pd.Timestamp("2023-12-31", tz=UTC)
    assert p.index.is_monotonic_increasing and p.index.is_unique
    # LINK's real 2020-03-12 wick is data, not an error
    assert p.low.loc["2020-03-12", "LINKUSDT"] == 0.0001


@pytest.mark.real_data
def test_hourly_gaps_are_flat_untradable_bars(hourly_panel):
    p = hourly_panel
    assert p.timeframe == "1h" and p.symbols == ["ADAUSDT", "BNBUSDT", "BTCUSDT", "ETHUSDT"]
    assert p.provenance["issues"] == {"errors": 0, "warnings": 31}
    gap_rows = ~p.has_bar & p.live
    assert gap_rows.sum().to_dict() == {
        "ADAUSDT": 12,  # 1+3+1+1+1+2+3 missing hours
        "BNBUSDT": 12,
        "BTCUSDT": 16,  # and 4 hours on 2017-09-22
        "ETHUSDT": 16,
    }
    t = pd.Timestamp("2020-12-21 15:00", tz=UTC)  # a 3-hour outage
    prev_close = p.close.loc[t - pd.Timedelta(hours=1), "BTCUSDT"]
    for field in ("open", "high", "low", "close"):
        assert getattr(p, field).loc[t, "BTCUSDT"] == prev_close
    assert p.volume.loc[t, "BTCUSDT"] == 0 and p.quote_volume.loc[t, "BTCUSDT"] == 0
    assert not p.has_bar.loc[t, "BTCUSDT"]
    warnings = p.provenance["warnings"]
    assert any("BTCUSDT 2020-12-21 15:00 UTC: 3 missing bars" in w for w in warnings)
    # BNB and ADA list in 2020-08: NaN before, not gap-filled
    assert p.close["BNBUSDT"][: pd.Timestamp("2020-08-01 22:00", tz=UTC)].isna().all()


@pytest.mark.real_data
def test_timeframe_selection(shared):
    # No 4h files: the 1h bars are resampled, and provenance says so.
    p4 = load_panel(
        shared, timeframe="4h", symbols=["BTCUSDT"], start="2021-01-01", end="2021-01-02"
    )
    assert p4.timeframe == "4h" and p4.provenance["resampled_from"] == "1h"
    p1 = load_panel(
        shared, timeframe="1h", symbols=["BTCUSDT"], start="2021-01-01", end="2021-01-01 03:00"
    )
    first = p4.index[0]
    assert p4.high.loc[first, "BTCUSDT"] == p1.high["BTCUSDT"].max()
    assert p4.close.loc[first, "BTCUSDT"] == p1.close["BTCUSDT"].iloc[-1]
    # Nothing finer than 1m exists to build 30s bars from, and 1w cannot come from nothing.
    with pytest.raises(DataError) as e:
        load_panel(shared / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz", timeframe="1h")
    assert "no 1h bars" in str(e.value) or "1d" in str(e.value)
    with pytest.raises(DataError, match="unknown timeframe '7h'"):
        load_panel(shared, timeframe="7h")
    with pytest.raises(DataError) as e:
        load_panel(FREQTRADE)  # 5m and 1h, no 1d
    assert "several timeframes" in str(e.value)
    assert "5m: ADA_BTC-5m.feather, XRP_ETH-5m.feather" in str(e.value)
    assert "1h: XRP_USDT_USDT-1h-futures.feather" in str(e.value)


def test_symbols_start_end(shared):
    p = load_panel(shared, symbols=["BTC/USDT", "ARBUSD"], start="2023-10-01", end="2023-10-31")
    assert p.symbols == ["ARBUSD", "BTCUSDT"]
    assert p.index[0] == pd.Timestamp("2023-10-01", tz=UTC)
    assert p.index[-1] == pd.Timestamp("2023-10-31", tz=UTC)
    assert p.live["ARBUSD"].sum() == 20
    assert p.provenance["symbols"] == ["BTCUSDT", "ARBUSD"]
    with pytest.raises(DataError) as e:
        load_panel(shared, symbols=["BTCUSDT", "LUNAUSDT"])
    assert "unknown symbol(s) LUNAUSDT" in str(e.value) and "available: AAVEUSDT" in str(e.value)
    with pytest.raises(DataError, match="no bars for ARBUSD from 2023-11-01"):
        load_panel(shared, symbols=["ARBUSD", "BTCUSDT"], start="2023-11-01")
    with pytest.raises(DataError, match="no bars from 2030-01-01 00:00:00"):
        load_panel(shared, start="2030-01-01")
    with pytest.raises(DataError, match="after end"):
        load_panel(shared, start="2022-01-01", end="2021-01-01")


@pytest.mark.real_data
def test_load_bars_returns_long_frame_and_issues(shared):
    loaded = load_bars(HOURLY, start="2020-12-21", end="2020-12-21 23:00")
    assert loaded.timeframe == "1h"
    assert len(loaded.issues) == 31
    assert loaded.bars["timestamp"].min() == pd.Timestamp("2020-12-21", tz=UTC)
    assert len(loaded.bars) == 4 * (24 - 3)


# ------------------------------------------------------------------ corrupted copies


def test_corrupted_csv_under_each_policy(tmp_path, daily_lines):
    header, lines = daily_lines[0], list(daily_lines)
    lines[10] = set_field(lines[10], "close", "-5", header)  # row 11
    lines[20] = set_field(lines[20], "high", "1", header)  # row 21: high < low
    lines.append(lines[30])  # row 1502: duplicate of row 31 (and out of order)
    path = write_lines(tmp_path / "bad_1d.csv.gz", lines)

    with pytest.raises(DataValidationError) as e:
        load_panel(path)
    msg = str(e.value)
    assert f"{path}, row 11: AAVEUSDT 2020-10-24 00:00 UTC: close -5.0" in msg
    assert f"{path}, row 21: AAVEUSDT 2020-11-03 00:00 UTC: high 1.0 is below low" in msg
    assert "rows 31, 1502" in msg
    assert sorted(i.kind for i in e.value.issues) == [
        "bad_price",
        "duplicate",
        "high_below_low",
        "out_of_order",
    ]

    dropped = load_panel(path, policy="drop")
    assert not np.isnan(dropped.close.loc["2020-10-24", "AAVEUSDT"])  # flat, not NaN
    assert not dropped.has_bar.loc["2020-10-24", "AAVEUSDT"]  # dropped row -> gap bar
    assert not dropped.has_bar.loc["2020-11-03", "AAVEUSDT"]
    assert dropped.provenance["issues"]["warnings"] >= 4

    repaired = load_panel(path, policy="repair")
    assert not repaired.has_bar.loc["2020-10-24", "AAVEUSDT"]  # a price cannot be repaired
    row21 = daily_lines[20].split(",")
    assert repaired.has_bar.loc["2020-11-03", "AAVEUSDT"]
    o, _, lo, c = map(float, row21[2:6])
    # high widened to cover open and close; low untouched (it already covers them)
    assert repaired.high.loc["2020-11-03", "AAVEUSDT"] == max(o, c)
    assert repaired.low.loc["2020-11-03", "AAVEUSDT"] == lo
    assert repaired.provenance["policy"] == "repair"
    assert any("kept the last" in w for w in repaired.provenance["warnings"])


def test_shuffled_copy_repairs_to_the_original(tmp_path, daily_lines):
    body = daily_lines[1:]
    random.Random(7).shuffle(body)
    path = write_lines(tmp_path / "shuffled_1d.csv", [daily_lines[0], *body])
    with pytest.raises(DataValidationError, match="not in time order"):
        load_panel(path)
    original = load_panel(write_lines(tmp_path / "orig_1d.csv", daily_lines))
    repaired = load_panel(path, policy="repair")
    pd.testing.assert_frame_equal(repaired.close, original.close)
    pd.testing.assert_frame_equal(repaired.quote_volume, original.quote_volume)


def test_naive_timestamps_in_csv(tmp_path, daily_lines):
    lines = [daily_lines[0]] + [ln.replace("+00:00", "") for ln in daily_lines[1:50]]
    path = write_lines(tmp_path / "naive_1d.csv", lines)
    with pytest.raises(DataValidationError, match="no timezone"):
        load_panel(path)
    p = load_panel(path, policy="repair")
    assert p.index[0] == pd.Timestamp("2020-10-15", tz=UTC)
    assert "assumed UTC" in p.provenance["warnings"][0]


def test_mixed_and_unparseable_timestamps(tmp_path, daily_lines):
    lines = list(daily_lines[:30])
    lines[5] = lines[5].replace("+00:00", "")
    with pytest.raises(DataError, match=r"mixes timestamps without a timezone \(row 6"):
        read_shared_csv(write_lines(tmp_path / "mixed.csv", lines))
    lines = [daily_lines[0]] + ["yesterday" + ln[25:] for ln in daily_lines[1:5]]
    with pytest.raises(DataError, match=r"no timestamp could be parsed \(row 2: 'yesterday'\)"):
        read_shared_csv(write_lines(tmp_path / "garbage.csv", lines))
    lines = list(daily_lines[:30])
    lines[7] = "2020-13-45 00:00:00+00:00" + lines[7][25:]
    path = write_lines(tmp_path / "one_bad_1d.csv", lines)
    with pytest.raises(DataValidationError, match="row 8: AAVEUSDT: timestamp '2020-13-45"):
        load_panel(path)
    assert len(load_panel(path, policy="drop").close) == 29  # the bad row becomes a gap


def test_truncated_gzip(tmp_path, shared):
    data = DAILY.read_bytes()
    path = tmp_path / "truncated_1d.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        read_shared_csv(path)
    assert str(path) in str(e.value) and "corrupt or truncated" in str(e.value)
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_panel(tmp_path)
    not_gzip = tmp_path / "text_1d.csv.gz"
    not_gzip.write_text("timestamp,symbol\n")
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_shared_csv(not_gzip)


def test_missing_column(tmp_path, daily_lines):
    cols = daily_lines[0].split(",")
    drop = cols.index("close")
    lines = [
        ",".join(p for i, p in enumerate(ln.split(",")) if i != drop) for ln in daily_lines[:20]
    ]
    path = write_lines(tmp_path / "noclose_1d.csv", lines)
    with pytest.raises(DataError) as e:
        read_shared_csv(path)
    assert str(path) in str(e.value) and "missing column(s) close" in str(e.value)
    with pytest.raises(DataError, match="missing column"):
        load_panel(tmp_path)  # looks like bars, so it is reported, not skipped


def test_empty_and_missing_files(tmp_path, daily_lines):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=f"{empty}: file is empty"):
        read_shared_csv(empty)
    header_only = write_lines(tmp_path / "header_1d.csv", daily_lines[:1])
    with pytest.raises(DataError, match="header but no rows"):
        load_panel(header_only)
    with pytest.raises(DataError, match="nope.csv: file not found"):
        read_shared_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="does not exist"):
        load_panel(tmp_path / "nothing_here")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match="no OHLCV bar files"):
        load_panel(tmp_path / "sub")
    with pytest.raises(DataError, match="not an OHLCV bars file: funding"):
        load_panel(FUNDING)


def test_non_numeric_prices_are_reported(tmp_path, daily_lines):
    lines = list(daily_lines[:10])
    lines[3] = set_field(lines[3], "open", "n/a", lines[0])
    with pytest.raises(DataValidationError, match=r"row 4: AAVEUSDT .*open nan"):
        load_panel(write_lines(tmp_path / "na_1d.csv", lines))


def test_same_symbol_in_two_files(tmp_path, daily_lines):
    write_lines(tmp_path / "a_1d.csv", daily_lines[:100])
    write_lines(tmp_path / "b_1d.csv.gz", [daily_lines[0], *daily_lines[50:150]])
    with pytest.raises(DataError) as e:
        load_panel(tmp_path)
    msg = str(e.value)
    assert "AAVEUSDT at 1d is in two files" in msg
    assert str(tmp_path / "a_1d.csv") in msg and str(tmp_path / "b_1d.csv.gz") in msg


def test_errors_of_several_files_are_reported_together(tmp_path, daily_lines):
    header = daily_lines[0]
    a = [header, *daily_lines[1:20]]
    a[3] = set_field(a[3], "low", "-1", header)
    b = [header, *daily_lines[1200:1220]]  # ADAUSDT
    b[5] = set_field(b[5], "volume_base", "-7", header)
    write_lines(tmp_path / "a_1d.csv", a)
    write_lines(tmp_path / "b_1d.csv", b)
    with pytest.raises(DataValidationError) as e:
        load_panel(tmp_path)
    assert {(i.symbol, i.kind) for i in e.value.issues} == {
        ("AAVEUSDT", "bad_price"),
        ("ADAUSDT", "bad_volume"),
    }


def test_file_name_timeframe_must_match_bars(tmp_path, shared):
    hourly = pd.read_csv(HOURLY, nrows=50)
    hourly.to_csv(tmp_path / "wrong_1d.csv", index=False)
    with pytest.raises(DataError, match="says 1d bars but they are 1h apart"):
        load_panel(tmp_path / "wrong_1d.csv")
    hourly.to_csv(tmp_path / "unnamed.csv", index=False)  # no token: inferred
    assert load_panel(tmp_path / "unnamed.csv").timeframe == "1h"


# ------------------------------------------------------------------ freqtrade


def test_parse_freqtrade_names():
    n = parse_freqtrade_name("XRP_USDT_USDT-1h-futures.feather")
    assert (n.pair, n.symbol, n.timeframe, n.candle_type) == (
        "XRP/USDT:USDT",
        "XRPUSDT-PERP",
        "1h",
        "futures",
    )
    n = parse_freqtrade_name("ADA_BTC-5m.feather")
    assert (n.pair, n.symbol, n.timeframe, n.candle_type) == ("ADA/BTC", "ADABTC", "5m", "spot")
    assert (
        parse_freqtrade_name("XRP_USDT_USDT-8h-funding_rate.feather").candle_type == "funding_rate"
    )
    assert parse_freqtrade_name("XRP_ETH-trades.json.gz") is None
    assert parse_freqtrade_name("ETH_BTC-1d.json.gz").symbol == "ETHBTC"
    assert timeframe_from_name("ohlcv_1h_binance_spot_BTC_ETH_BNB_ADA_2017-2021.csv.gz") == "1h"
    assert timeframe_from_name("ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz") == "1d"
    assert timeframe_from_name("prices.csv") is None


@pytest.mark.real_data
def test_read_freqtrade(shared):
    bars = read_freqtrade(FREQTRADE / "XRP_USDT_USDT-1h-futures.feather")
    assert len(bars) == 100 and set(bars["symbol"]) == {"XRPUSDT-PERP"}
    assert bars["timestamp"].iloc[0] == pd.Timestamp("2021-11-17 01:00", tz=UTC)
    np.testing.assert_allclose(bars["quote_volume"], bars["volume"] * bars["close"])
    p = load_panel(FREQTRADE, timeframe="1h")
    assert p.symbols == ["XRPUSDT-PERP"]
    skipped = {s["path"].split("/")[-1] for s in p.provenance["skipped"]}
    assert {"XRP_USDT_USDT-8h-mark.feather", "XRP_USDT_USDT-8h-funding_rate.feather"} <= skipped
    assert {"public_trades_list.csv", "XRP_ETH-trades.json.gz"} <= skipped
    five = load_panel(FREQTRADE, timeframe="5m")
    assert five.symbols == ["ADABTC", "XRPETH"]
    assert five.has_bar["ADABTC"].sum() == 5720 and five.has_bar["XRPETH"].sum() == 706
    assert five.live["ADABTC"].sum() == 5760  # 40 missing 5-minute bars, gap-filled


@pytest.mark.real_data
def test_read_freqtrade_json_and_parquet(tmp_path, shared):
    feather = read_freqtrade(FREQTRADE / "ADA_BTC-5m.feather")
    raw = pd.read_feather(FREQTRADE / "ADA_BTC-5m.feather")
    rows = [[int(t.value // 1_000_000), *r] for t, *r in raw.itertuples(index=False)]
    with gzip.open(tmp_path / "ADA_BTC-5m.json.gz", "wt") as fh:
        json.dump(rows, fh)
    from_json = read_freqtrade(tmp_path / "ADA_BTC-5m.json.gz")
    pd.testing.assert_frame_equal(from_json, feather)
    raw.to_parquet(tmp_path / "ADA_BTC-5m.parquet")
    pd.testing.assert_frame_equal(read_freqtrade(tmp_path / "ADA_BTC-5m.parquet"), feather)
    (tmp_path / "ETH_BTC-5m.json").write_text("[[1, 2, 3")
    with pytest.raises(DataError, match="ETH_BTC-5m.json: cannot read"):
        read_freqtrade(tmp_path / "ETH_BTC-5m.json")


@pytest.mark.real_data
def test_freqtrade_funding(shared):
    with pytest.raises(DataError, match="funding_rate candles, not tradable price bars"):
        read_freqtrade(FREQTRADE / "XRP_USDT_USDT-8h-funding_rate.feather")
    f = read_freqtrade_funding(FREQTRADE / "XRP_USDT_USDT-8h-funding_rate.feather", venue="binance")
    assert list(f.columns) == ["timestamp", "symbol", "venue", "funding_rate"]
    assert len(f) == 91 and set(f["symbol"]) == {"XRPUSDT-PERP"}
    assert f["timestamp"].iloc[0] == pd.Timestamp("2021-11-18", tz=UTC)  # .017 s jitter rounded
    assert f["funding_rate"].iloc[0] == 0.0001 and (f["funding_rate"] == 0.0001).sum() == 70
    assert f["funding_rate"].min() == pytest.approx(-0.002193, abs=1e-6)
    with pytest.raises(DataError, match="not a freqtrade funding-rate file"):
        read_freqtrade_funding(FREQTRADE / "XRP_USDT_USDT-8h-mark.feather")


# ------------------------------------------------------------------ other series


@pytest.mark.real_data
def test_read_funding(shared, tmp_path):
    f = read_funding(FUNDING)
    assert list(f.columns) == ["timestamp", "symbol", "venue", "funding_rate"]
    assert len(f) == 48_004
    assert set(f["venue"]) == {"binance", "bybit", "dydx", "gate", "htx", "kucoin", "mexc"}
    assert str(f["timestamp"].dtype) == "datetime64[us, UTC]"
    first = f.iloc[0]
    assert (first.venue, first.symbol, first.funding_rate) == ("binance", "BTCUSDT", -0.00012359)
    assert (
        f.groupby(["venue", "symbol"])["timestamp"].apply(lambda s: s.is_monotonic_increasing).all()
    )
    bad = tmp_path / "funding.csv"
    bad.write_text("timestamp,symbol,venue\n2020-01-01 00:00:00+00:00,BTCUSDT,binance\n")
    with pytest.raises(DataError, match="missing column.*funding_rate"):
        read_funding(bad)
    bad.write_text(
        "timestamp,symbol,venue,funding_rate\n2020-01-01 00:00:00+00:00,BTCUSDT,binance,x\n"
    )
    with pytest.raises(DataError, match=r"funding_rate is not a number at row 2 \('x'\)"):
        read_funding(bad)


@pytest.mark.real_data
def test_read_market_caps(shared):
    caps = read_market_caps(CAPS)
    assert list(caps.columns) == ["timestamp", "symbol", "market_cap", "price", "total_volume"]
    assert len(caps) == 45_225
    raw = pd.read_csv(CAPS)
    assert (raw["market_cap"] == 0).sum() == 1028
    assert caps["market_cap"].isna().sum() == 1028 + 4  # zeros and blanks -> NaN
    assert (caps["market_cap"].dropna() > 0).all()
    # odd stamps are kept as written (moving them could leak later values into earlier bars)
    btc = caps[caps.symbol == "BTC"].set_index("timestamp")
    assert pd.Timestamp("2017-06-06 23:29:55", tz=UTC) in btc.index


@pytest.mark.real_data
def test_classify_file(shared, tmp_path):
    assert classify_file(DAILY).kind == "bars" and classify_file(DAILY).timeframe == "1d"
    assert classify_file(FUNDING).kind == "skip"
    assert classify_file(FREQTRADE / "XRP_USDT_USDT-8h-mark.feather").kind == "skip"
    ob = shared / "orderbook_samples" / "btcusdt-quotes.parquet"
    assert classify_file(ob).kind == "skip"
    shutil.copy(ob, tmp_path / "quotes.parquet")
    assert classify_file(tmp_path / "quotes.parquet").reason.startswith("not OHLCV")


# ------------------------------------------------------------------ hostile cells, names, paths


def test_text_in_a_price_cell_names_file_row_column_and_text(tmp_path, daily_lines):
    lines = list(daily_lines[:30])
    lines[3] = set_field(lines[3], "close", '"1,234.5"', lines[0])
    lines[5] = set_field(lines[5], "volume_quote", "abc", lines[0])
    path = write_lines(tmp_path / "text_1d.csv", lines)
    with pytest.raises(DataValidationError) as e:
        load_panel(path)
    msg = str(e.value)  # old code: "close nan", and the volume silently derived
    assert f"{path}, row 4: AAVEUSDT 2020-10-17 00:00 UTC: close '1,234.5' (not a number)" in msg
    assert f"{path}, row 6: AAVEUSDT 2020-10-19 00:00 UTC: quote_volume 'abc' (not a number)" in msg


def test_lowercase_and_slashed_symbols_are_read_upper_case(tmp_path, daily_lines):
    header = daily_lines[0]
    lines = [header] + [ln.replace("AAVEUSDT", "aaveusdt") for ln in daily_lines[1:40]]
    lines += [ln.replace("ADAUSDT", "ADA/USDT") for ln in daily_lines[1300:1340]]
    path = write_lines(tmp_path / "cases_1d.csv", lines)
    panel = load_panel(path, symbols=["aave/usdt", "ADAUSDT"])  # old code: unknown symbol
    assert panel.symbols == ["AAVEUSDT", "ADAUSDT"]
    assert panel.provenance["issue_kinds"] == {"symbol_normalized": 2}
    assert any("symbol 'aaveusdt' read as AAVEUSDT" in w for w in panel.provenance["warnings"])


def test_brackets_in_a_symbol_are_refused_and_in_a_path_kept(tmp_path, daily_lines):
    folder = tmp_path / "data[1]" / "x"
    folder.mkdir(parents=True)
    lines = [daily_lines[0]] + [ln.replace("AAVEUSDT", "AAVE[USDT]") for ln in daily_lines[1:40]]
    path = write_lines(folder / "b_1d.csv", lines)
    with pytest.raises(DataValidationError) as e:
        load_panel(folder)
    (issue,) = e.value.issues
    assert (issue.kind, issue.row, issue.symbol, issue.source) == (
        "bad_symbol",
        2,
        "AAVE[USDT]",
        str(path),
    )
    with pytest.raises(DataError, match=r"no valid bars left.*\n.*AAVE\[USDT\].*bad_symbol"):
        load_panel(folder, policy="drop")  # old code: loaded as a symbol named AAVE[USDT]
    write_lines(folder / "b_1d.csv", daily_lines[:40])
    assert load_panel(folder).symbols == ["AAVEUSDT"]  # the brackets in the path are fine


def test_a_planted_spike_is_dropped_at_load_and_becomes_an_untradable_bar(tmp_path, daily_lines):
    lines = list(daily_lines[:200])
    header = lines[0]
    row = lines[100].split(",")
    names = header.split(",")
    for col in ("open", "high", "low", "close"):
        row[names.index(col)] = str(float(row[names.index(col)]) * 1000)
    lines[100] = ",".join(row)
    path = write_lines(tmp_path / "spike_1d.csv", lines)
    with pytest.raises(DataValidationError, match=r"row 101: AAVEUSDT .*\[spike\]"):
        load_panel(path)
    panel = load_panel(path, policy="repair")
    ts = pd.Timestamp(row[0])
    assert not panel.has_bar.loc[ts, "AAVEUSDT"]
    assert panel.close.loc[ts, "AAVEUSDT"] < 1e4  # flat at the previous close
    assert panel.provenance["issue_kinds"] == {"spike": 1, "gap": 1}
