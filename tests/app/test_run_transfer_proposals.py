"""In approve mode a transfer the portfolio file asks for becomes a proposal of kind
transfer: `trimtab approve ID` has the runner check it with the transfer guard at its
next close and make it once (booked as the auto path books it), `trimtab reject ID` and
expiry move nothing, a second approval is refused; a runner SIGKILLed just before or
just after the exchange makes the approved transfer makes it exactly once when started
again. Real SQLite stores, the real CLI, the runner as a real process where it is
killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.app._transfer_proposals import (
    ALLOWED,
    END,
    PROPOSED_AT,
    RUN_ID,
    START,
    db_url,
    make_run,
    write_file,
)
from tests.conftest import SHARED_DATA
from trimtab.app import control
from trimtab.app.run import PaperRun
from trimtab.cli import app
from trimtab.engine.portfolio_file import load_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, prepare_portfolio
from trimtab.journal.store import Store

ROOT = Path(__file__).resolve().parents[2]
CAPITAL = {"core": 30000.0, "satellite": 10000.0}
cli = CliRunner()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    path = write_file(tmp_path_factory.mktemp("file"))
    return prepare_portfolio(
        load_portfolio(path), PortfolioOptions(data=str(SHARED_DATA), start=START, end=END)
    )


def trimtab(folder: Path, *args: str):
    return cli.invoke(app, [*args, "--db", db_url(folder), "--run-id", RUN_ID])


def ok(folder: Path, *args: str) -> str:
    result = trimtab(folder, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def refused(folder: Path, *args: str) -> str:
    """The one error line of a refused command (exit code 2, nothing on stdout)."""
    result = trimtab(folder, *args)
    assert result.exit_code == 2 and result.stdout == "", result.output
    [line] = result.stderr.strip().splitlines()
    return line


def to_the_proposal(folder: Path, prepared) -> tuple[PaperRun, int, dict]:
    """A fresh run cycled to the close that proposes the transfer: the run, the next bar
    and the proposal (as `trimtab proposals --json` gives it)."""
    write_file(folder)
    run = make_run(folder, prepared=prepared)
    r = run.runner
    i = r.start()
    while r.last_bar is None or r.m.timestamps[r.last_bar] < pd.Timestamp(PROPOSED_AT, tz="UTC"):
        r.cycle(i)
        i += 1
    shown = [p for p in json.loads(ok(folder, "proposals", "--json")) if p["kind"] == "transfer"]
    assert len(shown) == 1, shown
    return run, i, shown[0]


def moves(run: PaperRun) -> list[tuple]:
    """The paper exchange's transfers: (id, source, target, USDT)."""
    return [
        (e.data["id"], e.data["source"], e.data["target"], e.data["amount"])
        for e in run.exchange.events_since(0)
        if e.kind == "transfer"
    ]


def cash(run: PaperRun) -> dict[str, float]:
    books = run.exchange.balances()
    return {name: books[name]["cash"] for name in CAPITAL}


