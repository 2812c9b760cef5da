"""`trimtab reconcile` and `trimtab adopt` as a person runs them: a trade made by hand
while the runner was down shows as a difference (exit code 1, the order named), a person
adopts it, and the books agree again (exit code 0)."""

from __future__ import annotations

import json

import pytest

from tests._cli import trimtab
from tests.conftest import SHARED_DATA
from tests.engine._live import AUTO_ONLY, END, START, make_run, write_portfolio
from trimtab.domain import Order
from trimtab.domain.orders import Side

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data")


def test_reconcile_shows_a_trade_made_by_hand_until_it_is_adopted(tmp_path):
    path = write_portfolio(tmp_path, AUTO_ONLY)
    db = f"sqlite:///{tmp_path / 'store.db'}"
    run = make_run(path, tmp_path, SHARED_DATA)
    r = run.runner
    i = r.start()
    r.cycle(i)
    r.cycle(i + 1)
    # The runner stops; someone buys ETH by hand in pilot, and the exchange fills it.
    r.heartbeat("stopped")
    order = Order(symbol="ETHUSDT", side=Side.BUY, quote_quantity=400.0, subaccount="pilot")
    run.exchange.submit(order, "manual-eth-1", r.last_bar)
    run.exchange.advance(r.last_bar + 1)
    theirs = run.exchange.balances()["pilot"]
    run.close()

    common = ["--db", db, "--run-id", "paper"]
    build = ["--portfolio", str(path), "--replay", str(SHARED_DATA), "--from", START, "--to", END]
    out = trimtab("reconcile", *build, *common, cwd=tmp_path, code=1).stdout
    assert "HALTED" in out and "manual-eth-1" in out and "ETHUSDT" in out
    doc = json.loads(trimtab("reconcile", *build, *common, "--json", cwd=tmp_path, code=1).stdout)
    assert doc["state"] == "HALTED"
    [held] = doc["held_fills"]
    assert held["client_order_id"] == "manual-eth-1" and held["data"]["symbol"] == "ETHUSDT"
    cash = next(d for d in doc["differences"] if d["item"] == "cash")
    assert cash["theirs"] == theirs["cash"] and not cash["within"]

    err = trimtab("adopt", "manual-eth-1", *common, cwd=tmp_path, code=2).stderr
    assert "reason" in err  # adopting changes the books: it needs a reason
    trimtab("adopt", "manual-eth-1", *common, "--reason", "my hedge", cwd=tmp_path)

    again = make_run(path, tmp_path, SHARED_DATA)
    r2 = again.runner
    nxt = r2.start()  # applies the adoption
    [cmd] = [c for c in again.store.commands("paper") if c["kind"] == "adopt"]
    assert cmd["status"] == "applied", cmd["outcome"]
    assert r2.gate_state == "ACTIVE"
    r2.cycle(nxt)  # books the adopted fill with the exchange's others
    books = again.exchange.balances()["pilot"]
    ours = r2.account.subaccount("pilot")
    assert ours.cash == books["cash"]
    assert ours.positions["ETHUSDT"].quantity == books["positions"]["ETHUSDT"]
    r2.heartbeat("stopped")
    again.close()

    done = trimtab("reconcile", *common, cwd=tmp_path)
    assert "ACTIVE" in done.stdout and "last reconciliation" in done.stderr
    assert "reconciliation: ACTIVE" in trimtab("status", *common, cwd=tmp_path).stdout
