"""The ccxt venue's parts that need no exchange: client ids encoded for Binance, the
journal's state machine and its file (also after SIGKILL), ccxt's own parse of Binance
responses turned into trimtab fills and rules, and the venue's construction (sandbox
verified, keys nowhere). Real ccxt, real SQLite, a real child process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import ccxt
import pytest

from trimtab.domain import Subaccount
from trimtab.domain.account import LedgerError
from trimtab.execution.ccxt_convert import (
    fill_data,
    instrument_from_market,
    margin_tiers,
    order_status,
    symbol_table,
)
from trimtab.execution.ccxt_journal import Journal, JournalError, OrderRecord
from trimtab.execution.ccxt_venue import CcxtVenue, CcxtVenueError
from trimtab.execution.client_ids import BINANCE, encode_client_id
from trimtab.execution.paper import ExchangeEvent
from trimtab.journal.store import client_order_id

BINANCE_CID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


# --- client ids --------------------------------------------------------------------
def test_trimtab_ids_go_to_binance_unchanged():
    ids = [
        client_order_id("run-1", "main", 7, 0),
        client_order_id("run-2", "a very long subaccount name with spaces", 123456, 3),
        client_order_id("r", "x", None, 1),
        client_order_id("r", "s", 10**40, 1),  # hashed by the store itself
    ]
    for cid in ids:
        assert BINANCE_CID.match(cid), cid
        assert encode_client_id(cid) == cid


def test_other_ids_are_digested_to_binance_rules_one_to_one():
    odd = ["x" * 37, "has space", "ünïcode", "t.abc", "tt-1-main-2-0!"]
    out = [encode_client_id(c) for c in odd]
    for cid, enc in zip(odd, out, strict=True):
        assert BINANCE_CID.match(enc), enc
        assert len(enc) == 36 and enc.startswith("t.")
        assert encode_client_id(cid) == enc  # deterministic
    assert len(set(out)) == len(out)
    # A valid id starting with the digest prefix is digested too: it cannot collide with
    # another id's digest sent unchanged.
    assert encode_client_id("t.abc") != "t.abc"
    assert not BINANCE.accepts("") and not BINANCE.accepts("a" * 37)
    with pytest.raises(ValueError, match="non-empty"):
        encode_client_id("")


# --- the journal -------------------------------------------------------------------
def record(cid: str = "tt-1-main-1-0", **kw) -> OrderRecord:
    fields = dict(
        cid=cid,
        venue_cid=encode_client_id(cid),
        subaccount="main",
        symbol="BTCUSDT",
        side="buy",
        type="market",
        quantity=0.5,
        quote_quantity=None,
        limit_price=None,
        reduce_only=False,
        leverage=1.0,
        time_in_force="next_bar",
        reason="rebalance",
        bar=3,
    )
    fields.update(kw)
    return OrderRecord(**fields)


def test_journal_state_machine(tmp_path):
    j = Journal(tmp_path / "j.sqlite", now_ms=1_000)
    rec = j.add_order(record())
    assert rec.seq == 1 and j.order(rec.cid).state == "sending"
    j.update_order(rec, state="unknown")
    j.update_order(rec, state="sending")  # a resend once the exchange has no trace
    rec.exchange_order_id = "42"
    j.update_order(rec, state="sent")
    with pytest.raises(JournalError, match="cannot move from sent to sending"):
        j.update_order(rec, state="sending")
    with pytest.raises(JournalError, match="cannot move from sent to unknown"):
        j.update_order(rec, state="unknown")
    other = j.add_order(record("tt-1-main-2-0", state="rejected", status="rejected"))
    with pytest.raises(JournalError, match="cannot move from rejected to sending"):
        j.update_order(other, state="sending")
    with pytest.raises(JournalError, match="starts as sending or rejected"):
        j.add_order(record("tt-1-main-3-0", state="sent"))
    assert j.order_by_exchange_id("main", "BTCUSDT", "42").cid == rec.cid
    assert j.order_by_venue_cid(rec.venue_cid).cid == rec.cid
    assert [r.cid for r in j.orders()] == [rec.cid, other.cid]
    assert [r.cid for r in j.orders(states=("rejected",))] == [other.cid]
    j.close()


def test_journal_transaction_is_all_or_nothing_and_reopens(tmp_path):
    path = tmp_path / "j.sqlite"
    j = Journal(path, now_ms=5)
    with pytest.raises(RuntimeError), j.transaction():
        j.add_event("fill", 1, 10, "main", "c", {"x": 1})
        j.set_cursor("main", "trades:BTCUSDT", 9)
        raise RuntimeError("boom")
    assert j.events_since(0) == [] and j.cursor("main", "trades:BTCUSDT") is None
    with j.transaction():
        seq = j.add_event("fill", 1, 10, "main", "c", {"x": 0.1})
        j.add_trade("main", "BTC/USDT", "7", "42", seq)
        j.set_cursor("main", "trades:BTCUSDT", 7)
    j.set_last_bar(4)
    j.close()
    j = Journal(path, now_ms=99)
    assert j.created_ms == 5 and j.last_bar == 4
    assert j.events_since(0) == [(1, "fill", 1, 10, "main", "c", '{"x":0.1}')]
    assert j.trade_seen("main", "BTC/USDT", "7") and not j.trade_seen("main", "BTC/USDT", "8")
    assert j.cursor("main", "trades:BTCUSDT") == 7
    j.close()


def test_journal_is_locked_while_open_and_refuses_other_files(tmp_path):
    path = tmp_path / "j.sqlite"
    j = Journal(path, now_ms=0)
    code = f"from trimtab.execution.ccxt_journal import Journal; Journal({str(path)!r}, now_ms=0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "in use by another venue" in out.stderr
    j.close()
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(JournalError, match="not a SQLite database"):
        Journal(bad, now_ms=0)


def test_a_sending_row_survives_sigkill(tmp_path):
    """The row is committed before the request: a process killed right after it leaves
    it on disk, and the reopened journal finds it ``sending``."""
    path = tmp_path / "j.sqlite"
    code = textwrap.dedent(
        f"""
        import os, signal
        from trimtab.execution.ccxt_journal import Journal, OrderRecord
        j = Journal({str(path)!r}, now_ms=1)
        j.add_order(OrderRecord(cid="tt-k-main-1-0", venue_cid="tt-k-main-1-0",
            subaccount="main", symbol="BTCUSDT", side="buy", type="market", quantity=1.0,
            quote_quantity=None, limit_price=None, reduce_only=False, leverage=1.0,
            time_in_force="gtc", reason="", bar=0, attempts=1, sent_at_ms=1))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    j = Journal(path, now_ms=2)
    rec = j.order("tt-k-main-1-0")
    assert rec is not None and rec.state == "sending" and rec.attempts == 1
    j.close()