def test_the_proposal_then_approve_makes_what_the_guard_allows_once(tmp_path, prepared):
    run, i, p = to_the_proposal(tmp_path, prepared)
    r, store, pid = run.runner, run.store, p["proposal_id"]
    proposed_bar = r.last_bar
    tid = f"{RUN_ID}:t{proposed_bar}:0"
    # The proposal: what was asked for, by whom, no legs, expiring at the next close.
    assert (p["status"], p["source"], p["subaccount"], p["legs"]) == (
        "pending",
        "approve-mode",
        "core",
        [],
    )
    assert p["transfer"] == {
        "source": "core",
        "target": "satellite",
        "amount": 2500.0,
        "reason": "top up",
        "origin": "scheduled",
        "allow_partial": True,
        "transfer_id": tid,
    }
    assert p["timestamp"] == pd.Timestamp(PROPOSED_AT, tz="UTC").isoformat()
    assert p["expires_at"] == r.m.timestamps[proposed_bar + 1].isoformat()
    text = ok(tmp_path, "proposals")
    assert "transfer" in text and "core -> satellite" in text and "2,500.00" in text
    # The row says proposed, with the proposal's id; nothing moved.
    [row] = store.transfers(RUN_ID, floats=True)
    assert (row["status"], row["amount"], row["guard"]["proposal_id"]) == ("proposed", 2500.0, pid)
    assert moves(run) == [] and cash(run) == CAPITAL
    # Legs make no sense for a transfer; the approval is taken whole.
    line = refused(tmp_path, "approve", str(pid), "--legs", "0")
    assert f"proposal {pid} is a transfer (core -> satellite, 2,500.00 USDT)" in line
    assert "no legs" in line
    ok(tmp_path, "approve", str(pid), "--by", "ana", "--reason", "go")
    r.tick()
    [cmd] = store.commands(RUN_ID)
    assert cmd["status"] == "applied" and "made at the next close" in cmd["outcome"]
    assert store.proposal(RUN_ID, pid)["status"] == "approved"
    assert store.transfers(RUN_ID)[0]["status"] == "approved"
    assert moves(run) == []  # made at the next close, not by the tick
    # A second approval: refused by the command, before the runner sees it.
    assert f"proposal {pid} is approved (by ana), not pending" in refused(
        tmp_path, "approve", str(pid)
    )
    # The next close: checked by the transfer guard (cut to satellite's room), booked,
    # made once under the id it was proposed with.
    r.cycle(i)
    made_bar = i
    [row] = store.transfers(RUN_ID, floats=True)
    assert (row["status"], row["amount"], row["bar"]) == ("done", ALLOWED, made_bar)
    assert row["timestamp"] == r.m.timestamps[made_bar]
    guard = row["guard"]
    assert (guard["transfer_id"], guard["approved_by"], guard["proposal_id"]) == (tid, "ana", pid)
    assert (guard["requested"], guard["moved"], guard["status"]) == (2500.0, ALLOWED, "cut")
    assert guard["checks"] == ["satellite max_capital 12,000 USDT leaves room for 2,000.00"]
    made = store.proposal(RUN_ID, pid, floats=True)
    assert made["status"] == "made" and made["transfer"]["moved"] == ALLOWED
    assert moves(run) == [(tid, "core", "satellite", ALLOWED)]
    assert cash(run) == {"core": 30000.0 - ALLOWED, "satellite": 10000.0 + ALLOWED}
    # The auto path's bookkeeping: equities at that close, peaks, the flows of that bar.
    at = {b["subaccount"]: b["equity"] for b in store.balances(RUN_ID, floats=True)}
    assert (at["core"], at["satellite"]) == (28000.0, 12000.0)
    assert (r.subs["core"].peak, r.subs["satellite"].peak) == (28000.0, 12000.0)
    k = made_bar - r.context.start_i
    assert (r.flow_history["core"][k], r.flow_history["satellite"][k]) == (-ALLOWED, ALLOWED)
    assert tid in r.own_transfers
    # `trimtab status` shows it done, by whom; the proposal no longer waits.
    doc = json.loads(ok(tmp_path, "status", "--json"))
    [shown] = doc["recent_transfers"]
    assert (shown["status"], shown["requested"], shown["moved"]) == ("done", 2500.0, ALLOWED)
    assert (shown["proposal_id"], shown["approved_by"]) == (pid, "ana")
    assert shown["why"].startswith("approved by ana; satellite max_capital")
    assert [q for q in doc["pending_proposals"] if q["kind"] == "transfer"] == []
    assert f"done (proposal {pid})" in ok(tmp_path, "status")
    # The rest of the run moves nothing more; the ledger is the exchange's books.
    while i < r.context.end_i:
        i += 1
        r.cycle(i)
    assert moves(run) == [(tid, "core", "satellite", ALLOWED)]
    for name, sub in r.account.subaccounts.items():
        assert sub.cash == run.exchange.balances()[name]["cash"], name
    run.close()


