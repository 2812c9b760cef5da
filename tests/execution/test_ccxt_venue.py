"""The ccxt venue end to end: the real ccxt client over HTTP against the local Binance
emulator (tests/emulator), with faults. A mirror ledger that books the venue's events
ends with the emulator's balances; a timeout after the exchange took an order, a 5xx, a
429 and a process SIGKILLed between its journal write and the answer each leave exactly
one order at the exchange (the emulator counts reuses of a client id: zero)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import ccxt
import pytest

from tests.conftest import synthetic_bars
from tests.emulator import BinanceEmulator, point_ccxt_at
from trimtab.domain import Account, Order, OrderType, Side
from trimtab.domain.orders import TimeInForce
from trimtab.execution.ccxt_venue import CcxtVenue, CcxtVenueError, VenueUnavailable

KEY, SECRET = "alice-key-" + "k" * 40, "alice-secret-" + "s" * 40
ROOT = Path(__file__).resolve().parents[2]
START_SPOT, START_FUT = 10_000.0, 5_000.0


def bars():
    # Hourly bars from 2021-01-01 00:00 UTC: BTC climbs 100 a bar, ETH 5 a bar.
    return synthetic_bars(
        {
            "BTCUSDT": [40_000.0 + 100 * i for i in range(60)],
            "ETHUSDT": [2_000.0 + 5 * i for i in range(60)],
        },
        freq="1h",
    )


@pytest.fixture
def emu(tmp_path):
    e = BinanceEmulator(
        bars(),
        accounts={KEY: (SECRET, "alice", {"USDT": START_SPOT}, {"USDT": START_FUT})},
        state_path=tmp_path / "emu.json",
        funding_rates=0.0001,
    )
    e.start()
    yield e
    e.close()


def aim(url: str):
    def configure(ex):
        point_ccxt_at(ex, url)
        ex.rateLimit = 1  # the emulator has no limits; ccxt's own throttle would idle
        return ex

    return configure


class Sleeps:
    """An injected sleep that records what it was asked and sleeps at most 10 ms."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        time.sleep(min(seconds, 0.01))


def venue(emu, path, **kw) -> CcxtVenue:
    kw.setdefault("symbols", ["BTCUSDT", "ETHUSDT-PERP"])
    kw.setdefault("timeout_ms", 1500)
    kw.setdefault("sleep", Sleeps())
    return CcxtVenue(path, {"alice": (KEY, SECRET)}, configure=aim(emu.url), **kw)


class Mirror:
    """A ledger booking the venue's events as the runner does."""

    def __init__(self, v: CcxtVenue) -> None:
        self.v = v
        self.account = Account()
        self.sub = self.account.add_subaccount("alice", START_SPOT + START_FUT)
        self.seq = 0
        self.events = []

    def take(self) -> list:
        new = self.v.events_since(self.seq)
        for ev in new:
            if ev.kind == "fill" and not ev.data.get("external"):
                self.sub.apply_fill(ev.fill(), self.v.instrument(ev.data["symbol"]))
            elif ev.kind == "funding":
                self.sub.apply_funding(ev.data["symbol"], ev.data["rate"], ev.data["mark"])
            self.seq = ev.seq
        self.events += new
        return new


def posts(emu, path="/api/v3/order") -> int:
    return sum(1 for m, p, _ in emu.requests if m == "POST" and p == path)


def at_exchange(emu, cid):
    return [o for o in emu.orders("alice") if o["cid"] == cid]


def emu_cash(emu) -> float:
    spot = emu.balances("alice")["USDT"]
    wallet = emu.futures_wallet("alice").get("USDT", Decimal(0))
    margin = sum((p["isolated_margin"] for p in emu.positions("alice").values()), Decimal(0))
    return float(spot["free"] + spot["locked"] + wallet - margin)


def buy(symbol="BTCUSDT", qty=0.1, **kw) -> Order:
    return Order(symbol, Side.BUY, quantity=qty, subaccount="alice", **kw)


