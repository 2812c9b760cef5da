"""Spot against the emulator with the real ccxt client over HTTP: markets and filters,
klines bounded by the market clock, balances, market and limit orders worked by hand,
cancel, client order ids, signatures."""

from __future__ import annotations

from decimal import Decimal as D

import ccxt
import pytest

from tests.emulator.helpers import KEY, KEY2, SECRET, SECRET2, client, ms

# At the fixture's clock (2023-01-03 00:05) the current bars are BTC open 20200 (high
# 20700, low 19700) and ETH open 1520 (high 1570, low 1470). Spot fees 10 bps.


def test_markets_and_filters_parsed(emu):
    ex = client(emu)
    markets = ex.load_markets()
    assert set(markets) == {"BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT"}
    btc = markets["BTC/USDT"]
    assert (btc["id"], btc["base"], btc["quote"], btc["type"]) == ("BTCUSDT", "BTC", "USDT", "spot")
    assert btc["precision"]["amount"] == 0.00001 and btc["precision"]["price"] == 0.01
    assert btc["limits"]["amount"]["min"] == 0.00001 and btc["limits"]["cost"]["min"] == 5
    perp = markets["BTC/USDT:USDT"]
    assert perp["swap"] and perp["linear"] and perp["settle"] == "USDT" and perp["id"] == "BTCUSDT"
    assert perp["limits"]["cost"]["min"] == 100 and perp["precision"]["amount"] == 0.00001
    assert markets["ETH/USDT:USDT"]["limits"]["cost"]["min"] == 20
    # load_markets asked for the two exchangeInfo and nothing else (no sapi, no dapi)
    assert [(m, p) for m, p, _ in emu.requests] == [
        ("GET", "/api/v3/exchangeInfo"),
        ("GET", "/fapi/v1/exchangeInfo"),
    ]


def test_klines_never_show_a_bar_after_the_clock(emu, ex):
    bars = ex.fetch_ohlcv("BTC/USDT", "1d")
    assert [b[0] for b in bars] == [ms("2023-01-01"), ms("2023-01-02"), ms("2023-01-03")]
    assert bars[1] == [ms("2023-01-02"), 20100, 20600, 19600, 20200, 11]
    # the forming bar shows its open only: nothing after 00:05 is visible
    assert bars[2] == [ms("2023-01-03"), 20200, 20200, 20200, 20200, 0]
    assert ex.fetch_ohlcv("BTC/USDT", "1d", since=ms("2023-01-02"))[0][0] == ms("2023-01-02")
    assert len(ex.fetch_ohlcv("ETH/USDT:USDT", "1d")) == 3
    emu.set_clock("2023-01-06 00:00")
    bars = ex.fetch_ohlcv("ETH/USDT", "1d", limit=2)
    assert [b[0] for b in bars] == [ms("2023-01-05"), ms("2023-01-06")]
    assert bars[0][1:5] == [1540, 1590, 1490, 1550] and bars[1][1:5] == [1550] * 4
    with pytest.raises(ccxt.BadRequest):
        ex.fetch_ohlcv("BTC/USDT", "1h")  # only the data's timeframe is served


def test_book_and_tickers_at_the_current_price(emu, ex):
    assert ex.fetch_ticker("BTC/USDT")["last"] == 20200
    tickers = ex.fetch_tickers(["BTC/USDT", "ETH/USDT"])
    assert tickers["ETH/USDT"]["last"] == 1520 and tickers["ETH/USDT"]["open"] == 1510
    book = ex.fetch_order_book("BTC/USDT", 5)
    assert book["asks"][0][0] == 20200 and book["bids"][0][0] == 20199.99
    assert len(book["bids"]) == len(book["asks"]) == 5
    assert ex.fetch_order_book("ETH/USDT:USDT", 5)["asks"][0][0] == 1520


def test_balances(emu, ex):
    bal = ex.fetch_balance()
    assert bal["USDT"] == {"free": 10000, "used": 0, "total": 10000}
    assert bal["BTC"]["total"] == 0.5
    assert ex.fetch_balance({"type": "future"})["USDT"]["total"] == 5000
    assert client(emu, KEY2, SECRET2).fetch_balance()["USDT"]["total"] == 1000


