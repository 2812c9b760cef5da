"""Order book metrics on hand-made books and on the real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trimtab.data.errors import DataError
from trimtab.signals.orderbook import (
    book_metrics,
    book_metrics_frame,
    read_binance_depth_snapshot,
    read_bybit_orderbook,
    read_tardis_book_snapshot,
)

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "orderbook_samples"


def _sample(name: str) -> Path:
    p = SAMPLES / name
    if not p.exists():
        pytest.skip(f"shared data not found: {p}")
    return p


def test_metrics_of_a_hand_book():
    book = {
        "timestamp": 1_600_000_000_000,
        # Unsorted on purpose, plus a zero-amount level that must be ignored.
        "bids": [[99.0, 2.0], [99.9, 1.0], [98.5, 10.0], [99.5, 0.0]],
        "asks": [[100.1, 3.0], [100.5, 1.0], [101.5, 7.0]],
    }
    m = book_metrics(book)
    assert m["best_bid"] == 99.9 and m["best_ask"] == 100.1
    assert m["mid"] == pytest.approx(100.0)
    assert m["spread_bps"] == pytest.approx(0.2 / 100.0 * 1e4)
    # Band [99, 101]: bids 99.9 and 99.0; asks 100.1 and 100.5.
    bid = 99.9 * 1 + 99.0 * 2
    ask = 100.1 * 3 + 100.5 * 1
    assert m["bid_depth"] == pytest.approx(bid) and m["ask_depth"] == pytest.approx(ask)
    assert m["imbalance"] == pytest.approx((bid - ask) / (bid + ask))
    assert m["bid_complete"] == 1.0 and m["ask_complete"] == 1.0
    wide = book_metrics(book, band=0.02)
    assert wide["bid_depth"] == pytest.approx(bid + 98.5 * 10)
    assert wide["bid_complete"] == 0.0  # the book ends inside a 2 % band


def test_one_sided_and_empty_books():
    m = book_metrics({"bids": [[10.0, 1.0]], "asks": []})
    assert m["best_bid"] == 10.0
    assert np.isnan(m["mid"]) and np.isnan(m["spread_bps"]) and np.isnan(m["imbalance"])
    assert np.isnan(book_metrics({"bids": [], "asks": []})["best_bid"])
    with pytest.raises(ValueError):
        book_metrics({"bids": [[1.0, 1.0]], "asks": [[2.0, 1.0]]}, band=1.5)


def test_tardis_snapshots_btcusdt():
    for n, name in [
        (25, "binance-futures_book_snapshot_25_BTCUSDT.csv"),
        (5, "binance-futures_book_snapshot_5_BTCUSDT.csv"),
    ]:
        books = read_tardis_book_snapshot(_sample(name))
        assert len(books) == 10
        b = books[0]
        assert set(b) >= {"symbol", "timestamp", "datetime", "nonce", "bids", "asks"}
        assert b["symbol"] == "BTCUSDT" and b["timestamp"] == 1598918403696
        assert b["datetime"] == "2020-09-01T00:00:03.696Z"
        assert len(b["bids"]) == n and len(b["asks"]) == n
        assert b["bids"][0] == [11657.07, 10.896] and b["asks"][0] == [11657.08, 1.714]
        prices = [lv[0] for lv in b["bids"]]
        assert prices == sorted(prices, reverse=True)
        frame = book_metrics_frame(books)
        assert len(frame) == 10 and frame.index.tz is not None
        assert frame.index.is_monotonic_increasing
        assert (frame["spread_bps"] > 0).all() and (frame["spread_bps"] < 1).all()  # sub-bp
        assert (frame["bid_depth"] > 0).all() and (frame["ask_depth"] > 0).all()
        assert frame["imbalance"].between(-1, 1).all()
        # 5 or 25 levels of BTC never reach 1 % from the mid: flagged as incomplete.
        assert not frame["bid_complete"].any() and not frame["ask_complete"].any()
    m = book_metrics(
        read_tardis_book_snapshot(_sample("binance-futures_book_snapshot_5_BTCUSDT.csv"))[0]
    )
    bids = np.array(
        [[11657.07, 10.896], [11656.97, 0.2], [11655.78, 0.2], [11655.77, 0.98], [11655.68, 0.111]]
    )
    assert m["bid_depth"] == pytest.approx((bids[:, 0] * bids[:, 1]).sum())
    assert m["spread_bps"] == pytest.approx(0.01 / 11657.075 * 1e4)


def test_binance_depth_snapshot():
    books = read_binance_depth_snapshot(_sample("btcusdt-depth-snap.csv"))
    assert len(books) == 1
    b = books[0]
    assert b["timestamp"] == 1667346579146 and b["nonce"] == 2098021528332
    assert len(b["bids"]) == 100 and b["asks"] == []  # the sample holds only bids
    assert b["bids"][0] == [20377.0, 1.77]
    m = book_metrics(b)
    assert m["best_bid"] == 20377.0 and np.isnan(m["spread_bps"])


def test_bybit_orderbook_snapshot_and_deltas():
    books = read_bybit_orderbook(_sample("xrpusdt-ob500.data.zip"))
    assert len(books) == 50
    first, second = books[0], books[1]
    assert len(first["bids"]) == 500 and len(first["asks"]) == 500
    assert first["bids"][0] == [1.9531, 6203.0]
    assert dict(map(tuple, second["bids"]))[1.9531] == 6198.0  # the first delta applied
    frame = book_metrics_frame(books)
    assert (frame["spread_bps"] > 0).all() and (frame["spread_bps"] < 5).all()
    assert frame["imbalance"].between(-1, 1).all()
    assert frame["bid_complete"].all() and frame["ask_complete"].all()  # 500 levels cover 1 %
    assert (frame["bid_depth"] > 1e6).all()


def test_reader_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_tardis_book_snapshot(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("symbol,timestamp,last_update_id,side,price,qty\nBTCUSDT,1,1,x,1.0,1.0\n")
    with pytest.raises(DataError, match="row 2, column 'side'"):
        read_binance_depth_snapshot(bad)
    with pytest.raises(DataError, match="asks\\[0\\].price"):
        read_tardis_book_snapshot(bad)
    junk = tmp_path / "ob.data"
    junk.write_text('{"type": "snapshot"}\n')
    with pytest.raises(DataError, match="line 1"):
        read_bybit_orderbook(junk)


def test_metrics_frame_index_is_utc_time():
    books = [{"symbol": "X", "timestamp": 0, "bids": [[1.0, 1.0]], "asks": [[1.01, 1.0]]}]
    f = book_metrics_frame(books)
    assert f.index[0] == pd.Timestamp("1970-01-01", tz="UTC")