# --- the plain path ----------------------------------------------------------------
def test_fills_booked_by_a_mirror_equal_the_emulators_balances(emu, tmp_path):
    v = venue(emu, tmp_path / "v.sqlite")
    m = Mirror(v)
    v.advance(0)
    a = v.submit(buy(), "tt-a-alice-1-0", 0)
    assert (a.status, a.filled_quantity, a.average_price) == ("filled", 0.1, 40_000.0)
    b = v.submit(buy("ETHUSDT-PERP", 1.0, leverage=5), "tt-a-alice-1-1", 0)
    assert b.status == "filled" and b.exchange_order_id
    limit = Order(
        "BTCUSDT",
        Side.SELL,
        quantity=0.05,
        type=OrderType.LIMIT,
        limit_price=40_600.0,
        subaccount="alice",
        time_in_force=TimeInForce.GTC,
    )
    c = v.submit(limit, "tt-a-alice-1-2", 0)
    assert c.status == "open" and [o.client_order_id for o in v.open_orders("alice")] == [
        "tt-a-alice-1-2"
    ]
    emu.step(1)
    v.advance(1)
    fills = [e for e in m.take() if e.kind == "fill"]
    assert [
        (e.client_order_id, e.data["quantity"], e.data["fee"], e.data["fee_currency"])
        for e in fills
    ] == [
        ("tt-a-alice-1-0", 0.1, 0.0001, "BTC"),  # 10 bps of the base received
        ("tt-a-alice-1-1", 1.0, 1.0, "USDT"),  # 5 bps of 2,000
    ]
    assert all(e.bar == 1 for e in fills)
    # The limit sell rests until a bar's high reaches 40,600 (bar 2: high 40,200 * 1.01).
    emu.step(2)
    v.advance(3)
    new = m.take()
    assert [(e.kind, e.client_order_id, e.data["price"], e.data["liquidity"]) for e in new] == [
        ("fill", "tt-a-alice-1-2", 40_600.0, "maker")
    ]
    assert v.order("tt-a-alice-1-2").status == "filled" and v.open_orders("alice") == []
    v.advance(3)  # a repeat books nothing
    assert m.take() == []
    btc = emu.balances("alice")["BTC"]
    assert m.sub.quantity("BTCUSDT") == pytest.approx(float(btc["free"] + btc["locked"]), abs=1e-12)
    assert m.sub.quantity("BTCUSDT") == pytest.approx(0.1 - 0.0001 - 0.05, abs=1e-15)
    assert m.sub.quantity("ETHUSDT-PERP") == float(emu.positions("alice")["ETHUSDT"]["amt"])
    assert m.sub.cash == pytest.approx(emu_cash(emu), rel=1e-12)
    bal = v.balances()["alice"]
    assert bal["cash"] == pytest.approx(emu_cash(emu), rel=1e-12)
    assert bal["positions"] == {
        "BTCUSDT": pytest.approx(0.0499),
        "ETHUSDT-PERP": 1.0,
    }
    assert emu.duplicate_attempts == 0
    v.close()


def test_rejections_are_journalled_with_the_exchanges_reason(emu, tmp_path):
    v = venue(emu, tmp_path / "v.sqlite")
    m = Mirror(v)
    tiny = v.submit(buy(qty=0.0001), "tt-r-alice-1-0", 0)  # 4 USDT < min notional 5
    assert tiny.status == "rejected" and "Filter failure" in tiny.reason
    broke = v.submit(buy(qty=1.0), "tt-r-alice-1-1", 0)  # 40,000 USDT > 10,000
    assert broke.status == "rejected" and "insufficient balance" in broke.reason.lower()
    odd = v.submit(buy("DOGEUSDT"), "tt-r-alice-1-2", 0)
    assert odd.status == "rejected" and "unknown symbol DOGEUSDT" in odd.reason
    assert [(e.kind, e.client_order_id, e.data["status"]) for e in m.take()] == [
        ("order", "tt-r-alice-1-0", "rejected"),
        ("order", "tt-r-alice-1-1", "rejected"),
        ("order", "tt-r-alice-1-2", "rejected"),
    ]
    again = v.submit(buy(qty=0.0001), "tt-r-alice-1-0", 0)  # known: nothing sent again
    assert again == tiny and posts(emu) == 2
    assert KEY not in tiny.reason + broke.reason and SECRET not in tiny.reason + broke.reason
    v.close()


