"""The paper exchange: hand-worked fills, idempotent submissions and bars, a file that
restores exactly (also after SIGKILL), and an event log a mirror ledger replays to the
bit. Real SQLite files, real child processes."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import synthetic_bars
from tests.execution import paper_driver as drv
from trimtab.data.panel import panel_from_long
from trimtab.domain import Account, Order, Side
from trimtab.execution.costs import CostModel
from trimtab.execution.market import MarketArrays
from trimtab.execution.paper import PaperExchange, PaperExchangeError

DRIVER = Path(drv.__file__)


def snapshot(ex: PaperExchange) -> dict:
    """Everything a runner can see of the exchange."""
    return {
        "last_bar": ex.last_bar,
        "balances": ex.balances(),
        "account": ex.account_state(),
        "events": ex.events_since(0),
        "orders": ex.orders(),
        "open": ex.open_orders(),
    }


def spot_market(make_panel, closes=(100, 100, 110, 120, 130), start="2021-01-01", volume=1e9):
    return MarketArrays.from_panel(
        make_panel({"AAAUSDT": list(closes)}, start=start, volume=volume)
    )


# --- 1. a fill worked by hand ------------------------------------------------------------


def test_a_quote_market_buy_fills_at_the_next_open_as_worked_by_hand(tmp_path, make_panel):
    # Bar 1 opens at bar 0's close, 100; its quote volume is 1e9 USDT.
    costs = CostModel(taker_fee_bps=10, half_spread_bps=5, impact_bps_at_1pct=20)
    ex = PaperExchange(
        tmp_path / "x.db", spot_market(make_panel), balances={"main": 10_000.0}, costs=costs
    )
    placed = ex.submit(Order("AAAUSDT", Side.BUY, quote_quantity=1_000), "buy-1", bar=0)
    assert placed.status == "open" and placed.filled_quantity == 0
    ex.advance(1)
    done = ex.order("buy-1")
    # Participation 1,000 / 1e9 = 1e-6: impact 20 * sqrt(1e-6 / 0.01) = 0.2 bps, plus the
    # 5 bps half-spread: 5.2 bps, so the price is 100 * 1.00052 = 100.052. The 10 bps fee
    # comes out of the 1,000: quantity = 1,000 / (100.052 * 1.001) = 9.984817884709941,
    # fee = 1,000 * 0.001 / 1.001 = 0.999000999000999, cash 10,000 - 1,000 = 9,000.
    assert done.status == "filled"
    assert done.average_price == pytest.approx(100.052, rel=1e-12)
    assert done.filled_quantity == pytest.approx(9.984817884709941, rel=1e-12)
    assert done.fee == pytest.approx(0.999000999000999, rel=1e-12)
    balances = ex.balances()["main"]
    assert balances["cash"] == pytest.approx(9_000.0, abs=1e-9)
    assert balances["positions"] == {"AAAUSDT": done.filled_quantity}
    (event,) = ex.events_since(0)
    assert event.kind == "fill" and event.bar == 1 and event.client_order_id == "buy-1"
    assert event.timestamp == ex.market.timestamps[1]
    assert event.fill().price == done.average_price
    ex.close()


# --- 2. idempotency --------------------------------------------------------------------


def test_a_client_order_id_is_taken_once_even_across_a_reopen(tmp_path, make_panel):
    market, path = spot_market(make_panel), tmp_path / "x.db"
    ex = PaperExchange(path, market, balances={"main": 10_000.0})
    ex.advance(0)
    order = Order("AAAUSDT", Side.BUY, quantity=2)
    first = ex.submit(order, "c1", 0)
    again = ex.submit(Order("AAAUSDT", Side.BUY, quantity=5), "c1", 0)
    assert again == first and len(ex.open_orders()) == 1
    ex.advance(1)
    ex.advance(1)  # a repeat: nothing runs twice
    assert [e.kind for e in ex.events_since(0)] == ["fill"]
    ex.close()
    with PaperExchange(path, market, balances={"main": 10_000.0}) as ex:
        after = ex.submit(order, "c1", 1)
        assert after == ex.order("c1") and after.status == "filled"
        assert after.filled_quantity == 2 and after.exchange_order_id == first.exchange_order_id
        ex.advance(3)
        assert [e.kind for e in ex.events_since(0)] == ["fill"]
        assert ex.balances()["main"]["positions"] == {"AAAUSDT": 2.0}
        other = ex.submit(Order("AAAUSDT", Side.SELL, quantity=1), "c2", 3)
        assert other.exchange_order_id != first.exchange_order_id


def test_bars_run_in_order_and_orders_wait_for_their_bar(tmp_path, make_panel):
    with PaperExchange(
        tmp_path / "x.db", spot_market(make_panel), balances={"main": 10_000.0}
    ) as ex:
        # Decided at the close of bar 2 while the exchange has run no bar: it waits.
        ex.submit(Order("AAAUSDT", Side.BUY, quantity=1), "early", 2)
        ex.advance(4)  # runs bars 0..4; the order can fill from bar 3 only
        (fill,) = ex.events_since(0)
        assert fill.bar == 3 and fill.fill().price > 110  # bar 3 opens at 110
        assert ex.last_bar == 4
        late = ex.submit(Order("AAAUSDT", Side.BUY, quantity=1), "late", 3)
        assert late.status == "rejected" and "would fill in the past" in late.reason
        assert ex.submit(Order("ZZZUSDT", Side.BUY, quantity=1), "z", 4).reason == (
            "unknown symbol ZZZUSDT"
        )
        who = ex.submit(Order("AAAUSDT", Side.BUY, quantity=1, subaccount="x"), "who", 4)
        assert who.status == "rejected" and "unknown subaccount 'x'" in who.reason
        assert [e.data["status"] for e in ex.events_since(1)] == ["rejected"] * 3
        with pytest.raises(PaperExchangeError, match="no bar 5 in the market"):
            ex.advance(5)


def test_a_transfer_is_booked_once_and_a_refusal_stays_a_refusal(tmp_path, make_panel):
    path, market = tmp_path / "x.db", spot_market(make_panel)
    balances = {"a": 1_000.0, "b": 0.0}
    with PaperExchange(path, market, balances=balances) as ex:
        assert ex.transfer("a", "b", 400.0, "t1") is True
        assert ex.transfer("a", "b", 400.0, "t1") is True
        assert ex.transfer("b", "a", 900.0, "t2") is False  # b holds 400
    with PaperExchange(path, market, balances=balances) as ex:
        assert ex.transfer("a", "b", 400.0, "t1") is True
        assert ex.transfer("b", "a", 100.0, "t2") is False
        assert ex.balances() == {
            "a": {"cash": 600.0, "positions": {}},
            "b": {"cash": 400.0, "positions": {}},
        }
        (event,) = ex.events_since(0)
        assert event.kind == "transfer" and event.data["amount"] == 400.0


# --- 3. reopening changes nothing -------------------------------------------------------


def test_a_run_reopened_between_bars_equals_one_never_interrupted(tmp_path):
    straight, pieces = tmp_path / "straight.db", tmp_path / "pieces.db"
    drv.drive(straight)
    for i in range(30):  # closed and reopened after every bar
        drv.drive(pieces, i, i + 1)
    drv.drive(pieces, 30, 77)
    drv.drive(pieces, 77, drv.BARS)
    with drv.open_exchange(straight) as a, drv.open_exchange(pieces) as b:
        sa, sb = snapshot(a), snapshot(b)
    assert sa == sb
    statuses = {o.status for o in sa["orders"]}
    assert {"filled", "expired", "cancelled", "rejected"} <= statuses


def test_a_market_extended_with_new_bars_goes_on_as_if_it_had_been_whole(tmp_path, make_panel):
    closes = (100, 101, 102, 101, 100, 99, 100, 101)
    # 10,000 USDT of volume a bar: 1,000 at most per bar, so the buy fills over bars.
    whole = spot_market(make_panel, closes, volume=10_000)
    first = spot_market(make_panel, closes[:5], volume=10_000)

    def run(ex: PaperExchange, extended: MarketArrays | None) -> dict:
        ex.advance(0)
        ex.submit(Order("AAAUSDT", Side.BUY, quote_quantity=6_000, time_in_force="gtc"), "b", 0)
        ex.advance(4)
        if extended is not None:
            ex.extend_market(extended)
        ex.advance(7)
        return snapshot(ex)

    with PaperExchange(tmp_path / "grown.db", first, balances={"main": 10_000.0}) as ex:
        grown = run(ex, whole)
    with PaperExchange(tmp_path / "grown.db", whole, balances={"main": 10_000.0}) as ex:
        assert snapshot(ex) == grown  # the file took the new bars' times
    with PaperExchange(tmp_path / "whole.db", whole, balances={"main": 10_000.0}) as ex:
        assert run(ex, None) == grown
    # About 1,000 USDT a bar: bars 1-4 on the first market, 5 and 6 on the new bars.
    assert [e.bar for e in grown["events"] if e.kind == "fill"] == [1, 2, 3, 4, 5, 6]
    assert grown["orders"][0].status == "filled"


# --- 4. the mirror ledger ---------------------------------------------------------------


def book(mirror: Account, ex: PaperExchange, events) -> None:
    """What a runner does with the exchange's events: book them in seq order."""
    for e in events:
        if e.kind == "fill":
            fill = e.fill()
            mirror.subaccount(e.subaccount).apply_fill(fill, ex.instrument(fill.symbol))
        elif e.kind == "funding":
            d = e.data
            got = mirror.subaccount(e.subaccount).apply_funding(d["symbol"], d["rate"], d["mark"])
            assert got == d["amount"]
        elif e.kind == "liquidation":
            d = e.data
            liq = mirror.subaccount(e.subaccount).liquidate(d["symbol"], d["price"], d["timestamp"])
            assert liq.margin_forfeited == d["margin_forfeited"]
        elif e.kind == "transfer":
            mirror.transfer(e.data["source"], e.data["target"], e.data["amount"])