def test_reject_moves_nothing_and_the_row_says_rejected(tmp_path, prepared):
    run, i, p = to_the_proposal(tmp_path, prepared)
    r, store, pid = run.runner, run.store, p["proposal_id"]
    ok(tmp_path, "reject", str(pid), "--by", "bob", "--reason", "not now")
    r.tick()
    assert store.commands(RUN_ID)[-1]["outcome"] == f"proposal {pid} rejected: nothing moves"
    while i <= r.context.end_i:
        r.cycle(i)
        i += 1
    [row] = store.transfers(RUN_ID, floats=True)
    assert (row["status"], row["guard"]["rejected_by"]) == ("rejected", "bob")
    assert store.proposal(RUN_ID, pid)["status"] == "rejected"
    assert moves(run) == [] and cash(run) == CAPITAL
    [shown] = json.loads(ok(tmp_path, "status", "--json"))["recent_transfers"]
    assert (shown["status"], shown["moved"], shown["why"]) == ("rejected", 0.0, "rejected by bob")
    assert "is rejected (by bob), not pending" in refused(tmp_path, "approve", str(pid))
    run.close()


def test_an_unapproved_proposal_expires_at_the_next_close(tmp_path, prepared):
    run, i, p = to_the_proposal(tmp_path, prepared)
    r, store, pid = run.runner, run.store, p["proposal_id"]
    r.cycle(i)  # the next close: expired, nothing moves
    assert store.proposal(RUN_ID, pid)["status"] == "expired"
    assert store.transfers(RUN_ID)[0]["status"] == "expired"
    assert "is expired, not pending" in refused(tmp_path, "approve", str(pid))
    # An approval that reaches the runner anyway (written past the command's check).
    store.add_command(RUN_ID, "approve", args={"proposal_id": pid}, actor="ana", reason="late")
    r.tick()
    late = store.commands(RUN_ID)[-1]
    assert late["status"] == "refused" and f"proposal {pid} is expired" in late["outcome"]
    r.cycle(i + 1)
    assert moves(run) == [] and cash(run) == CAPITAL
    [shown] = json.loads(ok(tmp_path, "status", "--json"))["recent_transfers"]
    assert (shown["status"], shown["moved"], shown["why"]) == ("expired", 0.0, "expired unapproved")
    run.close()


def test_approved_then_a_subaccount_set_to_monitor_refuses_it_at_the_close(tmp_path, prepared):
    """The check is made at the close that makes it, on the modes of that moment."""
    run, i, p = to_the_proposal(tmp_path, prepared)
    r, store, pid = run.runner, run.store, p["proposal_id"]
    ok(tmp_path, "approve", str(pid), "--by", "ana")
    r.tick()
    ok(tmp_path, "mode", "set", "satellite", "monitor", "--reason", "hold on")
    r.cycle(i)  # the mode is applied first, then the approved transfer is checked
    [row] = store.transfers(RUN_ID, floats=True)
    assert (row["status"], row["amount"], row["bar"]) == ("refused", 0.0, i)
    assert row["guard"]["not_made"].startswith("monitor mode (satellite)")
    assert store.proposal(RUN_ID, pid)["status"] == "refused"
    assert moves(run) == [] and cash(run) == CAPITAL
    run.close()


def test_an_approval_given_through_a_store_command_with_legs_is_refused(tmp_path, prepared):
    """The API and the CLI go through the service's check; the runner refuses too."""
    run, _, p = to_the_proposal(tmp_path, prepared)
    r, store, pid = run.runner, run.store, p["proposal_id"]
    store.add_command(
        RUN_ID, "approve", args={"proposal_id": pid, "legs": [0]}, actor="ana", reason=""
    )
    r.tick()
    cmd = store.commands(RUN_ID)[-1]
    assert cmd["status"] == "refused" and "is a transfer" in cmd["outcome"]
    assert store.proposal(RUN_ID, pid)["status"] == "pending"
    with pytest.raises(control.ControlError, match="has no legs to choose"):
        control.approve(store, control.find_run(store, RUN_ID), pid, [0], actor="ana")
    run.close()