# --- faults: exactly once ---------------------------------------------------------
@pytest.mark.parametrize("mode", ["hang", "drop"])
def test_a_timeout_after_accept_is_resolved_without_a_second_send(emu, tmp_path, mode):
    v = venue(emu, tmp_path / "v.sqlite")
    emu.fault("timeout_after_accept", mode=mode, seconds=5)
    got = v.submit(buy(), "tt-t-alice-1-0", 0)
    assert (got.status, got.filled_quantity) == ("filled", 0.1)
    assert len(at_exchange(emu, "tt-t-alice-1-0")) == 1
    assert posts(emu) == 1 and emu.duplicate_attempts == 0
    # The journal knows it now: a second submit sends nothing.
    assert v.submit(buy(), "tt-t-alice-1-0", 0).exchange_order_id == got.exchange_order_id
    assert posts(emu) == 1
    v.close()


def test_a_5xx_after_accept_is_an_unknown_found_at_the_exchange(emu, tmp_path):
    v = venue(emu, tmp_path / "v.sqlite")
    emu.fault("http_5xx", status=503, after_accept=True)
    got = v.submit(buy(), "tt-5-alice-1-0", 0)
    assert got.status == "filled" and len(at_exchange(emu, "tt-5-alice-1-0")) == 1
    assert posts(emu) == 1 and emu.duplicate_attempts == 0
    v.close()


def test_429_backs_off_as_the_server_says_and_sends_once(emu, tmp_path):
    sleeps = Sleeps()
    v = venue(emu, tmp_path / "v.sqlite", sleep=sleeps)
    v.advance(0)
    emu.fault("http_429", count=2, retry_after=3, path="/api/v3/order", method="POST")
    got = v.submit(buy(), "tt-q-alice-1-0", 0)
    assert got.status == "filled" and len(at_exchange(emu, "tt-q-alice-1-0")) == 1
    assert emu.duplicate_attempts == 0
    assert sleeps.calls == [3.0, 3.0]  # Retry-After: 3 over the backoff's 0.5 and 1.0
    # Reads back off too (exponential: 0.5, 1.0, 2.0 without a Retry-After above them).
    sleeps.calls.clear()
    emu.fault("http_429", count=3, retry_after=0, path="/api/v3/myTrades")
    emu.step(1)
    v.advance(1)
    assert sleeps.calls == [0.5, 1.0, 2.0]
    assert [e.client_order_id for e in v.events_since(0) if e.kind == "fill"] == ["tt-q-alice-1-0"]
    v.close()


def test_429_past_the_retries_leaves_the_read_unavailable(emu, tmp_path):
    v = venue(emu, tmp_path / "v.sqlite", max_retries=2)
    emu.fault("http_429", count=3, retry_after=0, path="/api/v3/account")
    with pytest.raises(VenueUnavailable, match="after 3 tries"):
        v.balances()
    v.close()


def test_partial_fills(emu, tmp_path):
    v = venue(emu, tmp_path / "v.sqlite")
    m = Mirror(v)
    emu.fault("partial", fraction=0.5)
    mkt = v.submit(buy(qty=0.2), "tt-p-alice-1-0", 0)
    # A market order's rest expires: filled for what it got, as the paper exchange says.
    assert (mkt.status, mkt.filled_quantity, mkt.reason) == ("filled", 0.1, "the rest expired")
    emu.fault("partial", fraction=0.5)
    lim = Order(
        "BTCUSDT",
        Side.BUY,
        quantity=0.1,
        type=OrderType.LIMIT,
        limit_price=40_100.0,
        subaccount="alice",
        time_in_force=TimeInForce.GTC,
    )
    got = v.submit(lim, "tt-p-alice-1-1", 0)  # marketable: half at once, the rest rests
    assert (got.status, got.filled_quantity) == ("partially_filled", 0.05)
    cancelled = v.cancel("tt-p-alice-1-1")
    assert (cancelled.status, cancelled.filled_quantity) == ("cancelled", 0.05)
    v.advance(0)
    assert [
        (e.kind, e.client_order_id, e.data.get("quantity"), e.data.get("status")) for e in m.take()
    ] == [
        ("order", "tt-p-alice-1-1", None, "cancelled"),
        ("fill", "tt-p-alice-1-0", 0.1, None),
        ("fill", "tt-p-alice-1-1", 0.05, None),
    ]
    btc = emu.balances("alice")["BTC"]
    assert m.sub.quantity("BTCUSDT") == pytest.approx(float(btc["free"]), abs=1e-12)
    assert m.sub.cash == pytest.approx(emu_cash(emu), rel=1e-12)
    assert v.order("tt-p-alice-1-1").fee == pytest.approx(0.00005)
    v.close()


