"""Faults injected by the emulator, seen through the real ccxt client: a timeout after
the order was accepted, 429/418, 5xx (before and after accepting), rejects, partial
fills, and a restart from the state file that loses nothing."""

from __future__ import annotations

import json
import urllib.request
from decimal import Decimal as D

import ccxt
import pytest

from tests.emulator import BinanceEmulator
from tests.emulator.helpers import RULES, client, market


def test_timeout_after_accept_leaves_the_order_at_the_exchange(emu):
    ex = client(emu, timeout=400)
    ex.load_markets()
    emu.fault("timeout_after_accept")
    with pytest.raises(ccxt.RequestTimeout):
        ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "to-1"})
    # the order was executed and committed before the silence
    got = ex.fetch_order(None, "BTC/USDT", params={"origClientOrderId": "to-1"})
    assert got["status"] == "closed" and got["filled"] == 0.01 and got["average"] == 20200
    assert emu.balances("main")["BTC"]["free"] == D("0.5") + D("0.01") - D("0.00001")
    # sending it again is refused, not doubled
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate"):
        ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "to-1"})
    assert emu.duplicate_attempts == 1 and len(emu.trades("main")) == 1


def test_timeout_drop_mode_and_a_resting_limit(emu):
    ex = client(emu, timeout=2000)
    ex.load_markets()
    emu.fault("timeout_after_accept", mode="drop")
    with pytest.raises(ccxt.NetworkError):
        ex.create_order("ETH/USDT", "limit", "buy", 1, 1400, params={"clientOrderId": "to-2"})
    assert [o["clientOrderId"] for o in ex.fetch_open_orders("ETH/USDT")] == ["to-2"]


def test_429_and_418_are_ddos_protection_with_retry_after(emu, ex):
    emu.fault("http_429", retry_after=7)
    with pytest.raises(ccxt.DDoSProtection):
        ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "r-1"})
    assert ex.last_response_headers["Retry-After"] == "7"
    assert emu.orders() == []  # nothing was executed
    emu.fault("http_429", status=418, path="/api/v3/account")
    ex.fetch_ticker("BTC/USDT")  # the 418 waits for its path
    with pytest.raises(ccxt.DDoSProtection, match="418"):
        ex.fetch_balance()
    ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "r-1"})
    assert len(emu.orders()) == 1
    assert [s for _, p, s in emu.requests if p in ("/api/v3/order", "/api/v3/account")] == [
        429,
        418,
        200,
    ]


def test_5xx_before_and_after_accepting(emu, ex):
    emu.fault("http_5xx", count=2)
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            ex.fetch_balance()
    assert ex.fetch_balance()["USDT"]["total"] == 10000
    emu.fault("http_5xx", status=502)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "5-1"})
    assert emu.orders() == []
    emu.fault("http_5xx", after_accept=True)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "5-2"})
    assert [o["cid"] for o in emu.orders()] == ["5-2"]
    assert ex.fetch_order(None, "BTC/USDT", params={"origClientOrderId": "5-2"})["filled"] == 0.01


def test_reject(emu, ex):
    emu.fault("reject")
    with pytest.raises(ccxt.InvalidOrder, match="rejected by the emulator"):
        ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "j-1"})
    emu.fault("reject", code=-1013, msg="Filter failure: PERCENT_PRICE_BY_SIDE")
    with pytest.raises(ccxt.InvalidOrder, match="PERCENT_PRICE"):
        ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "j-1"})
    assert emu.orders() == []
    ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "j-1"})
    assert emu.duplicate_attempts == 0


def test_partial_market_fill_expires_the_rest(emu, ex):
    emu.fault("partial", fraction=0.3)
    o = ex.create_order("ETH/USDT", "market", "buy", 1, params={"clientOrderId": "p-1"})
    assert o["status"] == "expired" and o["filled"] == 0.3 and o["remaining"] == 0.7
    b = emu.balances("main")
    assert b["USDT"]["free"] == D("10000") - D("0.3") * 1520
    assert b["ETH"]["free"] == D("0.3") - D("0.0003")
    assert ex.fetch_open_orders("ETH/USDT") == []