def test_market_buy_and_sell_worked_by_hand(emu, ex):
    order = ex.create_order("BTC/USDT", "market", "buy", 0.12345, params={"clientOrderId": "c-1"})
    # 0.12345 BTC at the open 20200: cost 2493.69 USDT; fee 10 bps of the BTC received
    assert order["status"] == "closed" and order["clientOrderId"] == "c-1"
    assert order["average"] == 20200 and order["filled"] == 0.12345 and order["cost"] == 2493.69
    assert order["fee"] == {"currency": "BTC", "cost": 0.00012345}
    info = {b["asset"]: b for b in ex.fetch_balance()["info"]["balances"]}
    assert info["USDT"]["free"] == "7506.31000000"  # 10000 - 2493.69
    assert info["BTC"]["free"] == "0.62332655"  # 0.5 + 0.12345 - 0.00012345
    assert emu.balances("main")["BTC"]["free"] == D("0.62332655")

    sell = ex.create_order("BTC/USDT", "market", "sell", 0.1, params={"clientOrderId": "c-2"})
    # 0.1 BTC at 20200 = 2020 USDT, fee 2.02 USDT (10 bps of the quote received)
    assert sell["fee"] == {"currency": "USDT", "cost": 2.02}
    b = emu.balances("main")
    assert b["USDT"]["free"] == D("7506.31") + D("2020") - D("2.02")
    assert b["BTC"]["free"] == D("0.52332655")
    trades = ex.fetch_my_trades("BTC/USDT")
    assert [(t["side"], t["price"], t["amount"], t["takerOrMaker"]) for t in trades] == [
        ("buy", 20200, 0.12345, "taker"),
        ("sell", 20200, 0.1, "taker"),
    ]
    assert trades[0]["fee"] == {"currency": "BTC", "cost": 0.00012345}
    assert trades[0]["order"] == order["id"]


def test_market_buy_by_cost_quote_order_qty(emu, ex):
    o = ex.create_order("ETH/USDT", "market", "buy", None, params={"quoteOrderQty": "1000"})
    # 1000 / 1520 = 0.65789... rounded down to the step 0.0001
    assert o["filled"] == 0.6578 and o["cost"] == pytest.approx(999.856)
    assert emu.balances("main")["USDT"]["free"] == D("10000") - D("0.6578") * 1520


def test_limit_order_rests_then_fills_as_the_clock_moves(emu, ex):
    o = ex.create_order("ETH/USDT", "limit", "buy", 1, 1475, params={"clientOrderId": "l-1"})
    assert o["status"] == "open" and o["filled"] == 0
    bal = ex.fetch_balance()["USDT"]
    assert (bal["free"], bal["used"]) == (8525, 1475)  # the limit's cost is locked
    assert [x["id"] for x in ex.fetch_open_orders("ETH/USDT")] == [o["id"]]
    emu.set_clock("2023-01-03 12:00")  # the day's bar has not closed: its low is unknown
    assert ex.fetch_order(o["id"], "ETH/USDT")["status"] == "open"
    emu.set_clock("2023-01-04 00:05")  # the 01-03 bar closed with low 1470 <= 1475
    done = ex.fetch_order(o["id"], "ETH/USDT")
    assert done["status"] == "closed" and done["average"] == 1475
    t = ex.fetch_my_trades("ETH/USDT")[0]
    assert (t["price"], t["takerOrMaker"], t["timestamp"]) == (1475, "maker", ms("2023-01-04") - 1)
    assert t["fee"] == {"currency": "ETH", "cost": 0.001}  # 10 bps maker, in ETH
    b = emu.balances("main")
    assert b["USDT"] == {"free": D("8525"), "locked": D("0")}
    assert b["ETH"]["free"] == D("0.999")

    sell = ex.create_order("BTC/USDT", "limit", "sell", 0.2, 21000, params={"clientOrderId": "l-2"})
    assert emu.balances("main")["BTC"] == {"free": D("0.3"), "locked": D("0.2")}
    emu.set_clock("2023-01-05 00:05")  # 01-04 bar: high 20800 < 21000
    assert ex.fetch_order(sell["id"], "BTC/USDT")["status"] == "open"
    emu.set_clock("2023-01-08 00:05")  # 01-05 high 20900, 01-06 high 21000: filled then
    t = ex.fetch_my_trades("BTC/USDT")[-1]
    assert (t["price"], t["timestamp"]) == (21000, ms("2023-01-07") - 1)
    b = emu.balances("main")
    assert b["BTC"] == {"free": D("0.3"), "locked": D("0")}
    assert b["USDT"]["free"] == D("8525") + D("4200") - D("4.2")


def test_marketable_limit_fills_as_taker_at_the_current_price(emu, ex):
    o = ex.create_order("ETH/USDT", "limit", "buy", 2, 1600, params={"clientOrderId": "t-1"})
    assert o["status"] == "closed" and o["average"] == 1520
    assert emu.balances("main")["USDT"]["free"] == D("10000") - 2 * 1520


def test_cancel_releases_the_funds(emu, ex):
    o = ex.create_order("ETH/USDT", "limit", "buy", 1, 1400, params={"clientOrderId": "x-1"})
    assert ex.cancel_order(o["id"], "ETH/USDT")["status"] == "canceled"
    assert ex.fetch_balance()["USDT"] == {"free": 10000, "used": 0, "total": 10000}
    assert ex.fetch_open_orders("ETH/USDT") == []
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(o["id"], "ETH/USDT")
    emu.set_clock("2023-01-10 00:00")  # lows go below 1400 later: a canceled order stays so
    assert emu.balances("main")["USDT"]["free"] == 10000
    orders = ex.fetch_orders("ETH/USDT")
    assert [(x["clientOrderId"], x["status"]) for x in orders] == [("x-1", "canceled")]
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order("999", "ETH/USDT")


