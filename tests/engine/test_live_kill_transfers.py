"""SIGKILL at random moments of a replayed auto run whose allocator moves capital between
its subaccounts, restarted each time: every transfer made on the paper exchange exactly
once, the same transfers, orders, fills, balances and decisions as a run never killed,
and the runner's ledger equal to the exchange's books."""

from __future__ import annotations

import random
from unittest.mock import patch

import pytest

from tests.conftest import SHARED_DATA
from tests.engine._live import make_run, write_portfolio
from tests.engine.test_live_carry import ALLOCATED
from tests.engine.test_live_kill import compare as compare_runs
from tests.engine.test_live_kill import cycling_seconds, killed_runs, strip
from trimtab.execution.paper import PaperExchange
from trimtab.journal.store import Store

# ALLOCATED: trend and carry, both in auto mode, under a weekly allocator. Both keep free
# cash (trend targets a volatility, the carry holds a margin buffer), so there is cash to
# move; a fully invested subaccount has none and its transfers out are refused.


def compare(whole, killed, portfolio) -> None:
    """``test_live_kill.compare``: this run sends a dozen orders, not twenty."""
    compare_runs(whole, killed, portfolio, min_orders=1)


def transfers_and_moves(folder, portfolio):
    """The store's transfer rows and the exchange's transfer events (id, amount)."""
    store = Store.open(folder / "store.db")
    try:
        rows = strip(store.transfers("paper", floats=True))
    finally:
        store.close()
    run = make_run(portfolio, folder, SHARED_DATA)
    try:
        moves = [
            (e.data["id"], e.data["source"], e.data["target"], e.data["amount"])
            for e in run.exchange.events_since(0)
            if e.kind == "transfer"
        ]
    finally:
        run.close()
    return rows, moves


def test_sigkill_anywhere_makes_every_transfer_once(tmp_path):
    portfolio = write_portfolio(tmp_path, ALLOCATED, "allocated.yaml")
    whole = tmp_path / "whole"
    whole.mkdir()
    span = cycling_seconds(portfolio, whole)
    rows, moves = transfers_and_moves(whole, portfolio)
    made = [r for r in rows if r["status"] == "done"]
    assert made, rows
    assert [m[0] for m in moves] == [r["guard"]["transfer_id"] for r in made]
    assert [m[3] for m in moves] == [r["amount"] for r in made]

    def check(killed):
        compare(whole, killed, portfolio)
        assert transfers_and_moves(killed, portfolio) == (rows, moves)  # once each, none lost

    killed_runs(portfolio, tmp_path, random.Random(7), span, 2, check)


class Crash(BaseException):
    """Stands for a kill right after the cycle's commit, before the transfer is made."""


def test_a_crash_between_the_commit_and_the_transfer_makes_it_on_restart(tmp_path):
    portfolio = write_portfolio(tmp_path, ALLOCATED, "allocated.yaml")
    whole = tmp_path / "whole"
    whole.mkdir()
    make_run(portfolio, whole, SHARED_DATA).run()
    rows, moves = transfers_and_moves(whole, portfolio)
    assert moves
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    original = PaperExchange.transfer
    with patch.object(PaperExchange, "transfer", side_effect=Crash), pytest.raises(Crash):
        make_run(portfolio, crashed, SHARED_DATA).run()
    # The store holds the first transfer as new (booked in the committed cycle); the
    # exchange has not moved it.
    store = Store.open(crashed / "store.db")
    try:
        waiting = [r for r in store.transfers("paper") if r["status"] == "new"]
    finally:
        store.close()
    assert [r["guard"]["transfer_id"] for r in waiting] == [moves[0][0]]
    calls = []

    def counted(self, *args):
        calls.append(args[3])
        return original(self, *args)

    with patch.object(PaperExchange, "transfer", counted):
        make_run(portfolio, crashed, SHARED_DATA).run()
    # Made on restart, then the run went on as if nothing happened.
    assert calls[0] == moves[0][0] and len(calls) == len(set(calls)) == len(moves)
    assert transfers_and_moves(crashed, portfolio) == (rows, moves)
    compare(whole, crashed, portfolio)
