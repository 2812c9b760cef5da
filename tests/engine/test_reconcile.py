"""The reconciliation gate with the paper exchange: a fill missed while the runner was
down is booked, an order placed by hand is external (its fills held, the runner HALTED
until a person adopts it), and the runner trades only when the books agree."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_DATA
from tests.engine._live import AUTO_ONLY, START, make_run, write_portfolio
from trimtab.app.monitor import Monitor
from trimtab.domain import Account, Order
from trimtab.domain.orders import Side
from trimtab.engine.portfolio_file import load_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, prepare_portfolio
from trimtab.engine.reconcile import ACTIVE, HALTED, Tolerance, compare

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gate")
    path = write_portfolio(folder, AUTO_ONLY)
    prepared = prepare_portfolio(
        load_portfolio(path),
        PortfolioOptions(data=str(SHARED_DATA), start=START, end="2022-02-20"),
    )
    return path, prepared


def _run(setup, folder):
    path, prepared = setup
    return make_run(path, folder, SHARED_DATA, prepared=prepared)


def _books_equal(run) -> None:
    books = run.exchange.balances()
    for name, sub in run.runner.account.subaccounts.items():
        assert sub.cash == books[name]["cash"], name
        ours = {s: p.quantity for s, p in sub.positions.items() if p.quantity}
        assert ours == {s: q for s, q in books[name]["positions"].items() if q}, name


def test_a_fill_missed_while_down_is_booked_and_the_gate_opens(setup, tmp_path):
    run = _run(setup, tmp_path)
    r = run.runner
    i = r.start()
    assert r.gate_state == ACTIVE  # a fresh run: both sides hold the starting capital
    for k in range(i, i + 3):
        r.cycle(k)
    sent = len(run.exchange.orders())
    assert sent > 0
    # The runner goes down; the exchange runs the next bar: the orders sent at the last
    # close fill, and the runner does not see it.
    run.exchange.advance(r.last_bar + 1)
    missed = run.exchange.events_since(r.event_seq)
    assert any(ev.kind == "fill" for ev in missed)
    run.close()

    again = _run(setup, tmp_path)
    r2 = again.runner
    nxt = r2.start()
    gate = r2.gate
    assert gate is not None and gate.state == ACTIVE, gate.summary()
    assert gate.pending_events == len(missed)
    assert len(gate.pending_fills) == sum(ev.kind == "fill" for ev in missed)
    # Counted in, not booked yet: the ledger is still the checkpoint's ...
    assert r2.event_seq < missed[-1].seq
    fills_before = len(again.store.fills("paper"))
    r2.cycle(nxt)  # ... and the first cycle books them with its checkpoint
    assert r2.event_seq >= missed[-1].seq
    assert len(again.store.fills("paper")) >= fills_before + len(gate.pending_fills)
    _books_equal(again)
    again.close()


def test_an_order_placed_by_hand_is_external_and_halts_until_adopted(setup, tmp_path):
    run = _run(setup, tmp_path)
    r, store, rid = run.runner, run.store, run.run_id
    r.observers.append(Monitor(review_every=0, deliver=False))  # the alerts
    i = r.start()
    for k in range(i, i + 2):
        r.cycle(k)
    orders_before = {o.client_order_id for o in run.exchange.orders()}
    # Someone buys ETH by hand in subaccount pilot, outside trimtab.
    by_hand = Order(symbol="ETHUSDT", side=Side.BUY, quote_quantity=500.0, subaccount="pilot")
    run.exchange.submit(by_hand, "manual-eth-1", r.last_bar)
    rec = r.reconcile()
    assert rec.state == ACTIVE  # an open order moves no money yet
    assert [e["client_order_id"] for e in rec.external] == ["manual-eth-1"]
    assert "manual-eth-1" not in {o["client_order_id"] for o in store.orders(rid)}

    r.cycle(r.last_bar + 1)  # the exchange fills it
    assert [h["client_order_id"] for h in r.held_fills] == ["manual-eth-1"]
    assert r.gate_state == HALTED
    beyond = {(d.subaccount, d.item, d.key) for d in r.gate.beyond}
    assert ("pilot", "cash", "USDT") in beyond and ("pilot", "position", "ETHUSDT") in beyond
    eth_ours = r.account.subaccount("pilot").positions.get("ETHUSDT")
    eth_theirs = run.exchange.balances()["pilot"]["positions"]["ETHUSDT"]
    bought = next(
        ev.fill().quantity
        for ev in run.exchange.events_since(0)
        if ev.kind == "fill" and ev.client_order_id == "manual-eth-1"
    )
    assert eth_theirs - (eth_ours.quantity if eth_ours else 0.0) == pytest.approx(bought, rel=1e-12)

    # While HALTED: decisions are recorded, nothing is sent; an approval is refused.
    sent_before = {o.client_order_id for o in run.exchange.orders()}
    for k in range(r.last_bar + 1, r.last_bar + 3):
        r.cycle(k)
    assert {o.client_order_id for o in run.exchange.orders()} == sent_before
    halted_records = [
        d for d in store.decisions(rid, "pilot") if "halted" in str(d.get("not_sent", ""))
    ]
    assert halted_records
    store.add_command(rid, "close", subaccount="pilot", args={"all": True}, actor="ana", reason="")
    r.tick()
    last = store.commands(rid)[-1]
    assert last["status"] == "refused" and "halted" in last["outcome"]

    # A person adopts the order: its fill is booked, the books agree, trading resumes.
    store.add_command(rid, "adopt", args={"order": "manual-eth-1"}, actor="ana", reason="my hedge")
    r.tick()
    last = store.commands(rid)[-1]
    assert last["status"] == "applied", last["outcome"]
    assert r.gate_state == ACTIVE and r.held_fills == []
    _books_equal(run)
    keys = [a["key"] for a in store.alerts(rid)]
    assert keys.count("reconciliation:halted") == 1 and keys[-1] == "reconciliation:active"
    adopted = [f for f in store.fills(rid) if f["client_order_id"] == "manual-eth-1"]
    assert len(adopted) == 1 and adopted[0]["reason"].startswith("adopted by ana")
    k = r.last_bar + 1
    r.cycle(k)
    r.cycle(k + 1)
    new = {o.client_order_id for o in run.exchange.orders()} - sent_before
    assert new and all(c.startswith("tt-") for c in new)  # trading again
    assert "manual-eth-1" not in orders_before
    _books_equal(run)
    run.close()


def test_an_unknown_external_order_cannot_be_adopted(setup, tmp_path):
    run = _run(setup, tmp_path)
    r, store, rid = run.runner, run.store, run.run_id
    r.cycle(r.start())
    store.add_command(rid, "adopt", args={"order": "nope"}, actor="ana", reason="")
    r.tick()
    last = store.commands(rid)[-1]
    assert last["status"] == "refused" and "no external order 'nope'" in last["outcome"]
    run.close()


def test_compare_by_hand():
    """Differences and tolerances worked by hand: cash within a cent passes, a position a
    whole lot off does not, an order open only in the store is named."""
    from trimtab.domain import Instrument

    acc = Account()
    acc.add_subaccount("a", 1000.0)
    btc = Instrument("BTCUSDT", "BTC", lot_size=0.001)

    class _O:
        def __init__(self, cid, status="open"):
            self.client_order_id, self.status, self.symbol = cid, status, "BTCUSDT"
            self.side, self.quantity, self.exchange_order_id = "buy", 0.1, "9"

        @property
        def is_open(self):
            return self.status in ("open", "partially_filled")

    rec = compare(
        acc,
        {"a": {"cash": 1000.004, "positions": {}}},
        store_orders={"tt-x": {"subaccount": "a", "status": "sent"}},
        theirs_open={"a": []},
        exchange_order=lambda cid: None,
        instrument=lambda s: btc,
        tolerance=Tolerance(cash=0.01),
    )
    [cash, order] = rec.differences
    assert cash.within and cash.allowed == 0.01 and cash.theirs == 1000.004
    assert not order.within and order.key == "tt-x" and rec.state == HALTED

    rec = compare(
        acc,
        {"a": {"cash": 1000.0, "positions": {"BTCUSDT": 0.0004}}},
        store_orders={},
        theirs_open={"a": [_O("by-hand")]},
        exchange_order=lambda cid: None,
        instrument=lambda s: btc,
    )
    [pos] = rec.differences
    assert pos.within and pos.allowed == pytest.approx(0.0005)  # half a lot
    assert rec.state == ACTIVE and rec.external[0]["client_order_id"] == "by-hand"
    rec = compare(
        acc,
        {"a": {"cash": 1000.0, "positions": {"BTCUSDT": 0.001}}},
        store_orders={},
        theirs_open={},
        exchange_order=lambda cid: None,
        instrument=lambda s: btc,
    )
    assert rec.state == HALTED and "position BTCUSDT" in rec.summary()