def test_fetch_by_client_order_id_and_history(emu, ex):
    a = ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "h-1"})
    ex.create_order("BTC/USDT", "limit", "buy", 0.01, 15000, params={"clientOrderId": "h-2"})
    got = ex.fetch_order(None, "BTC/USDT", params={"origClientOrderId": "h-1"})
    assert got["id"] == a["id"] and got["status"] == "closed" and got["filled"] == 0.01
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(None, "BTC/USDT", params={"origClientOrderId": "never-sent"})
    assert [o["clientOrderId"] for o in ex.fetch_closed_orders("BTC/USDT")] == ["h-1"]
    assert [o["clientOrderId"] for o in ex.fetch_open_orders()] == ["h-2"]
    assert [o["clientOrderId"] for o in ex.fetch_orders("BTC/USDT")] == ["h-1", "h-2"]


def test_duplicate_client_order_id_refused_and_counted(emu, ex):
    ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "dup-1"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "dup-1"})
    # a canceled order's id is used too, and so is one of another symbol
    o = ex.create_order("ETH/USDT", "limit", "buy", 1, 1000, params={"clientOrderId": "dup-2"})
    ex.cancel_order(o["id"], "ETH/USDT")
    with pytest.raises(ccxt.InvalidOrder):
        ex.create_order("ETH/USDT", "limit", "buy", 1, 1000, params={"clientOrderId": "dup-2"})
    with pytest.raises(ccxt.InvalidOrder):
        ex.create_order("ETH/USDT", "market", "buy", 0.01, params={"clientOrderId": "dup-1"})
    assert emu.duplicate_attempts == 3
    assert [d["cid"] for d in emu.duplicates] == ["dup-1", "dup-2", "dup-1"]
    assert len(emu.orders("main")) == 2
    assert emu.balances("main")["BTC"]["free"] == D("0.5") + D("0.01") - D("0.00001")
    # ids are per account: another account may use the same one
    client(emu, KEY2, SECRET2).create_order(
        "ETH/USDT", "market", "buy", 0.01, params={"clientOrderId": "dup-1"}
    )
    assert emu.duplicate_attempts == 3


def test_bad_signature_and_unknown_key_refused(emu):
    bad = client(emu, KEY, "not-the-secret")
    bad.load_markets()
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        bad.fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        bad.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "s-1"})
    unknown = client(emu, "no-such-key", SECRET)
    unknown.load_markets()
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        unknown.create_order("BTC/USDT", "market", "buy", 0.01)
    assert emu.orders() == []
    assert [s for m, p, s in emu.requests if p == "/api/v3/order"] == [400, 401]
    # a stale timestamp is refused too (ccxt: InvalidNonce)
    late = client(emu)
    late.load_markets()
    late.options["timeDifference"] = 60_000  # ccxt signs a timestamp 60 s in the past
    with pytest.raises(ccxt.InvalidNonce):
        late.fetch_balance()


def test_filters_and_balance_refusals(emu, ex):
    # ccxt rounds amounts and prices to the market's precision, so send raw parameters
    raw = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        ex.private_post_order(
            {**raw, "quantity": "0.000015", "price": "15000", "newClientOrderId": "f-0"}
        )
    with pytest.raises(ccxt.InvalidOrder, match="PRICE_FILTER"):
        ex.private_post_order(
            {**raw, "quantity": "0.01", "price": "15000.005", "newClientOrderId": "f-1"}
        )
    with pytest.raises(ccxt.BadRequest, match="NOTIONAL"):
        ex.create_order("BTC/USDT", "market", "buy", 0.0002, params={"clientOrderId": "f-2"})
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order("BTC/USDT", "market", "buy", 0.5, params={"clientOrderId": "f-3"})
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order("BTC/USDT", "market", "sell", 0.6, params={"clientOrderId": "f-4"})
    with pytest.raises(ccxt.BadSymbol):
        ex.private_get_order({"symbol": "XRPUSDT", "orderId": "1"})
    assert emu.orders() == [] and emu.duplicate_attempts == 0
    # refused orders do not use their client order id up
    ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "f-3"})


def test_a_resend_after_spending_the_money_is_told_duplicate(emu, ex):
    ex.create_order("BTC/USDT", "market", "buy", 0.49, params={"clientOrderId": "all-in"})
    assert emu.balances("main")["USDT"]["free"] == D("10000") - D("0.49") * 20200
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):  # not InsufficientFunds
        ex.create_order("BTC/USDT", "market", "buy", 0.49, params={"clientOrderId": "all-in"})
    ex.create_order("BTC/USDT:USDT", "market", "buy", 4.5, params={"clientOrderId": "f-all"})
    with pytest.raises(ccxt.InvalidOrder, match="-4116"):  # not -2019 margin
        ex.create_order("BTC/USDT:USDT", "market", "buy", 4.5, params={"clientOrderId": "f-all"})
    with pytest.raises(ccxt.InsufficientFunds):  # what a new id would have met
        ex.create_order("BTC/USDT:USDT", "market", "buy", 4.5, params={"clientOrderId": "f-new"})
    assert emu.duplicate_attempts == 2