def test_a_reject_and_an_approve_applied_together_decide_it_once(tmp_path, prepared):
    """Two commands on one proposal reach the runner in one pass (written past the
    service's check, as a CLI and an API call at the same moment could be): the first
    decides it, the second is refused, and the runner goes on (it used to fail every
    later commit on the transfer row's state)."""
    run, i, p = to_the_proposal(tmp_path, prepared)
    r, store, pid = run.runner, run.store, p["proposal_id"]
    store.add_command(RUN_ID, "reject", args={"proposal_id": pid}, actor="bob", reason="no")
    store.add_command(RUN_ID, "approve", args={"proposal_id": pid}, actor="ana", reason="yes")
    r.tick()
    rejected, approved = store.commands(RUN_ID)[-2:]
    assert rejected["status"] == "applied"
    assert approved["status"] == "refused"
    assert "decided by an earlier command" in approved["outcome"]
    assert store.proposal(RUN_ID, pid)["status"] == "rejected"
    r.cycle(i)
    r.cycle(i + 1)
    assert store.transfers(RUN_ID)[0]["status"] == "rejected"
    assert moves(run) == [] and cash(run) == CAPITAL
    run.close()


# --- a kill after the approval ------------------------------------------------------------
def _driver(folder: Path, end: str, kill: str = "none") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "tests.app._transfer_proposals", str(folder), end, kill],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _approved_by_a_person(folder: Path) -> int:
    """The runner as a process to the proposal's close, then `trimtab approve`."""
    write_file(folder)
    done = _driver(folder, PROPOSED_AT)
    assert done.returncode == 0, done.stderr[-2000:]
    [p] = [p for p in json.loads(ok(folder, "proposals", "--json")) if p["kind"] == "transfer"]
    ok(folder, "approve", str(p["proposal_id"]), "--by", "ana", "--reason", "go")
    return p["proposal_id"]


def _books(folder: Path, prepared) -> tuple[list, list, dict, dict]:
    """The store's transfer rows (wall-clock fields left out), the paper exchange's
    transfers, its cash, and the store's last balances."""
    with Store.open(db_url(folder)) as store:
        rows = [
            {k: v for k, v in t.items() if k not in ("created_at", "updated_at")}
            for t in store.transfers(RUN_ID, floats=True)
        ]
        last = {}
        for b in store.balances(RUN_ID, floats=True):
            last[b["subaccount"]] = b["cash"] if b["subaccount"] in CAPITAL else None
    run = make_run(folder, prepared=prepared)
    try:
        return rows, moves(run), cash(run), {k: v for k, v in last.items() if v is not None}
    finally:
        run.close()


@pytest.mark.parametrize("kill", ["before", "after"])
def test_a_sigkill_around_the_exchange_call_makes_it_once_on_restart(tmp_path, kill, prepared):
    whole = tmp_path / "whole"
    _approved_by_a_person(whole)
    assert _driver(whole, END).returncode == 0
    rows, made, books, last = _books(whole, prepared)
    [tid] = [t["guard"]["transfer_id"] for t in rows]
    assert made == [(tid, "core", "satellite", ALLOWED)] and rows[0]["status"] == "done"
    assert books == last == {"core": 30000.0 - ALLOWED, "satellite": 10000.0 + ALLOWED}

    killed = tmp_path / "killed"
    pid = _approved_by_a_person(killed)
    died = _driver(killed, END, kill)
    assert died.returncode == -signal.SIGKILL, died.stderr[-2000:]
    # The close that made it was committed: its row new, the proposal made; the exchange
    # has it only if the kill came after its answer.
    with Store.open(db_url(killed)) as store:
        assert [t["status"] for t in store.transfers(RUN_ID)] == ["new"]
        assert store.proposal(RUN_ID, pid)["status"] == "made"
    run = make_run(killed, prepared=prepared)
    try:
        assert moves(run) == ([] if kill == "before" else made)
    finally:
        run.close()
    again = _driver(killed, END)
    assert again.returncode == 0, again.stderr[-2000:]
    # Made exactly once: the same rows, the same one move, books equal to the store's.
    assert _books(killed, prepared) == (rows, made, books, last)