def test_a_mirror_ledger_booking_the_events_equals_the_exchange_exactly(tmp_path):
    mirror = Account()
    for name, cash in drv.BALANCES.items():
        mirror.add_subaccount(name, cash)
    seen, seq = [], 0
    with drv.open_exchange(tmp_path / "x.db") as ex:
        for i in range(drv.BARS):
            ex.advance(i)
            drv.act(ex, i)
            new = ex.events_since(seq)
            book(mirror, ex, new)
            seen += new
            seq = new[-1].seq if new else seq
            # Floats compared with ==, not approximately: the same bookings, the same bits.
            assert {
                n: {"cash": s.cash, "positions": {k: p.quantity for k, p in s.positions.items()}}
                for n, s in mirror.subaccounts.items()
            } == ex.balances(), f"bar {i}"
        assert mirror.state() == ex.account_state()
        orders = ex.orders()
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    kinds = {e.kind for e in seen}
    assert {"fill", "funding", "liquidation", "transfer", "order"} <= kinds
    fills_per_order: dict[str, int] = {}
    for e in seen:
        if e.kind == "fill":
            fills_per_order[e.client_order_id] = fills_per_order.get(e.client_order_id, 0) + 1
    assert max(fills_per_order.values()) >= 2  # partial fills under the volume cap
    ended = {e.data["status"] for e in seen if e.kind == "order"}
    assert {"expired", "cancelled"} <= ended
    assert any(o.status == "cancelled" and o.filled_quantity > 0 for o in orders)
    assert any(e.kind == "funding" and e.subaccount == "perp" for e in seen)


