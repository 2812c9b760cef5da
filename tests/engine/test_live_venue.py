"""The runner trading on a real venue: ccxt over HTTP to the local Binance emulator, the
whole path from decision to exchange with the library users run. The books it keeps
(from the exchange's trades) equal the exchange's, each client order id reaches the
exchange once, and a stop and a restart carry on without doubling anything."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_DATA
from tests.emulator import BinanceEmulator
from tests.engine import _venue
from trimtab.data import load_panel
from trimtab.engine.reconcile import project

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data")
DAILY = SHARED_DATA / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"


@pytest.fixture(scope="module")
def bars():
    panel = load_panel(DAILY, symbols=list(_venue.SYMBOLS))
    return panel.slice("2021-09-01", "2022-03-31")


def emulator(bars, folder) -> BinanceEmulator:
    return BinanceEmulator(
        bars,
        accounts=_venue.accounts(),
        clock=_venue.START,
        state_path=folder / "emulator.json",
    )


def books_equal(run, emu) -> None:
    """The runner's ledger, with the exchange's events it has not booked yet (the last
    cycle's fills), equals what each account holds at the exchange."""
    r = run.runner
    # Less the run's own transfers: booked when decided (a last cycle's is still pending).
    pending = [ev for ev in run.exchange.events_since(r.event_seq) if not r._own_transfer(ev)]
    ledger, *_ = project(r.account, pending, r.exchange.instrument)
    for name, sub in ledger.subaccounts.items():
        held = emu.balances(name)
        assert sub.cash == pytest.approx(
            float(held["USDT"]["free"] + held["USDT"]["locked"]), abs=1e-8
        ), name
        for symbol, pos in sub.positions.items():
            base = symbol.removesuffix("USDT")
            total = held.get(base, {"free": 0, "locked": 0})
            assert pos.quantity == pytest.approx(
                float(total["free"] + total["locked"]), abs=1e-12
            ), (name, symbol)


def test_a_run_on_the_emulator_keeps_the_exchange_books(bars, tmp_path):
    with emulator(bars, tmp_path) as emu:
        run = _venue.make_run(tmp_path, SHARED_DATA, emu.url, end="2022-01-13")
        r = run.runner
        nxt = r.start()
        assert r.gate_state == "ACTIVE", r.gate.summary()
        mid = nxt + 4
        last = run.run(until=mid)
        assert last == mid
        sent = [o for o in emu.orders() if o.get("cid", "").startswith("tt-")]
        assert sent, "the auto subaccounts traded"
        # Taken up again: the same command carries on, nothing is sent twice.
        again = _venue.make_run(tmp_path, SHARED_DATA, emu.url, end="2022-01-13")
        again.runner.start()
        assert again.runner.gate_state == "ACTIVE", again.runner.gate.summary()
        again.run()
        cids = [o["cid"] for o in emu.orders()]
        assert len(cids) == len(set(cids))
        assert emu.duplicate_attempts == 0
    # Read back after the run: the store's orders are the exchange's, the ledger its books.
    with emulator(bars, tmp_path) as emu:
        final = _venue.make_run(tmp_path, SHARED_DATA, emu.url, end="2022-01-13")
        rec = final.runner.inspect()
        assert rec.ok, rec.summary()
        books_equal(final, emu)
        orders = {o["client_order_id"]: o for o in final.store.orders("venue")}
        at_exchange = {o["cid"]: o for o in emu.orders()}
        assert set(orders) == {c for c in at_exchange if c.startswith("tt-")} | {
            c for c, o in orders.items() if o["status"] in ("expired", "rejected")
        }
        # Every trade of the exchange booked once: in the store, or (the last cycle's)
        # still to book.
        booked = [f["trade_id"] for f in final.store.fills("venue")]
        pending = [
            f"{ev.data['symbol']}:{ev.data['trade_id']}"
            for ev in final.exchange.events_since(final.runner.event_seq)
            if ev.kind == "fill"
        ]
        trades = [f"{t['symbol']}:{t['id']}" for t in emu.trades()]
        assert len(booked) == len(set(booked)) and not set(booked) & set(pending)
        assert sorted(booked + pending) == sorted(trades) and len(booked) > 20
        final.close()


def test_a_trade_made_by_hand_at_the_exchange_halts_until_adopted(bars, tmp_path):
    """A store and an exchange that disagree: while the runner is down, its last orders
    fill (a fill it missed) and someone buys ETH by hand in pilot's account. At the
    restart the gate books the missed fills, marks the hand order external and stays
    HALTED (its fill is held); adopted by a person, the books agree and it trades."""
    from tests.emulator.helpers import client

    with emulator(bars, tmp_path) as emu:
        run = _venue.make_run(tmp_path, SHARED_DATA, emu.url, end="2022-01-25")
        r = run.runner
        nxt = r.start()
        run.run(until=nxt + 3)
        key, secret = _venue.KEYS["pilot"]
        ex = client(emu, key, secret)
        ex.load_markets()
        usdt = float(emu.balances("pilot")["USDT"]["free"])
        assert usdt > 20
        ex.create_order(
            "ETH/USDT",
            "market",
            "buy",
            None,
            None,
            {"quoteOrderQty": f"{usdt / 2:.2f}", "newClientOrderId": "by-hand-1"},
        )

        again = _venue.make_run(tmp_path, SHARED_DATA, emu.url, end="2022-01-25")
        r2, store = again.runner, again.store
        first = r2.start()
        gate = r2.gate
        assert gate.state == "HALTED", gate.summary()
        assert gate.pending_fills  # the fills of the orders sent at the last cycle
        assert [h["client_order_id"] for h in gate.held_fills] == ["by-hand-1"]
        assert {(d.item, d.key) for d in gate.beyond} >= {("cash", "USDT"), ("position", "ETHUSDT")}
        sent_before = {o["cid"] for o in emu.orders()}
        r2.cycle(first)  # books the missed fills; decides, sends nothing
        assert {o["cid"] for o in emu.orders()} == sent_before
        assert r2.gate_state == "HALTED"
        store.add_command("venue", "adopt", args={"order": "by-hand-1"}, actor="ana", reason="mine")
        r2.tick()
        cmd = store.commands("venue")[-1]
        assert cmd["status"] == "applied", cmd["outcome"]
        assert r2.gate_state == "ACTIVE", r2.gate.summary()
        r2.cycle(first + 1)
        r2.cycle(first + 2)
        new = {o["cid"] for o in emu.orders()} - sent_before
        assert new and all(c.startswith("tt-") for c in new)  # trading again
        rec = r2.reconcile()
        assert rec.ok, [d.line() for d in rec.differences]
        books_equal(again, emu)
        assert emu.duplicate_attempts == 0
        again.close()


def test_a_deposit_halts_until_a_person_accepts_the_exchange_balances(bars, tmp_path):
    from trimtab.app import control

    with emulator(bars, tmp_path) as emu:
        run = _venue.make_run(tmp_path, SHARED_DATA, emu.url, end="2022-01-13")
        r, store = run.runner, run.store
        nxt = r.start()
        r.cycle(nxt)
        r.cycle(nxt + 1)
        emu.deposit("core", "USDT", "750")  # money moved in from outside trimtab
        r.cycle(nxt + 2)
        assert r.reconcile().state == "HALTED"
        [diff] = r.gate.beyond
        assert (diff.subaccount, diff.item) == ("core", "cash")
        assert diff.theirs - diff.ours == pytest.approx(750, abs=1e-6)
        sent = len(emu.orders())
        r.cycle(nxt + 3)  # halted: books the last fills, sends nothing
        assert len(emu.orders()) == sent and r.gate_state == "HALTED"
        info = store.run("venue")
        with pytest.raises(control.ControlError, match="reason"):
            control.accept_balances(store, info, "core")
        control.accept_balances(store, info, "core", actor="ana", reason="deposit of 750 USDT")
        r.tick()
        cmd = store.commands("venue")[-1]
        assert cmd["status"] == "applied", cmd["outcome"]
        assert "cash" in cmd["outcome"] and r.gate_state == "ACTIVE", cmd["outcome"]
        assert any(o["key"] == "cash" and o["by"] == "ana" for o in store.overrides("venue"))
        r.cycle(nxt + 4)
        r.reconcile()
        books_equal(run, emu)
        run.close()