def test_a_next_bar_limit_not_filled_in_its_bar_expires(emu, tmp_path):
    v = venue(emu, tmp_path / "v.sqlite")
    lim = Order(
        "BTCUSDT",
        Side.BUY,
        quantity=0.1,
        type=OrderType.LIMIT,
        limit_price=30_000.0,
        subaccount="alice",
    )
    v.submit(lim, "tt-e-alice-1-0", 0)
    emu.step(1)
    v.advance(1)  # its bar: still open
    assert v.order("tt-e-alice-1-0").status == "open"
    emu.step(1)
    v.advance(2)
    assert v.order("tt-e-alice-1-0").status == "expired"
    assert at_exchange(emu, "tt-e-alice-1-0")[0]["status"] == "CANCELED"
    assert [(e.kind, e.data["status"], e.bar) for e in v.events_since(0)] == [
        ("order", "expired", 2)
    ]
    v.close()


# --- restarts ----------------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import sys, time
    from tests.emulator import point_ccxt_at
    from trimtab.domain import Order, Side
    from trimtab.execution.ccxt_venue import CcxtVenue

    url, path, key, secret, block = sys.argv[1:6]

    def configure(ex):
        point_ccxt_at(ex, url)
        ex.rateLimit = 1

    def on_sending(cid):
        print("SENDING", cid, flush=True)
        if block == "block":  # killed here, before the request leaves
            time.sleep(600)

    v = CcxtVenue(path, {"alice": (key, secret)}, symbols=["BTCUSDT"], configure=configure,
                  timeout_ms=60_000, on_sending=on_sending)
    v.advance(0)
    v.submit(Order("BTCUSDT", Side.BUY, quantity=0.1, subaccount="alice"), "tt-k-alice-1-0", 0)
    print("ANSWERED", flush=True)
    """
)


def run_child(emu, path, block: str):
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, emu.url, str(path), KEY, SECRET, block],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    line = proc.stdout.readline()
    assert line.startswith("SENDING tt-k-alice-1-0"), line + proc.stderr.read()
    return proc


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_killed_after_the_exchange_took_the_order_resolves_it_once(emu, tmp_path):
    path = tmp_path / "v.sqlite"
    emu.fault("timeout_after_accept", mode="hang", seconds=120)
    proc = run_child(emu, path, "go")
    deadline = time.monotonic() + 30
    while not at_exchange(emu, "tt-k-alice-1-0") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert at_exchange(emu, "tt-k-alice-1-0"), "the emulator never took the order"
    kill(proc)  # between the journal write and the answer
    v = venue(emu, path, symbols=["BTCUSDT"])
    assert v.journal.order("tt-k-alice-1-0").state == "sending"
    got = v.order("tt-k-alice-1-0")
    assert (got.status, got.filled_quantity) == ("filled", 0.1)
    assert v.submit(buy(), "tt-k-alice-1-0", 0) == got
    v.advance(1)
    fills = [e for e in v.events_since(0) if e.kind == "fill"]
    assert [(e.client_order_id, e.data["quantity"]) for e in fills] == [("tt-k-alice-1-0", 0.1)]
    assert posts(emu) == 1 and emu.duplicate_attempts == 0
    assert len(at_exchange(emu, "tt-k-alice-1-0")) == 1
    v.close()


def test_killed_before_the_request_left_it_is_sent_once_after_the_receive_window(emu, tmp_path):
    path = tmp_path / "v.sqlite"
    proc = run_child(emu, path, "block")
    kill(proc)
    assert at_exchange(emu, "tt-k-alice-1-0") == [] and posts(emu) == 0
    # Within the request's receive window the order could still arrive: not resent.
    v = venue(emu, path, symbols=["BTCUSDT"])
    with pytest.raises(VenueUnavailable, match="may still arrive"):
        v.order("tt-k-alice-1-0")
    assert posts(emu) == 0 and v.journal.order("tt-k-alice-1-0").state == "unknown"
    v.close()
    # Once the window is over (the venue's clock says 20 s later) and the exchange has
    # no trace, it is sent, once.
    v = venue(emu, path, symbols=["BTCUSDT"], clock=lambda: time.time() + 20)
    v.advance(1)
    got = v.order("tt-k-alice-1-0")
    assert got.status == "filled" and v.journal.order("tt-k-alice-1-0").attempts == 2
    assert posts(emu) == 1 and emu.duplicate_attempts == 0
    v.advance(2)
    assert [e.client_order_id for e in v.events_since(0) if e.kind == "fill"] == ["tt-k-alice-1-0"]
    v.close()


def test_events_and_cursors_carry_on_across_a_reopen(emu, tmp_path):
    path = tmp_path / "v.sqlite"
    v = venue(emu, path)
    v.advance(0)
    v.submit(buy(), "tt-o-alice-1-0", 0)
    emu.step(1)
    v.advance(1)
    first = v.events_since(0)
    v.close()
    emu.fault("restart")  # the emulator restarts from its state file too
    v = venue(emu, path)
    assert v.last_bar == 1 and v.events_since(0) == first
    v.advance(1)
    assert v.events_since(0) == first  # nothing booked twice
    v.submit(buy(qty=0.05), "tt-o-alice-2-0", 1)
    emu.step(1)
    v.advance(2)
    assert [(e.seq, e.client_order_id) for e in v.events_since(first[-1].seq)] == [
        (first[-1].seq + 1, "tt-o-alice-2-0")
    ]
    v.close()


# --- orders the venue did not send --------------------------------------------------
def test_orders_placed_by_hand_are_external_and_left_alone(emu, tmp_path):
    v = venue(emu, tmp_path / "v.sqlite")
    v.advance(0)
    human = aim(emu.url)(ccxt.binance({"apiKey": KEY, "secret": SECRET}))
    human.load_markets()
    resting = human.create_order(
        "BTC/USDT", "limit", "buy", 0.01, 39_700.0, {"clientOrderId": "by-hand-1"}
    )
    ext = v.external_orders("alice")
    assert [
        (o.client_order_id, o.symbol, o.quantity, o.reason, o.exchange_order_id) for o in ext
    ] == [("by-hand-1", "BTCUSDT", 0.01, "external", resting["id"])]
    assert v.open_orders("alice") == [] and v.order("by-hand-1") is None
    human.create_order("BTC/USDT", "market", "buy", 0.02, None, {"clientOrderId": "by-hand-2"})
    emu.step(2)  # the resting one fills: bar 0 dips to 39,600
    v.advance(2)
    fills = [e for e in v.events_since(0) if e.kind == "fill"]
    assert sorted((e.client_order_id, e.data["quantity"], e.data["external"]) for e in fills) == [
        ("by-hand-1", 0.01, True),
        ("by-hand-2", 0.02, True),
    ]
    assert all(e.data["exchange_order_id"] for e in fills)
    assert {e["client_order_id"] for e in v.externals_seen("alice")} == {"by-hand-1", "by-hand-2"}
    # Never cancelled by the venue: the only DELETE would be ours.
    assert not any(m == "DELETE" for m, _, _ in emu.requests)
    v.close()


# --- perpetuals ----------------------------------------------------------------------
def test_a_perp_position_and_its_funding_are_booked(emu, tmp_path):
    v = venue(emu, tmp_path / "v.sqlite")
    m = Mirror(v)
    v.advance(0)
    v.submit(buy("ETHUSDT-PERP", 2.0, leverage=5), "tt-f-alice-1-0", 0)
    emu.step(9)  # past 08:00 UTC: one funding payment
    v.advance(9)
    new = m.take()
    funding = [e for e in new if e.kind == "funding"]
    paid = [r for r in emu.income("alice") if r["incomeType"] == "FUNDING_FEE"]
    assert len(funding) == 1 and len(paid) == 1
    ev = funding[0]
    assert ev.data["amount"] == float(paid[0]["income"])
    assert (ev.data["symbol"], ev.data["rate"]) == ("ETHUSDT-PERP", 0.0001)
    assert ev.data["mark"] == 2_000.0 + 5 * 7  # the open of the 08:00 bar
    assert ev.data["amount"] == pytest.approx(-2.0 * ev.data["mark"] * 0.0001)
    assert ev.timestamp == pd_ts("2021-01-01 08:00")
    pos = m.sub.position("ETHUSDT-PERP")
    emu_pos = emu.positions("alice")["ETHUSDT"]
    assert pos.margin == pytest.approx(float(emu_pos["isolated_margin"]), rel=1e-12)
    assert m.sub.cash == pytest.approx(emu_cash(emu), rel=1e-12)
    snap = v.snapshot("alice")
    (p,) = snap.positions
    assert (p.symbol, p.quantity, p.leverage, p.margin_mode) == (
        "ETHUSDT-PERP",
        2.0,
        5.0,
        "isolated",
    )
    assert p.liquidation_price == float(emu_pos["liquidation_price"])
    assert p.entry_price == 2_000.0 and snap.marks["ETHUSDT-PERP"] == float(emu_pos["mark"])
    assert snap.futures["USDT"].total == float(emu.futures_wallet("alice")["USDT"])
    v.advance(9)
    assert m.take() == []  # the income is booked once
    v.close()


def pd_ts(text: str):
    import pandas as pd

    return pd.Timestamp(text, tz="UTC")


def test_nothing_secret_in_the_journal(emu, tmp_path):
    path = tmp_path / "v.sqlite"
    v = venue(emu, path)
    v.submit(buy(), "tt-s-alice-1-0", 0)
    v.submit(buy(qty=5.0), "tt-s-alice-1-1", 0)  # rejected: its reason is stored
    v.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("v.sqlite*"))
    assert KEY.encode() not in blob and SECRET.encode() not in blob
    assert json.dumps(repr(v)).find(KEY) == -1


class Clock:
    """The venue's clock and sleep: sleeping moves the clock by what was asked (and
    really sleeps at most 0.2 s, so a restarting emulator can come back)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.calls: list[float] = []

    def __call__(self) -> float:
        return time.time() + self.offset

    def sleep(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.offset += seconds
        time.sleep(min(seconds, 0.2))


@pytest.mark.parametrize(
    "fault", [{"kind": "http_5xx", "status": 503}, {"kind": "restart"}], ids=["5xx", "restart"]
)
def test_an_order_the_exchange_never_took_is_sent_again_once(emu, tmp_path, fault):
    """A 5xx before accepting, or an emulator restarting on the request: no trace at the
    exchange; once the receive window is over the order is sent again, once."""
    clock = Clock()
    v = venue(emu, tmp_path / "v.sqlite", clock=clock, sleep=clock.sleep)
    v.advance(0)
    kind = fault.pop("kind")
    emu.fault(kind, path="/api/v3/order", method="POST", **fault)
    got = v.submit(buy(), "tt-n-alice-1-0", 0)
    rec = v.journal.order("tt-n-alice-1-0")
    assert got.status == "filled" and rec.attempts == 2
    assert len(at_exchange(emu, "tt-n-alice-1-0")) == 1 and emu.duplicate_attempts == 0
    # The second send waited out ccxt's 10 s receive window (+1 s) after the first.
    assert rec.sent_at_ms - rec.created_ms >= 11_000
    v.close()


def test_a_lost_journal_still_never_doubles_an_order(emu, tmp_path):
    """The exchange refuses a client id it has (Duplicate order sent.): the venue takes
    the exchange's order as its own instead of failing or sending another."""
    v = venue(emu, tmp_path / "v1.sqlite")
    first = v.submit(buy(), "tt-d-alice-1-0", 0)
    v.close()
    v = venue(emu, tmp_path / "v2.sqlite")  # a new, empty journal
    again = v.submit(buy(), "tt-d-alice-1-0", 0)
    assert again.exchange_order_id == first.exchange_order_id and again.status == "filled"
    assert len(at_exchange(emu, "tt-d-alice-1-0")) == 1
    assert emu.duplicate_attempts == 1  # the refused reuse, and nothing else
    perp = v.submit(buy("ETHUSDT-PERP", 1.0, leverage=2), "tt-d-alice-1-1", 0)
    v.close()
    v = venue(emu, tmp_path / "v3.sqlite")
    assert v.submit(buy("ETHUSDT-PERP", 1.0, leverage=2), "tt-d-alice-1-1", 0) == perp
    assert emu.duplicate_attempts == 2 and len(at_exchange(emu, "tt-d-alice-1-1")) == 1
    v.close()


def test_no_answer_and_no_trace_three_times_stops_sending(emu, tmp_path):
    clock = Clock()
    v = venue(emu, tmp_path / "v.sqlite", clock=clock, sleep=clock.sleep, symbols=["BTCUSDT"])
    v.advance(0)
    emu.fault("http_5xx", count=3, status=503, path="/api/v3/order", method="POST")
    with pytest.raises(VenueUnavailable, match="sent 3 times with no answer"):
        v.submit(buy(), "tt-m-alice-1-0", 0)
    assert v.journal.order("tt-m-alice-1-0").state == "unknown"
    assert posts(emu) == 3 and at_exchange(emu, "tt-m-alice-1-0") == []
    v.close()


def test_perp_refusals_name_the_exchanges_reason(emu, tmp_path):
    v = venue(emu, tmp_path / "v.sqlite")
    big = v.submit(buy("ETHUSDT-PERP", 100.0, leverage=2), "tt-x-alice-1-0", 0)
    assert big.status == "rejected" and "Margin is insufficient" in big.reason
    wild = v.submit(buy("ETHUSDT-PERP", 0.1, leverage=200), "tt-x-alice-1-1", 0)
    assert (
        wild.status == "rejected"
        and "200x leverage refused: binance leverage should be between 1 and 125" in wild.reason
    )
    half = v.submit(buy("ETHUSDT-PERP", 0.1, leverage=2.5), "tt-x-alice-1-2", 0)
    assert half.status == "rejected" and "whole leverages only" in half.reason
    assert posts(emu, "/fapi/v1/order") == 1  # only the first reached the order endpoint
    with pytest.raises(KeyError, match="no market DOGEUSDT-PERP"):
        v.instrument("DOGEUSDT-PERP")
    v.close()


def test_wrong_keys_are_a_clear_error_without_the_secret(emu, tmp_path):
    wrong = "not-the-secret-" + "x" * 30
    v = CcxtVenue(
        tmp_path / "v.sqlite",
        {"alice": (KEY, wrong)},
        symbols=["BTCUSDT"],
        configure=aim(emu.url),
        sleep=Sleeps(),
    )
    with pytest.raises(
        CcxtVenueError, match="alice: fetch_balance: the exchange refused the keys"
    ) as err:
        v.balances()
    assert wrong not in str(err.value) and KEY not in str(err.value)
    with pytest.raises(CcxtVenueError, match="refused the keys"):
        v.submit(buy(), "tt-w-alice-1-0", 0)
    assert posts(emu) == 0 and v.journal.order("tt-w-alice-1-0") is None
    v.close()


def test_spot_snapshot_has_every_asset_and_its_mark(emu, tmp_path):
    v = venue(emu, tmp_path / "v.sqlite", symbols=["BTCUSDT"])
    v.submit(buy(qty=0.1), "tt-v-alice-1-0", 0)
    emu.step(3)
    snap = v.snapshot("alice")
    assert set(snap.spot) == {"USDT", "BTC"} and snap.futures == {} and snap.positions == []
    assert snap.spot["BTC"].total == float(emu.balances("alice")["BTC"]["free"])
    assert (
        snap.marks == {"BTCUSDT": float(emu.price("BTCUSDT"))} == {"BTCUSDT": 40_200.0}
    )  # bar 3 opens at bar 2's close
    v.close()


def test_two_subaccounts_are_two_accounts(tmp_path):
    """Each subaccount has its own ccxt instance and keys; fills land on the right one."""
    bob_key, bob_secret = "bob-key-" + "b" * 40, "bob-secret-" + "t" * 40
    e = BinanceEmulator(
        bars(),
        accounts={
            KEY: (SECRET, "alice", {"USDT": START_SPOT}, {"USDT": START_FUT}),
            bob_key: (bob_secret, "bob", {"USDT": 2_000.0}, {}),
        },
    )
    e.start()
    try:
        v = CcxtVenue(
            tmp_path / "v.sqlite",
            {"alice": (KEY, SECRET), "bob": (bob_key, bob_secret)},
            symbols=["BTCUSDT"],
            configure=aim(e.url),
            sleep=Sleeps(),
        )
        assert v._ex["alice"] is not v._ex["bob"]
        v.advance(0)
        v.submit(buy(qty=0.1), "tt-2-alice-1-0", 0)
        v.submit(Order("BTCUSDT", Side.BUY, quantity=0.02, subaccount="bob"), "tt-2-bob-1-0", 0)
        e.step(1)
        v.advance(1)
        fills = [
            (ev.subaccount, ev.client_order_id, ev.data["quantity"]) for ev in v.events_since(0)
        ]
        assert fills == [("alice", "tt-2-alice-1-0", 0.1), ("bob", "tt-2-bob-1-0", 0.02)]
        bal = v.balances()
        assert bal["bob"] == {
            "cash": 2_000.0 - 0.02 * 40_000.0,
            "positions": {"BTCUSDT": 0.02 - 0.00002},
        }
        assert bal["alice"]["positions"] == {"BTCUSDT": pytest.approx(0.0999)}
        assert float(e.balances("bob")["BTC"]["free"]) == bal["bob"]["positions"]["BTCUSDT"]
        assert [o["cid"] for o in e.orders("bob")] == ["tt-2-bob-1-0"]
        v.close()
    finally:
        e.close()


def test_a_gtd_limit_is_cancelled_once_the_venues_clock_passes_its_expiry(emu, tmp_path):
    import pandas as pd

    clock = Clock()
    v = venue(emu, tmp_path / "v.sqlite", clock=clock, sleep=clock.sleep, symbols=["BTCUSDT"])
    expires = pd.Timestamp(clock(), unit="s", tz="UTC") + pd.Timedelta(minutes=30)
    lim = Order(
        "BTCUSDT",
        Side.BUY,
        quantity=0.1,
        type=OrderType.LIMIT,
        limit_price=30_000.0,
        subaccount="alice",
        time_in_force=TimeInForce.GTD,
        expires_at=expires,
    )
    v.submit(lim, "tt-g-alice-1-0", 0)
    v.advance(5)  # bars go by; the clock has not reached the expiry
    assert v.order("tt-g-alice-1-0").status == "open"
    clock.offset += 31 * 60
    v.advance(6)
    assert v.order("tt-g-alice-1-0").status == "expired"
    assert at_exchange(emu, "tt-g-alice-1-0")[0]["status"] == "CANCELED"
    v.close()


def test_reduce_only_reaches_the_exchange(emu, tmp_path):
    v = venue(emu, tmp_path / "v.sqlite", symbols=["ETHUSDT-PERP"])
    sell = Order(
        "ETHUSDT-PERP", Side.SELL, quantity=1.0, leverage=2, reduce_only=True, subaccount="alice"
    )
    flat = v.submit(sell, "tt-u-alice-1-0", 0)  # nothing to reduce
    assert flat.status == "rejected" and "ReduceOnly Order is rejected" in flat.reason
    v.submit(buy("ETHUSDT-PERP", 1.0, leverage=2), "tt-u-alice-1-1", 0)
    closed = v.submit(sell, "tt-u-alice-1-2", 0)
    assert closed.status == "filled" and "ETHUSDT" not in emu.positions("alice")
    v.close()


def test_a_market_buy_in_quote_quantity(emu, tmp_path):
    v = venue(emu, tmp_path / "v.sqlite", symbols=["BTCUSDT"])
    got = v.submit(
        Order("BTCUSDT", Side.BUY, quote_quantity=400.0, subaccount="alice"), "tt-c-alice-1-0", 0
    )
    assert (got.status, got.filled_quantity, got.average_price) == ("filled", 0.01, 40_000.0)
    assert got.quote_quantity == 400.0 and got.quantity is None
    assert float(emu.balances("alice")["USDT"]["free"]) == START_SPOT - 400.0
    v.close()


def test_one_polls_fills_of_two_markets_come_in_the_order_they_were_made(tmp_path):
    """An ETH sell, then a BTC buy paid with its USDT, in the same market millisecond:
    the events list the sell first although BTC's trades are read before ETH's, so a
    ledger booking them in seq order never sees the buy before its cash."""
    e = BinanceEmulator(
        bars(),
        accounts={KEY: (SECRET, "alice", {"USDT": "10", "ETH": "1"}, {})},
        state_path=tmp_path / "emu.json",
    )
    with e:
        v = venue(e, tmp_path / "v.sqlite", symbols=["BTCUSDT", "ETHUSDT"])
        v.advance(0)
        v.submit(Order("ETHUSDT", Side.SELL, quantity=1.0, subaccount="alice"), "tt-o-alice-1-0", 0)
        v.submit(
            Order("BTCUSDT", Side.BUY, quote_quantity=1_500.0, subaccount="alice"),
            "tt-o-alice-1-1",
            0,
        )
        v.advance(1)
        fills = [ev for ev in v.events_since(0) if ev.kind == "fill"]
        assert [(ev.data["symbol"], ev.data["side"]) for ev in fills] == [
            ("ETHUSDT", "sell"),
            ("BTCUSDT", "buy"),
        ]
        assert fills[0].timestamp == fills[1].timestamp  # the same millisecond
        v.close()
