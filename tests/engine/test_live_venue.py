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
    ledger, *_ = project(r.account, run.exchange.events_since(r.event_seq), r.exchange.instrument)
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
        run = _venue.make_run(tmp_path, SHARED_DATA, emu.url, end="2022-01-20")
        r = run.runner
        nxt = r.start()
        assert r.gate_state == "ACTIVE", r.gate.summary()
        mid = nxt + 8
        last = run.run(until=mid)
        assert last == mid
        sent = [o for o in emu.orders() if o.get("cid", "").startswith("tt-")]
        assert sent, "the auto subaccounts traded"
        # Taken up again: the same command carries on, nothing is sent twice.
        again = _venue.make_run(tmp_path, SHARED_DATA, emu.url, end="2022-01-20")
        again.runner.start()
        assert again.runner.gate_state == "ACTIVE", again.runner.gate.summary()
        again.run()
        cids = [o["cid"] for o in emu.orders()]
        assert len(cids) == len(set(cids))
        assert emu.duplicate_attempts == 0
    # Read back after the run: the store's orders are the exchange's, the ledger its books.
    with emulator(bars, tmp_path) as emu:
        final = _venue.make_run(tmp_path, SHARED_DATA, emu.url, end="2022-01-20")
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