# --- ccxt's parse of Binance responses, in trimtab's terms ------------------------
SPOT_INFO = {
    "symbol": "BTCUSDT",
    "status": "TRADING",
    "baseAsset": "BTC",
    "baseAssetPrecision": 8,
    "quoteAsset": "USDT",
    "quotePrecision": 8,
    "quoteAssetPrecision": 8,
    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
    "isSpotTradingAllowed": True,
    "isMarginTradingAllowed": False,
    "filters": [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": "0.01",
            "maxPrice": "1000000",
            "tickSize": "0.01",
        },
        {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000", "stepSize": "0.00001"},
        {"filterType": "NOTIONAL", "minNotional": "5.00", "applyMinToMarket": True},
    ],
    "permissions": ["SPOT"],
    "permissionSets": [["SPOT"]],
}
PERP_INFO = {
    "symbol": "ETHUSDT",
    "pair": "ETHUSDT",
    "contractType": "PERPETUAL",
    "deliveryDate": 4133404800000,
    "onboardDate": 1569398400000,
    "status": "TRADING",
    "baseAsset": "ETH",
    "quoteAsset": "USDT",
    "marginAsset": "USDT",
    "pricePrecision": 2,
    "quantityPrecision": 3,
    "baseAssetPrecision": 8,
    "quotePrecision": 8,
    "underlyingType": "COIN",
    "orderTypes": ["LIMIT", "MARKET"],
    "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    "filters": [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": "0.01",
            "maxPrice": "100000",
            "tickSize": "0.01",
        },
        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "10000", "stepSize": "0.001"},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "2000", "stepSize": "0.001"},
        {"filterType": "MIN_NOTIONAL", "notional": "20"},
    ],
}


@pytest.fixture(scope="module")
def binance():
    ex = ccxt.binance()
    ex.options["crossMarginPairsData"] = []  # what fetch_markets sets before parsing
    ex.options["isolatedMarginPairsData"] = []
    ex.set_markets(ex.parse_markets([SPOT_INFO, PERP_INFO]))
    return ex


