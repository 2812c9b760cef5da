"""Transfer proposals in the store (migration 0005), on SQLite and on a real PostgreSQL
server: a proposal of kind transfer with its document and no legs, its transfer row
moved through proposed, approved, new and done by ``update_transfer``, bad ones refused
with what is wrong, and a store at migration 0004 upgraded with its order proposals
read back as kind orders."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.journal.test_store_runner import T0, proposal
from trimtab.journal import models as m
from trimtab.journal.store import Store, StoreError

TID = "paper:t5:0"


def transfer_proposal(**extra) -> dict:
    return {
        "kind": "transfer",
        "subaccount": "core",
        "decision_id": None,
        "timestamp": T0,
        "expires_at": T0 + pd.Timedelta("1D"),
        "legs": [],
        "transfer": {
            "source": "core",
            "target": "trend",
            "amount": 0.1 + 0.2,  # a float that must come back bit for bit
            "reason": "top up",
            "origin": "scheduled",
            "transfer_id": TID,
        },
        "reasons": [{"code": "transfer", "origin": "scheduled"}],
        "source": "approve-mode",
        "summary": "transfer core -> trend",
        **extra,
    }


def proposed_row() -> dict:
    return {
        "source": "core",
        "target": "trend",
        "amount": 0.1 + 0.2,
        "status": "proposed",
        "reason": "top up",
        "guard": {"origin": "scheduled", "transfer_id": TID},
    }


@pytest.fixture
def paper(store: Store) -> Store:
    store.start_run("paper", "paper", {"portfolio": "p.yaml"})
    return store


def test_a_transfer_proposal_and_its_row_from_proposed_to_done(paper: Store) -> None:
    with paper.transaction("paper", bar=5, timestamp=T0) as tx:
        pid = tx.add_proposal(transfer_proposal())
        orders = tx.add_proposal(proposal(T0))
        tx.add_transfers([{**proposed_row(), "guard": {**proposed_row()["guard"], "pid": pid}}])
    p = paper.proposal("paper", pid)
    assert (p["kind"], p["legs"], p["status"]) == ("transfer", [], "pending")
    assert p["transfer"]["amount"] == 0.30000000000000004
    assert paper.proposal("paper", orders)["kind"] == "orders"
    assert paper.proposal("paper", orders)["transfer"] is None
    later = T0 + pd.Timedelta("1D")
    with paper.transaction("paper", bar=6, timestamp=later) as tx:
        tx.update_proposal(pid, status="approved", decided_by="ana")
        tx.update_transfer(TID, "approved", expect=("proposed",), guard={"approved_by": "ana"})
    [row] = paper.transfers("paper")
    assert (row["status"], row["bar"], row["timestamp"]) == ("approved", 5, T0)  # kept
    with paper.transaction("paper", bar=7, timestamp=later) as tx:
        tx.update_transfer(
            TID, "new", expect=("approved",), amount=0.25, guard={"moved": 0.25}, at_this_bar=True
        )
        tx.update_proposal(pid, status="made", transfer={"moved": 0.25})
    [row] = paper.transfers("paper", floats=True)
    # Stamped with the bar it is made at; the guard document merged, nothing lost.
    assert (row["status"], row["amount"], row["bar"], row["timestamp"]) == ("new", 0.25, 7, later)
    assert row["guard"] == {
        "origin": "scheduled",
        "transfer_id": TID,
        "pid": pid,
        "approved_by": "ana",
        "moved": 0.25,
    }
    with paper.transaction("paper") as tx:
        tx.update_transfer_status(TID, "done")
    assert paper.transfers("paper")[0]["status"] == "done"
    made = paper.proposal("paper", pid)
    assert made["status"] == "made" and made["transfer"]["moved"] == 0.25
    assert made["transfer"]["source"] == "core"  # merged into, not replaced
    # A row that is no longer waiting is not moved again.
    with pytest.raises(StoreError, match=f"no transfer {TID} waiting \\(approved\\)"):
        with paper.transaction("paper", bar=8, timestamp=later) as tx:
            tx.update_transfer(TID, "new", expect=("approved",))


def test_a_bad_transfer_proposal_is_refused_with_what_is_wrong(paper: Store) -> None:
    good = transfer_proposal()
    cases = [
        ({**good, "kind": "deposit"}, "a proposal kind must be one of orders, transfer"),
        ({**good, "legs": proposal(T0)["legs"]}, "a transfer proposal has no legs"),
        ({**good, "transfer": None}, "needs a transfer document with source, target, amount"),
        ({**good, "transfer": {**good["transfer"], "amount": -5.0}}, "amount must be > 0"),
        ({**good, "transfer": {**good["transfer"], "amount": "5"}}, "amount must be a number"),
        ({**proposal(T0), "transfer": good["transfer"]}, "an order proposal has no transfer"),
    ]
    for bad, words in cases:
        with pytest.raises(StoreError, match=words):
            with paper.transaction("paper", bar=1, timestamp=T0) as tx:
                tx.add_proposal(bad)
    with paper.transaction("paper", bar=1, timestamp=T0) as tx:
        orders = tx.add_proposal(proposal(T0))
    with pytest.raises(StoreError, match=f"proposal {orders} is not a transfer"):
        with paper.transaction("paper", bar=1, timestamp=T0) as tx:
            tx.update_proposal(orders, transfer={"moved": 1.0})
    assert [p["kind"] for p in paper.proposals("paper")] == ["orders"]


def test_a_store_at_migration_0004_is_upgraded_and_its_proposals_are_orders(
    store_url: str,
) -> None:
    from alembic import command
    from alembic.config import Config

    old = Store.open(store_url, upgrade=False)
    with old.engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(m.__file__).with_name("migrations")))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
    assert old.schema_revision() == "0004"
    old.start_run("old", "paper", {"portfolio": "p.yaml"})
    # A proposal as trimtab wrote it before 0005 (no kind, no transfer column).
    now = pd.Timestamp.now(tz="UTC").tz_localize(None).to_pydatetime()
    with old.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO proposals (run_id, bar, subaccount, timestamp, status, source, "
                "created_at, updated_at) VALUES ('old', 1, 'core', :t, 'pending', "
                "'approve-mode', :t, :t)"
            ),
            {"t": now},
        )
    old.close()
    store = Store.open(store_url)
    assert store.schema_revision() == "0005"
    [p] = store.proposals("old")
    assert (p["kind"], p["transfer"], p["status"]) == ("orders", None, "pending")
    store.close()
