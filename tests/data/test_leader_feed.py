"""Leader feeds: CSV trades and positions, a run folder and its store copy, a live account
through a real ccxt client on the exchange emulator; bad rows named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests._leader_run import RUN_ID, leader_run
from trimtab.data.errors import DataError
from trimtab.data.leader_feed import (
    CcxtLeaderFeed,
    feed_from_rows,
    read_leader_csv,
    read_leader_run,
)


def _write(tmp_path, text: str, name: str = "leader.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_trades_csv_read_in_time_order_utc(tmp_path):
    path = _write(
        tmp_path,
        "Timestamp,Symbol,Side,Quantity,Price,trade_id,equity\n"
        "2021-01-02 05:00,btc/usdt,BUY,0.5,30000,a1,1000\n"
        "1609459200000,ETHUSDT,sell,2,700,a0,\n"  # epoch ms: 2021-01-01 00:00 UTC
        "2021-01-02T06:00:00+02:00,ETHUSDT,buy,1,710,a2,1100\n",
    )
    feed = read_leader_csv(path)
    t = feed.trades
    assert feed.kind == "trades"
    assert list(t["trade_id"]) == ["a0", "a2", "a1"]  # 04:00 UTC before 05:00
    assert list(t["timestamp"]) == [
        pd.Timestamp("2021-01-01 00:00", tz="UTC"),
        pd.Timestamp("2021-01-02 04:00", tz="UTC"),
        pd.Timestamp("2021-01-02 05:00", tz="UTC"),
    ]
    assert list(t["symbol"]) == ["ETHUSDT", "ETHUSDT", "BTCUSDT"]
    assert list(t["side"]) == ["sell", "buy", "buy"]
    assert t["quantity"].tolist() == [2.0, 1.0, 0.5]
    assert feed.equity.tolist() == [1100.0, 1000.0]  # the empty cell is no value
    # as known at a time: nothing after it
    cut = feed.until("2021-01-02 04:30")
    assert list(cut.trades["trade_id"]) == ["a0", "a2"] and cut.equity.tolist() == [1100.0]


def test_positions_csv_becomes_trades_of_the_changes(tmp_path):
    path = _write(
        tmp_path,
        "timestamp,symbol,quantity,price\n"
        "2021-01-01,BTCUSDT,1.0,100\n"
        "2021-01-02,ETHUSDT,3,10\n"
        "2021-01-02,BTCUSDT,0.25,110\n"
        "2021-01-03,BTCUSDT,0.25,120\n"  # unchanged: no trade
        "2021-01-04,BTCUSDT,0,130\n",
    )
    feed = read_leader_csv(path)
    t = feed.trades
    assert feed.kind == "positions" and feed.equity is None
    assert t[["symbol", "side"]].values.tolist() == [
        ["BTCUSDT", "buy"],
        ["ETHUSDT", "buy"],
        ["BTCUSDT", "sell"],
        ["BTCUSDT", "sell"],
    ]
    np.testing.assert_allclose(t["quantity"], [1.0, 3.0, 0.75, 0.25])
    np.testing.assert_allclose(t["price"], [100, 10, 110, 130])
    assert list(t["trade_id"]) == ["r1", "r2", "r3", "r5"]  # the rows they come from
    # kind forced: a positions file read as trades lacks its columns
    with pytest.raises(DataError, match=r"trades feed needs column\(s\) side"):
        read_leader_csv(path, kind="trades")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2021-13-45,BTCUSDT,buy,1,100", "row 2 (line 3), column 'timestamp': not a date/time"),
        ("2021-01-02,BTC USDT,buy,1,100", "row 2 (line 3), column 'symbol'"),
        ("2021-01-02,BTCUSDT,hold,1,100", "row 2 (line 3), column 'side': must be buy or sell"),
        ("2021-01-02,BTCUSDT,buy,-1,100", "row 2 (line 3), column 'quantity': must be > 0"),
        ("2021-01-02,BTCUSDT,buy,1,abc", "row 2 (line 3), column 'price': not a finite number"),
        ("2021-01-02,BTCUSDT,buy,1,", "row 2 (line 3), column 'price': empty"),
        ("2021-01-02,BTCUSDT,buy,inf,100", "row 2 (line 3), column 'quantity': not a finite"),
    ],
)
def test_bad_rows_named_by_file_row_and_column(tmp_path, row, message):
    path = _write(
        tmp_path,
        "timestamp,symbol,side,quantity,price\n2021-01-01,BTCUSDT,buy,1,100\n" + row + "\n",
    )
    with pytest.raises(DataError) as info:
        read_leader_csv(path)
    text = str(info.value)
    assert text.startswith(str(path)) and message in text


def test_repeated_trade_id_and_missing_columns_named(tmp_path):
    path = _write(
        tmp_path,
        "timestamp,symbol,side,quantity,price,trade_id\n"
        "2021-01-01,BTCUSDT,buy,1,100,x\n2021-01-02,BTCUSDT,sell,1,100,x\n",
    )
    with pytest.raises(
        DataError, match=r"row 2 \(line 3\), column 'trade_id': repeats the id of row 1"
    ):
        read_leader_csv(path)
    path = _write(tmp_path, "timestamp,symbol,side,quantity\n2021-01-01,BTCUSDT,buy,1\n", "b.csv")
    with pytest.raises(DataError, match=r"needs column\(s\) price"):
        read_leader_csv(path)
    with pytest.raises(DataError, match="no such file"):
        read_leader_csv(tmp_path / "missing.csv")


def test_run_folder_and_its_store_copy_are_the_same_feed():
    folder, url = leader_run()
    feed = read_leader_run(folder)
    raw = pd.read_csv(folder / "trades.csv")
    t = feed.trades
    assert len(t) == len(raw) > 10
    np.testing.assert_allclose(t["quantity"], raw["quantity"])
    np.testing.assert_allclose(t["price"], raw["price"])
    assert list(t["side"]) == list(raw["side"])
    # equity re-stamped by one day: the value at a bar's close is known at the next open
    eq = pd.read_csv(folder / "equity.csv", parse_dates=["timestamp"])
    assert feed.equity.index[0] == eq["timestamp"].iloc[0] + pd.Timedelta(days=1)
    np.testing.assert_allclose(feed.equity.to_numpy(), eq["equity"].to_numpy(), rtol=1e-9)

    from trimtab.journal.store import Store

    with Store.open(url) as store:
        stored = feed_from_rows(
            store.fills(RUN_ID, floats=True),
            store.balances(RUN_ID, floats=True),
            source="store",
            timeframe="1d",
        )
    s = stored.trades
    assert len(s) == len(t)
    assert list(s["symbol"]) == list(t["symbol"]) and list(s["side"]) == list(t["side"])
    np.testing.assert_allclose(s["quantity"], t["quantity"], rtol=1e-9)
    np.testing.assert_allclose(s["price"], t["price"], rtol=1e-9)
    assert (s["timestamp"] == t["timestamp"]).all()
    common = stored.equity.index.intersection(feed.equity.index)
    assert len(common) == len(feed.equity)
    np.testing.assert_allclose(stored.equity[common], feed.equity[common], rtol=1e-7)


def test_run_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="not a trimtab run folder"):
        read_leader_run(tmp_path)


# --- live: the leader's account on the emulator, read through a real ccxt client ------------


@pytest.fixture
def emu(tmp_path):
    from tests.emulator import Account, BinanceEmulator
    from tests.emulator.helpers import KEY, KEY2, RULES, SECRET, SECRET2, market

    accounts = [
        Account(KEY, SECRET, "main", {"USDT": "10000"}, {}),
        Account(KEY2, SECRET2, "second", {"USDT": "1000"}, {}),
    ]
    e = BinanceEmulator(
        market(),
        rules=RULES,
        accounts=accounts,
        clock="2023-01-03 00:05",
        state_path=tmp_path / "emu.json",
    ).start()
    yield e
    e.close()


def test_ccxt_feed_reads_the_leader_account_since_its_cursor(emu):
    from tests.emulator.helpers import KEY2, SECRET2, client

    leader = client(emu, KEY2, SECRET2)  # the leader trades with its own keys
    leader.load_markets()
    leader.create_order("BTC/USDT", "market", "buy", 0.01)
    leader.create_order("ETH/USDT", "market", "buy", 0.2)

    reader = client(emu, KEY2, SECRET2)
    reader.load_markets()
    feed = CcxtLeaderFeed(reader, ["BTCUSDT", "ETHUSDT"], since="2023-01-01")
    first = feed.poll()
    truth = emu.trades("second")
    assert len(first) == len(truth) == 2
    by_id = {str(t["id"]): t for t in truth}
    for row in first.itertuples(index=False):
        t = by_id[row.trade_id]
        assert row.symbol == t["symbol"] and row.side == t["side"].lower()
        assert row.quantity == pytest.approx(float(t["qty"]))
        assert row.price == pytest.approx(float(t["price"]))
        assert row.timestamp == pd.Timestamp(t["time"], unit="ms", tz="UTC")
        # the emulator charges spot fees in the asset received: base on a buy -> USDT
        assert row.fee == pytest.approx(float(t["commission"]) * float(t["price"]))
    assert feed.poll().empty  # nothing new

    emu.step(1)
    leader.create_order("BTC/USDT", "market", "sell", 0.005)
    resumed = CcxtLeaderFeed(reader, ["BTCUSDT", "ETHUSDT"], state=feed.state())
    new = resumed.poll()
    assert len(new) == 1 and new["side"].iloc[0] == "sell"
    assert new["trade_id"].iloc[0] not in set(first["trade_id"])
    assert new["timestamp"].iloc[0] > first["timestamp"].max()
    # the leader's equity: USDT plus each asset at its last price
    bal = emu.balances("second")
    expected = float(bal["USDT"]["free"] + bal["USDT"]["locked"])
    for asset in ("BTC", "ETH"):
        if asset in bal:
            amount = float(bal[asset]["free"] + bal[asset]["locked"])
            expected += amount * float(reader.fetch_ticker(f"{asset}/USDT")["last"])
    assert resumed.equity() == pytest.approx(expected, rel=1e-9)

    # The polled trades are a feed the copier follows: each copy fills at the open of the
    # first daily bar of the emulator's market opening at or after the trade + 1 hour.
    from tests.emulator.helpers import market
    from trimtab.data.panel import panel_from_long
    from trimtab.strategies.copy import CopyStrategy, copy_params

    bars = market()
    panel = panel_from_long(bars.assign(quote_volume=bars["volume"] * bars["close"]))
    live = resumed.feed([first, new])
    p = copy_params({"scaling": "fixed_fraction", "fraction": 2, "delay": "1h"})
    run = CopyStrategy(p, live, panel=panel).simulate(10_000.0)
    fills = [r for r in run.records if r["kind"] == "fill"]
    assert [f["leader_trade_id"] for f in fills] == list(live.trades["trade_id"])
    for f, t in zip(fills, live.trades.itertuples(index=False), strict=True):
        day = (t.timestamp + pd.Timedelta(hours=1)).ceil("D")
        bar = bars[(bars["symbol"] == t.symbol) & (bars["timestamp"] == day)].iloc[0]
        sign = 1 if t.side == "buy" else -1
        assert f["ts"] == day and f["price"] == pytest.approx(bar["open"] * (1 + sign * 5e-4))
        assert f["quantity"] == pytest.approx(2 * t.quantity)
