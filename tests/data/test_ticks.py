"""Tick-data readers: the shared order-book samples, dumps in the Tardis and Binance
formats, and bad files rejected with the file, line or row, and column named."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REAL_DATA
from trimtab.data.ticks import TickDataError, find_tick_files, read_book, read_trades

SAMPLES = REAL_DATA / "orderbook_samples"
needs_samples = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason=f"order-book samples not found at {SAMPLES}"
)


def _ns(text: str) -> int:
    return pd.Timestamp(text, tz="UTC").value


@needs_samples
def test_tardis_snapshots_first_row_as_in_the_file():
    for name, levels in (
        ("binance-futures_book_snapshot_5_BTCUSDT.csv", 5),
        ("binance-futures_book_snapshot_25_BTCUSDT.csv", 25),
    ):
        book = read_book(SAMPLES / name)
        raw = pd.read_csv(SAMPLES / name)
        assert book.levels == levels and len(book) == len(raw) == 10
        assert book.symbol == "BTCUSDT"
        # timestamp in microseconds: 1598918403696000 us
        assert book.ts[0] == 1598918403696000 * 1000
        assert book.times[0] == pd.Timestamp("2020-09-01 00:00:03.696", tz="UTC")
        for k in range(levels):
            assert book.ask_px[0, k] == raw[f"asks[{k}].price"][0]
            assert book.bid_sz[-1, k] == raw[f"bids[{k}].amount"].iloc[-1]
        assert (book.bid_px[:, 0] < book.ask_px[:, 0]).all()
        assert (np.diff(book.bid_px, axis=1) < 0).all() and (np.diff(book.ask_px, axis=1) > 0).all()


@needs_samples
def test_binance_depth_snapshot_and_parquet_quotes():
    depth = read_book(SAMPLES / "btcusdt-depth-snap.csv", depth=200)
    raw = pd.read_csv(SAMPLES / "btcusdt-depth-snap.csv")
    assert len(depth) == 1  # one timestamp: one book
    assert np.nansum(depth.bid_sz[0]) == pytest.approx(raw["qty"].sum(), rel=1e-12)
    assert depth.bid_px[0, 0] == raw["price"].max() == 20377.0
    assert np.isnan(depth.ask_px[0]).all()  # the sample holds bids only
    quotes = read_book(SAMPLES / "btcusdt-quotes.parquet")
    q = pd.read_parquet(SAMPLES / "btcusdt-quotes.parquet")
    assert quotes.levels == 1 and len(quotes) == len(q) == 451
    assert quotes.symbol == "BTCUSDT"
    np.testing.assert_array_equal(quotes.bid_px[:, 0], q["bid"].to_numpy())
    np.testing.assert_array_equal(quotes.ask_sz[:, 0], q["ask_size"].to_numpy())
    assert quotes.ts[0] == q["timestamp"].iloc[0].value


@needs_samples
def test_bybit_deltas_rebuild_the_book():
    path = SAMPLES / "xrpusdt-ob500.data.zip"
    book = read_book(path, depth=500)
    with zipfile.ZipFile(path) as z:
        lines = z.read(z.namelist()[0]).decode().splitlines()
    msgs = [json.loads(line) for line in lines]
    assert len(book) == len(msgs) == 50 and book.symbol == "XRPUSDT"
    # An independent rebuild (price strings as keys, kept as text) agrees at every step.
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    for k, m in enumerate(msgs):
        if m["type"] == "snapshot":
            bids, asks = {}, {}
        for side, levels in ((bids, m["data"]["b"]), (asks, m["data"]["a"])):
            for p, s in levels:
                if float(s) == 0:
                    side.pop(p, None)
                else:
                    side[p] = s
        best_bids = sorted(bids, key=float, reverse=True)
        assert book.bid_px[k, 0] == float(best_bids[0])
        assert book.bid_sz[k, 0] == float(bids[best_bids[0]])
        assert np.isfinite(book.ask_px[k]).sum() == len(asks)
        assert np.nansum(book.ask_sz[k]) == pytest.approx(sum(float(v) for v in asks.values()))
    assert book.ts[1] == 1733011200693 * 1_000_000
    # the second message (a delta) set the 1.9531 bid to 6198
    assert book.bid_sz[1, 0] == 6198 and book.bid_px[1, 0] == 1.9531


@needs_samples
def test_parquet_trades_buyer_maker_as_string():
    t = read_trades(SAMPLES / "btcusdt-trades.parquet")
    raw = pd.read_parquet(SAMPLES / "btcusdt-trades.parquet")
    assert raw["buyer_maker"].iloc[0] == "True"  # a string in the file
    assert len(t) == 2001 and t.symbol == "BTCUSDT"
    expect = np.where(raw["buyer_maker"] == "True", -1, 1)
    np.testing.assert_array_equal(t.side, expect)
    assert t.trade_id[0] == "553287559" and t.price[0] == 39432.48
    assert t.ts[0] == _ns("2021-01-08 00:00:00.278")
    assert find_tick_files(REAL_DATA) == {
        "book": SAMPLES / "btcusdt-quotes.parquet",
        "trades": SAMPLES / "btcusdt-trades.parquet",
    }


def test_tardis_trades_and_quotes_csv(tmp_path: Path):
    trades = tmp_path / "binance-futures_trades_2020-09-01_BTCUSDT.csv"
    trades.write_text(
        "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
        "binance-futures,BTCUSDT,1598918400041000,1598918400063000,111,sell,11649.5,0.05\n"
        "binance-futures,BTCUSDT,1598918400100000,1598918400120000,112,buy,11650.0,0.2\n"
    )
    t = read_trades(trades)
    assert list(t.side) == [-1, 1] and list(t.trade_id) == ["111", "112"]
    assert t.ts[0] == _ns("2020-09-01 00:00:00.041")  # microseconds
    assert t.symbol == "BTCUSDT" and t.size[1] == 0.2
    quotes = tmp_path / "binance-futures_quotes_2020-09-01_BTCUSDT.csv"
    quotes.write_text(
        "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n"
        "binance-futures,BTCUSDT,1598918400041000,1598918400063000,1.5,11650.0,11649.99,2.0\n"
    )
    q = read_book(quotes)
    assert (q.bid_px[0, 0], q.bid_sz[0, 0], q.ask_px[0, 0], q.ask_sz[0, 0]) == (
        11649.99,
        2.0,
        11650.0,
        1.5,
    )
    assert q.ts[0] == _ns("2020-09-01 00:00:00.041")


def test_binance_trade_dumps_with_and_without_header(tmp_path: Path):
    futures = tmp_path / "BTCUSDT-trades-2023-01-01.csv"
    futures.write_text(
        "id,price,qty,quote_qty,time,is_buyer_maker\n"
        "3179221541,16537.50,0.003,49.6125,1672531200059,true\n"
        "3179221542,16537.60,0.010,165.376,1672531200065,false\n"
    )
    t = read_trades(futures)
    assert list(t.side) == [-1, 1] and t.ts[0] == _ns("2023-01-01 00:00:00.059")
    agg = tmp_path / "BTCUSDT-aggTrades-2023-01-01.csv"
    agg.write_text(
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
        "1,16537.5,0.5,10,12,1672531200059,false\n"
    )
    a = read_trades(agg)
    assert list(a.trade_id) == ["1"] and a.side[0] == 1 and a.size[0] == 0.5
    # Spot dumps have no header; from 2025 their times are microseconds.
    spot = tmp_path / "BTCUSDT-trades-2025-01-01.csv"
    spot.write_text(
        "4400000001,93500.01,0.001,93.50001,1735689600123456,True,True\n"
        "4400000002,93500.00,0.002,187.0,1735689600200000,False,True\n"
    )
    s = read_trades(spot)
    assert list(s.side) == [-1, 1]
    assert s.ts[0] == _ns("2025-01-01 00:00:00.123456")
    spot_agg = tmp_path / "BTCUSDT-aggTrades-2021-01-01.csv"
    spot_agg.write_text("7,29000.5,0.25,70,71,1609459200001,False,True\n")
    assert read_trades(spot_agg).ts[0] == _ns("2021-01-01 00:00:00.001")


def test_bad_files_named_errors(tmp_path: Path):
    bad = tmp_path / "t.csv"
    bad.write_text(
        "id,price,qty,quote_qty,time,is_buyer_maker\n"
        "1,100.0,0.1,10,1672531200059,true\n"
        "2,abc,0.1,10,1672531200060,true\n"
    )
    with pytest.raises(TickDataError) as exc:
        read_trades(bad)
    msg = str(exc.value)
    assert "t.csv" in msg and "line 3" in msg and "column 'price'" in msg and "'abc'" in msg
    assert exc.value.column == "price" and exc.value.where == "line 3"

    side = tmp_path / "s.csv"
    side.write_text("id,price,qty,time,is_buyer_maker\n1,100,0.1,1672531200059,maybe\n")
    with pytest.raises(TickDataError, match=r"s\.csv: line 2, column 'is_buyer_maker'"):
        read_trades(side)

    back = tmp_path / "b.csv"
    back.write_text(
        "id,price,qty,time,is_buyer_maker\n1,100,0.1,1672531200059,true\n"
        "2,100,0.1,1672531200000,true\n"
    )
    with pytest.raises(TickDataError, match=r"line 3, column 'time': timestamps go back"):
        read_trades(back)

    neg = tmp_path / "binance-futures_book_snapshot_5_X.csv"
    cols = ["exchange", "symbol", "timestamp", "local_timestamp"] + [
        f"{s}[0].{f}" for s in ("asks", "bids") for f in ("price", "amount")
    ]
    neg.write_text(",".join(cols) + "\nbinance-futures,X,1598918403696000,1,10.0,-1,9.9,1\n")
    with pytest.raises(TickDataError, match=r"line 2, column 'asks\[0\].amount': must be >= 0"):
        read_book(neg)

    noside = tmp_path / "n.parquet"
    pd.DataFrame({"timestamp": [1, 2], "price": [1.0, 2.0], "quantity": [1.0, 1.0]}).assign(
        trade_id=[1, 2]
    ).to_parquet(noside)
    with pytest.raises(TickDataError, match="no aggressor side"):
        read_trades(noside)

    zero = tmp_path / "z.parquet"
    pd.DataFrame(
        {
            "timestamp": pd.to_datetime([1, 2], unit="s", utc=True),
            "trade_id": [1, 2],
            "price": [1.0, 2.0],
            "quantity": [1.0, 0.0],
            "buyer_maker": ["True", "False"],
        }
    ).to_parquet(zero)
    with pytest.raises(TickDataError, match=r"z\.parquet: row 2, column 'quantity': must be > 0"):
        read_trades(zero)

    bars = tmp_path / "ohlcv.csv"
    bars.write_text("timestamp,open,high,low,close\n2020-01-01,1,2,0.5,1.5\n")
    with pytest.raises(TickDataError, match="not an order-book file"):
        read_book(bars)
    with pytest.raises(TickDataError, match="no such file"):
        read_book(tmp_path / "missing.csv")


def test_bybit_bad_messages(tmp_path: Path):
    snap = {
        "topic": "orderbook.50.X",
        "type": "snapshot",
        "ts": 1,
        "data": {"s": "X", "b": [["1.0", "5"]], "a": [["1.1", "5"]], "u": 10},
    }
    gap = {
        "topic": "orderbook.50.X",
        "type": "delta",
        "ts": 2,
        "data": {"s": "X", "b": [["1.0", "4"]], "a": [], "u": 12},
    }
    path = tmp_path / "2024-12-01_X_ob50.data"
    path.write_text(json.dumps(snap) + "\n" + json.dumps(gap) + "\n")
    with pytest.raises(TickDataError, match=r"line 2, column 'u': update id 12 follows 10"):
        read_book(path)
    path.write_text(json.dumps(snap) + "\n{not json\n")
    with pytest.raises(TickDataError, match=r"line 2: not a Bybit order-book message"):
        read_book(path)
    zipped = tmp_path / "x.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("a.data", json.dumps({**gap, "data": {**gap["data"], "u": 11}}) + "\n")
    with pytest.raises(
        TickDataError, match=r"x\.zip!a\.data: line 1, column 'type': a delta before"
    ):
        read_book(zipped)


def test_tardis_incremental_l2_and_binance_book_ticker(tmp_path: Path):
    l2 = tmp_path / "binance-futures_incremental_book_L2_2020-09-01_BTCUSDT.csv"
    head = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
    row = "binance-futures,BTCUSDT,{ts},{ts},{snap},{side},{px},{amt}\n"
    rows = [
        (1000, "true", "bid", 100.0, 1.0),
        (1000, "true", "bid", 99.0, 2.0),
        (1000, "true", "ask", 101.0, 3.0),
        (2000, "false", "bid", 100.0, 0.0),  # the best bid removed
        (2000, "false", "ask", 100.5, 1.5),  # a better ask
        (3000, "true", "bid", 98.0, 5.0),  # a new snapshot replaces the book
        (3000, "true", "ask", 102.0, 5.0),
    ]
    l2.write_text(
        head + "".join(row.format(ts=t, snap=s, side=d, px=p, amt=a) for t, s, d, p, a in rows)
    )
    book = read_book(l2, depth=3)
    assert len(book) == 3 and book.ts[0] == 1000 * 1000  # microseconds
    assert list(book.bid_px[0, :2]) == [100.0, 99.0] and book.ask_px[0, 0] == 101.0
    assert book.bid_px[1, 0] == 99.0 and list(book.ask_px[1, :2]) == [100.5, 101.0]
    assert book.bid_px[2, 0] == 98.0 and np.isnan(book.bid_px[2, 1])
    assert book.ask_px[2, 0] == 102.0 and np.isnan(book.ask_px[2, 1])
    l2.write_text(head + row.format(ts=1, snap="maybe", side="bid", px=1, amt=1))
    with pytest.raises(TickDataError, match=r"line 2, column 'is_snapshot': 'maybe'"):
        read_book(l2)
    ticker = tmp_path / "BTCUSDT-bookTicker-2023-01-01.csv"
    ticker.write_text(
        "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,"
        "transaction_time,event_time\n"
        "2440000000001,16537.5,3.2,16537.6,1.1,1672531200001,1672531200003\n"
    )
    q = read_book(ticker)
    assert (q.bid_px[0, 0], q.ask_sz[0, 0]) == (16537.5, 1.1)
    assert q.ts[0] == _ns("2023-01-01 00:00:00.001")