def test_symbols_and_rules_from_ccxt_markets(binance):
    table = symbol_table(binance.markets)
    assert table == {"BTCUSDT": "BTC/USDT", "ETHUSDT-PERP": "ETH/USDT:USDT"}
    spot = instrument_from_market("BTCUSDT", binance.markets["BTC/USDT"])
    assert (spot.lot_size, spot.min_qty, spot.tick_size, spot.min_notional) == (
        0.00001,
        0.00001,
        0.01,
        5.0,
    )
    assert not spot.is_perpetual and spot.base == "BTC"
    raw = {
        "symbol": "ETHUSDT",
        "brackets": [
            {
                "bracket": 1,
                "initialLeverage": 100,
                "notionalCap": 10000,
                "notionalFloor": 0,
                "maintMarginRatio": 0.005,
                "cum": 0.0,
            },
            {
                "bracket": 2,
                "initialLeverage": 75,
                "notionalCap": 100000,
                "notionalFloor": 10000,
                "maintMarginRatio": 0.0065,
                "cum": 15.0,
            },
        ],
    }
    rows = binance.parse_market_leverage_tiers(raw, binance.markets["ETH/USDT:USDT"])
    tiers = margin_tiers(rows, "ETHUSDT-PERP")
    assert [
        (t.max_notional, t.maintenance_margin_rate, t.maintenance_amount, t.max_leverage)
        for t in tiers
    ] == [(10000, 0.005, 0.0, 100), (100000, 0.0065, 15.0, 75)]
    perp = instrument_from_market("ETHUSDT-PERP", binance.markets["ETH/USDT:USDT"], tiers)
    assert perp.is_perpetual and perp.margin_tiers == tiers
    assert (perp.lot_size, perp.min_qty, perp.tick_size) == (0.001, 0.001, 0.01)
    # 15,000 USDT is in the second bracket: 15,000 * 0.0065 - 15
    assert perp.maintenance_margin(15_000) == pytest.approx(82.5)


def _event(data: dict) -> ExchangeEvent:
    import pandas as pd

    return ExchangeEvent(1, "fill", 0, pd.Timestamp(0, tz="UTC"), "main", "c", data)


def test_a_spot_buy_pays_its_fee_in_the_base_asset(binance):
    raw = {
        "symbol": "BTCUSDT",
        "id": 28457,
        "orderId": 100234,
        "orderListId": -1,
        "price": "40000.00",
        "qty": "0.01000000",
        "quoteQty": "400.00",
        "commission": "0.00001000",
        "commissionAsset": "BTC",
        "time": 1499865549590,
        "isBuyer": True,
        "isMaker": False,
        "isBestMatch": True,
    }
    trade = binance.parse_trade(raw, binance.markets["BTC/USDT"])
    data = fill_data(trade, symbol="BTCUSDT", subaccount="main", reason="rebalance")
    fill = _event(data).fill()
    assert (fill.order_id, fill.quantity, fill.price, fill.fee, fill.fee_currency) == (
        100234,
        0.01,
        40000.0,
        0.00001,
        "BTC",
    )
    assert str(fill.side) == "buy" and str(fill.liquidity) == "taker"
    assert data["trade_id"] == "28457" and fill.timestamp.value == 1499865549590 * 10**6
    sub = Subaccount("main", cash=1000.0)
    sub.apply_fill(fill, instrument_from_market("BTCUSDT", binance.markets["BTC/USDT"]))
    assert sub.cash == 600.0  # 1000 - 0.01 * 40000: no quote fee
    assert sub.quantity("BTCUSDT") == 0.01 - 0.00001  # the base fee is not received
    assert sub.fees_by_currency == {"BTC": 0.00001}


def test_a_fee_in_bnb_cannot_be_booked_by_the_ledger(binance):
    """Binance charges fees in BNB when the account pays fees with BNB: the event says
    so exactly, and trimtab's ledger refuses it (neither base nor quote)."""
    raw = {
        "symbol": "BTCUSDT",
        "id": 1,
        "orderId": 2,
        "price": "40000",
        "qty": "0.01",
        "quoteQty": "400",
        "commission": "0.0012",
        "commissionAsset": "BNB",
        "time": 1,
        "isBuyer": True,
        "isMaker": True,
    }
    trade = binance.parse_trade(raw, binance.markets["BTC/USDT"])
    fill = _event(fill_data(trade, symbol="BTCUSDT", subaccount="main")).fill()
    assert fill.fee_currency == "BNB" and str(fill.liquidity) == "maker"
    sub = Subaccount("main", cash=1000.0)
    with pytest.raises(LedgerError, match="fee currency BNB"):
        sub.apply_fill(fill, instrument_from_market("BTCUSDT", binance.markets["BTC/USDT"]))


def test_a_perp_trade_pays_usdt(binance):
    raw = {
        "buyer": False,
        "commission": "0.75",
        "commissionAsset": "USDT",
        "id": 698759,
        "maker": False,
        "orderId": 25851813,
        "price": "1500",
        "qty": "1",
        "quoteQty": "1500",
        "realizedPnl": "0",
        "side": "SELL",
        "positionSide": "BOTH",
        "symbol": "ETHUSDT",
        "time": 1569514978020,
    }
    trade = binance.parse_trade(raw, binance.markets["ETH/USDT:USDT"])
    data = fill_data(trade, symbol="ETHUSDT-PERP", subaccount="main", leverage=5.0)
    fill = _event(data).fill()
    assert (
        str(fill.side),
        fill.quantity,
        fill.price,
        fill.fee,
        fill.fee_currency,
        fill.leverage,
    ) == (
        "sell",
        1.0,
        1500.0,
        0.75,
        "USDT",
        5.0,
    )