def test_partial_limit_fill_keeps_the_rest_open(emu, ex):
    emu.fault("partial")  # half
    o = ex.create_order("ETH/USDT", "limit", "buy", 2, 1600, params={"clientOrderId": "p-2"})
    assert o["status"] == "open" and o["filled"] == 1 and o["average"] == 1520
    # the rest rests at its limit, 1600 locked for it
    assert ex.fetch_balance()["USDT"] == {"free": 10000 - 1520 - 1600, "used": 1600, "total": 8480}
    emu.set_clock("2023-01-04 00:05")  # 01-04 opens at 1530 <= 1600: the rest fills as maker
    done = ex.fetch_order(o["id"], "ETH/USDT")
    assert done["status"] == "closed" and done["filled"] == 2
    assert done["average"] == pytest.approx((1520 + 1600) / 2)
    trades = ex.fetch_my_trades("ETH/USDT")
    assert [(t["price"], t["amount"], t["takerOrMaker"]) for t in trades] == [
        (1520, 1, "taker"),
        (1600, 1, "maker"),
    ]
    assert emu.balances("main")["USDT"] == {"free": D("10000") - 1520 - 1600, "locked": D(0)}


def test_partial_on_a_resting_limit(emu, ex):
    emu.fault("partial", fraction=0.25, path="/never")  # waits for its path: never used
    emu.fault("partial", fraction=0.25)  # the next order request's first fill
    o = ex.create_order("ETH/USDT", "limit", "buy", 1, 1475, params={"clientOrderId": "p-3"})
    assert o["status"] == "open" and o["filled"] == 0 and len(emu.pending_faults()) == 1
    emu.set_clock("2023-01-04 00:05")  # 01-03 low 1470 reaches 1475: a quarter fills
    got = ex.fetch_order(o["id"], "ETH/USDT")
    assert (got["status"], got["filled"], got["remaining"]) == ("open", 0.25, 0.75)
    assert got["info"]["status"] == "PARTIALLY_FILLED"
    b = emu.balances("main")
    assert b["USDT"] == {"free": D("10000") - D("1475"), "locked": D("0.75") * 1475}
    assert b["ETH"]["free"] == D("0.25") - D("0.00025")
    ex.cancel_order(o["id"], "ETH/USDT")  # the rest is released
    assert emu.balances("main")["USDT"] == {"free": D("10000") - D("0.25") * 1475, "locked": 0}


def test_restart_from_the_state_file_loses_nothing(emu, ex, tmp_path):
    ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "s-1"})
    ex.create_order("ETH/USDT", "limit", "buy", 1, 1475, params={"clientOrderId": "s-2"})
    before = emu.state()
    emu.fault("restart")
    with pytest.raises(ccxt.NetworkError):
        ex.fetch_balance()
    assert emu.wait_up(10) and emu.restarts == 1
    after = emu.state()
    assert {k: v for k, v in after.items() if k != "faults"} == {
        k: v for k, v in before.items() if k != "faults"
    }
    assert ex.fetch_balance()["USDT"]["used"] == 1475
    assert [o["clientOrderId"] for o in ex.fetch_open_orders("ETH/USDT")] == ["s-2"]
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate"):
        ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "s-1"})
    # a new emulator on the same file carries on where this one stopped
    emu.set_clock("2023-01-04 00:05")
    emu.close()
    again = BinanceEmulator(
        market(),
        rules=RULES,
        state_path=emu.state_path,
        accounts={"test-key-main": ("test-secret-main", "main")},
    ).start()
    try:
        assert again.clock_ms == emu.clock_ms and again.duplicate_attempts == 1
        assert again.balances("main") == emu.balances("main")
        assert again.balances("main")["ETH"]["free"] == D("0.999")  # s-2 filled at 1475
        ex2 = client(again)
        assert [t["price"] for t in ex2.fetch_my_trades("ETH/USDT")] == [1475]
    finally:
        again.close()


def test_control_endpoints(emu, ex):
    def call(method, path, body=None):
        req = urllib.request.Request(
            emu.url + path, method=method, data=json.dumps(body).encode() if body else None
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    assert call("POST", "/_emulator/clock", {"ms": emu.clock_ms + 86_400_000})["clock_ms"] == (
        emu.clock_ms
    )
    assert ex.fetch_ticker("BTC/USDT")["last"] == 20300
    call("POST", "/_emulator/fault", {"kind": "http_429", "count": 2})
    assert len(emu.pending_faults()) == 2
    state = call("GET", "/_emulator/state")
    assert state["accounts"]["main"]["spot"]["USDT"]["free"] == "10000"
    assert state["duplicate_attempts"] == 0 and len(state["faults"]) == 2
    with pytest.raises(ValueError, match="unknown fault"):
        emu.fault("meteor")
    with pytest.raises(ValueError, match="forward"):
        emu.set_clock("2023-01-01")