# --- 5. SIGKILL -------------------------------------------------------------------------


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_sigkill_at_random_moments_never_corrupts_and_resumes_to_the_same_state(tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    path = tmp_path / "killed.db"
    targets = sorted(rng.sample(range(5, drv.BARS - 40), 4))
    landed = 0
    for target in targets:
        proc = subprocess.Popen(
            [sys.executable, str(DRIVER), str(path), "0", str(drv.BARS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if int(line.split()[1]) >= target:
                break
        # A random moment inside the next bars: mid-commit, between calls, anywhere.
        time.sleep(rng.uniform(0, 0.004))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        landed += proc.returncode == -signal.SIGKILL
        assert integrity(path) == "ok", f"seed {seed}"
        with drv.open_exchange(path) as ex:
            assert ex.last_bar is not None and ex.last_bar >= target, f"seed {seed}"
    assert landed >= 1, f"seed {seed}: every child finished before its kill"
    drv.drive(path)  # resumes from the file: repeats are no-ops
    drv.drive(tmp_path / "straight.db")
    with drv.open_exchange(path) as a, drv.open_exchange(tmp_path / "straight.db") as b:
        assert snapshot(a) == snapshot(b), f"seed {seed}"


def test_an_exchange_killed_right_after_its_creation_opens(tmp_path):
    path = tmp_path / "new.db"
    code = (
        "import os, signal, sys; from tests.execution import paper_driver as d; "
        "d.open_exchange(sys.argv[1]); os.kill(os.getpid(), signal.SIGKILL)"
    )
    root = DRIVER.parents[2]
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=root, check=False)
    assert done.returncode == -signal.SIGKILL
    with drv.open_exchange(path) as ex:
        assert ex.last_bar is None and ex.balances()["spot"]["cash"] == drv.BALANCES["spot"]


# --- 6. files that cannot be used -------------------------------------------------------


def test_a_file_of_other_subaccounts_is_refused_by_name(tmp_path, make_panel):
    path, market = tmp_path / "x.db", spot_market(make_panel)
    PaperExchange(path, market, balances={"alpha": 1.0, "beta": 2.0}).close()
    with pytest.raises(PaperExchangeError) as err:
        PaperExchange(path, market, balances={"alpha": 1.0, "gamma": 2.0})
    message = str(err.value)
    assert str(path) in message and "alpha, beta" in message and "alpha, gamma" in message
    with PaperExchange(path, market, balances={"beta": 5.0, "alpha": 9.0}) as ex:
        assert ex.balances()["beta"]["cash"] == 2.0  # the saved books, not the new amounts


def test_a_market_with_other_bar_times_is_refused(tmp_path, make_panel):
    path = tmp_path / "x.db"
    with PaperExchange(path, spot_market(make_panel), balances={"main": 1.0}) as ex:
        ex.advance(3)
    other = spot_market(make_panel, start="2021-02-01")
    with pytest.raises(PaperExchangeError, match="bar 0 opens at 2021-02-01") as err:
        PaperExchange(path, other, balances={"main": 1.0})
    assert str(path) in str(err.value)
    short = spot_market(make_panel, closes=(100, 100, 110))
    with pytest.raises(PaperExchangeError, match="has already run 4"):
        PaperExchange(path, short, balances={"main": 1.0})
    longer = spot_market(make_panel, closes=(100, 100, 110, 120, 130, 140, 150))
    with PaperExchange(path, longer, balances={"main": 1.0}) as ex:  # live data grew
        ex.advance(6)
    # The same first bar, then half-day bars: bar 1 opens at noon, not the next day.
    halves = panel_from_long(synthetic_bars({"AAAUSDT": [100] * 8}, freq="12h"))
    with pytest.raises(PaperExchangeError, match="bar 1 opens at 2021-01-01 12:00"):
        PaperExchange(path, MarketArrays.from_panel(halves), balances={"main": 1.0})
    with pytest.raises(PaperExchangeError, match="the costs differ"):
        PaperExchange(path, longer, balances={"main": 1.0}, costs=CostModel.free())


def test_corrupt_foreign_and_locked_files_are_refused_naming_the_file(tmp_path, make_panel):
    market = spot_market(make_panel)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    with pytest.raises(PaperExchangeError, match="not a SQLite database") as err:
        PaperExchange(garbage, market, balances={"main": 1.0})
    assert str(garbage) in str(err.value)

    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE things (x)")
    conn.commit()
    conn.close()
    with pytest.raises(PaperExchangeError, match="not a paper exchange database"):
        PaperExchange(foreign, market, balances={"main": 1.0})

    damaged = tmp_path / "damaged.db"
    with PaperExchange(damaged, market, balances={"main": 1_000_000.0}) as ex:
        for i in range(4):
            ex.submit(Order("AAAUSDT", Side.BUY, quantity=1, reason="x" * 3000), f"c{i}", i)
            ex.advance(i + 1)
    data = bytearray(damaged.read_bytes())
    page = 4096
    assert len(data) >= 3 * page
    data[page : len(data)] = os.urandom(len(data) - page)  # every page after the header's
    damaged.write_bytes(bytes(data))
    with pytest.raises(PaperExchangeError, match="corrupt|not a SQLite|damaged") as err:
        PaperExchange(damaged, market, balances={"main": 1.0})
    assert str(damaged) in str(err.value)

    busy = tmp_path / "busy.db"
    with PaperExchange(busy, market, balances={"main": 1.0}):
        with pytest.raises(PaperExchangeError, match="in use by another paper exchange"):
            PaperExchange(busy, market, balances={"main": 1.0})
    PaperExchange(busy, market, balances={"main": 1.0}).close()  # free again once closed