def test_order_statuses():
    assert order_status("open", 0, 1) == "open"
    assert order_status("open", 0.5, 1) == "partially_filled"
    assert order_status("closed", 1, 1) == "filled"
    assert order_status("canceled", 0.2, 1) == "cancelled"
    assert order_status("expired", 0, 1) == "expired"
    assert order_status("expired", 0.3, 1) == "filled"  # a market order's rest expired
    assert order_status("rejected", 0, 1) == "rejected"
    assert order_status("canceling", 0.1, 1) == "partially_filled"  # asked again later
    assert order_status(None, 0, 1) == "open"


# --- the venue's construction: no network ------------------------------------------
class Secret:
    def __init__(self, value: str) -> None:
        self._v = value

    def reveal(self) -> str:
        return self._v

    def __repr__(self) -> str:
        return "Secret(***)"


def test_sandbox_is_verified_and_keys_stay_out_of_reprs(tmp_path):
    key, secret = "K" * 64, "S" * 64
    v = CcxtVenue(tmp_path / "v.sqlite", {"main": (Secret(key), Secret(secret))}, sandbox=True)
    ex = v._ex["main"]
    hosts = {re.sub(r"^https://([^/]+)/.*$", r"\1", u) for u in ex.urls["api"].values()}
    assert hosts <= {"testnet.binance.vision", "testnet.binancefuture.com"}
    assert key not in repr(v) and secret not in repr(v)
    assert v._scrub(f"bad key {key} and {secret} signature=abcdef12") == (
        "bad key *** and *** signature=***"
    )
    v.close()
    with pytest.raises(CcxtVenueError, match="give one of them"):
        CcxtVenue(tmp_path / "w.sqlite", {"main": ("k", "s")}, sandbox=True, api_urls="http://x")


def test_a_sandbox_that_did_not_switch_is_refused(tmp_path, monkeypatch):
    """If ccxt left any url on the real exchange, a sandbox venue is not made."""
    real = ccxt.binance.set_sandbox_mode

    def half_switch(self, enable):
        real(self, enable)
        self.urls["api"]["private"] = "https://api.binance.com/api/v3"

    monkeypatch.setattr(ccxt.binance, "set_sandbox_mode", half_switch)
    with pytest.raises(CcxtVenueError, match="did not switch binance to its sandbox.*private"):
        CcxtVenue(tmp_path / "v.sqlite", {"main": ("k", "s")}, sandbox=True)


def test_api_urls_keep_each_entrys_path(tmp_path):
    v = CcxtVenue(
        tmp_path / "v.sqlite",
        {"a": ("k1", "s1"), "b": ("k2", "s2")},
        api_urls="http://127.0.0.1:9/",
    )
    api = v._ex["a"].urls["api"]
    assert api["public"] == "http://127.0.0.1:9/api/v3"
    assert api["fapiPrivate"] == "http://127.0.0.1:9/fapi/v1"
    assert api["fapiPrivateV2"] == "http://127.0.0.1:9/fapi/v2"
    assert all(u.startswith("http://127.0.0.1:9/") for u in api.values() if isinstance(u, str))
    assert v._ex["a"] is not v._ex["b"] and v._ex["b"].apiKey == "k2"
    v.close()
    with pytest.raises(CcxtVenueError, match="subaccount main: the secret must be"):
        CcxtVenue(tmp_path / "x.sqlite", {"main": ("k", "")})


def test_environment_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("BINANCE_API_KEY", "from-env")
    v = CcxtVenue(tmp_path / "v.sqlite", {"main": ("k", "s")})
    assert v._ex["main"].apiKey == "k"
    v.close()
    assert os.environ["BINANCE_API_KEY"] == "from-env"


def test_a_journal_belongs_to_its_subaccounts_and_keys_to_one_subaccount(tmp_path):
    path = tmp_path / "v.sqlite"
    CcxtVenue(path, {"a": ("k1", "s1"), "b": ("k2", "s2")}).close()
    CcxtVenue(path, {"b": ("k2", "s2"), "a": ("k1", "s1")}).close()  # same set: fine
    with pytest.raises(CcxtVenueError, match="holds subaccounts a, b, not a$"):
        CcxtVenue(path, {"a": ("k1", "s1")})
    CcxtVenue(path, {"a": ("k1", "s1"), "b": ("k2", "s2")}).close()  # the refusal let go
    with pytest.raises(CcxtVenueError, match="subaccounts a and b have the same API key"):
        CcxtVenue(tmp_path / "w.sqlite", {"a": ("same", "s1"), "b": ("same", "s2")})
