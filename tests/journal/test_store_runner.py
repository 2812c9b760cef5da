"""The runner's records in the store, on SQLite and on a real PostgreSQL server:
proposals with exact legs, human commands written by another process while the runner
writes its bars, alerts and their outbox, reviews, the heartbeat; what a rewind removes
and what it never does; a database at migration 0001 upgraded in place."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.journal.test_store import write_bar
from trimtab.journal import models as m
from trimtab.journal.store import COMMAND_KINDS, Store, StoreError

T0 = pd.Timestamp("2024-03-01", tz="UTC")
HOUR = pd.Timedelta("1h")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def btc_buy() -> dict:
    """Hand-worked: core holds 10,000 USDT, BTC's weight goes from 0.25 to 0.30, so the
    leg buys 0.05 x 10,000 = 500 USDT of BTC at the planned 40,000 USDT: 0.0125 BTC,
    inside a band of +-50 bps (40,000 x 0.005 = 200: 39,800 to 40,200)."""
    return {
        "symbol": "BTCUSDT",
        "side": "buy",
        "quantity": 0.0125,
        "quote_quantity": None,
        "planned_price": 40_000.0,
        "band_low": 39_800.0,
        "band_high": 40_200.0,
        "notional": 500.0,
        "reason": "drift 0.05 > band 0.02",
    }


def proposal(ts: pd.Timestamp, decision: int = 12, **extra) -> dict:
    eth = {"symbol": "ETHUSDT", "side": "sell", "quantity": 0.1 + 0.2, "notional": 900.0}
    return {
        "subaccount": "core",
        "decision_id": decision,
        "timestamp": ts,
        "expires_at": ts + 4 * HOUR,
        "legs": [btc_buy(), {**eth, "guard": {"max_order_notional": 1000.0}}],
        "reasons": [{"code": "cost-aware", "drift": 0.05}],
        "source": "approve-mode",
        "summary": "buy 0.0125 BTC, sell 0.3 ETH",
        **extra,
    }


@pytest.fixture
def paper(store: Store) -> Store:
    store.start_run("paper", "paper", {"portfolio": "p.yaml"})
    return store


def count_rows(store: Store, run_id: str) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            t.name: conn.execute(
                sa.select(sa.func.count()).select_from(t).where(t.c.run_id == run_id)
            ).scalar()
            for t in (*m.BAR_TABLES, *m.RUN_TABLES, m.component_state, m.checkpoints)
        }


# --- proposals -----------------------------------------------------------------------------
def test_a_proposal_keeps_its_legs_exactly_and_is_read_back_by_status(paper: Store) -> None:
    with paper.transaction("paper", bar=5, timestamp=T0) as tx:
        pid = tx.add_proposal(proposal(T0))
        later = tx.add_proposal({**proposal(T0, decision=13), "timestamp": None})
    (first, second) = paper.proposals("paper")
    assert (first["proposal_id"], second["proposal_id"]) == (pid, later) and later > pid
    assert first["status"] == "pending" and first["bar"] == 5
    assert (first["subaccount"], first["decision_id"], first["source"]) == (
        "core",
        12,
        "approve-mode",
    )
    assert first["timestamp"] == T0 and first["expires_at"] == T0 + 4 * HOUR
    assert second["timestamp"] == T0  # the transaction's clock
    assert first["reasons"] == [{"code": "cost-aware", "drift": 0.05}]
    btc, eth = first["legs"]
    assert (btc["leg"], eth["leg"]) == (0, 1)
    assert btc["quantity"] == Decimal("0.0125") and btc["planned_price"] == Decimal("40000.0")
    assert btc["quantity"] * btc["planned_price"] == btc["notional"] == Decimal("500")
    assert (btc["band_low"], btc["band_high"]) == (Decimal("39800.0"), Decimal("40200.0"))
    assert btc["planned_price"] * Decimal("0.005") == btc["band_high"] - btc["planned_price"]
    assert btc["status"] == "pending" and btc["client_order_id"] is None
    assert btc["quote_quantity"] is None and btc["reason"] == "drift 0.05 > band 0.02"
    assert eth["quantity"] == Decimal("0.30000000000000004")  # the float 0.1 + 0.2, exactly
    assert eth["guard"] == {"max_order_notional": 1000.0}  # an extra key, kept
    as_floats = paper.proposal("paper", pid, floats=True)["legs"]
    assert as_floats[1]["quantity"] == 0.1 + 0.2 and as_floats[0]["notional"] == 500.0
    assert paper.proposal("paper", pid)["legs"] == first["legs"]
    # By status: one, or any of several.
    with paper.transaction("paper", bar=6, timestamp=T0 + HOUR) as tx:
        tx.update_proposal(later, status="expired")
    assert [p["proposal_id"] for p in paper.proposals("paper", status="pending")] == [pid]
    both = paper.proposals("paper", status=("pending", "expired"))
    assert [p["proposal_id"] for p in both] == [pid, later]
    assert paper.proposals("paper", status="sent") == []
    with pytest.raises(StoreError, match=r"must be one of pending, approved, sent, .*'done'"):
        paper.proposals("paper", status="done")


def test_an_unknown_proposal_is_an_error_naming_the_run_and_the_id(paper: Store) -> None:
    paper.start_run("other", "paper", {})
    with paper.transaction("other", bar=0, timestamp=T0) as tx:
        theirs = tx.add_proposal(proposal(T0))
    with pytest.raises(StoreError, match=r"run 'paper': no proposal 7$"):
        paper.proposal("paper", 7)
    with pytest.raises(StoreError, match=rf"run 'paper': no proposal {theirs}$"):
        paper.proposal("paper", theirs)  # another run's
    with (
        pytest.raises(StoreError, match=rf"run 'paper': no proposal {theirs}$"),
        paper.transaction("paper", bar=0, timestamp=T0) as tx,
    ):
        tx.update_proposal(theirs, status="rejected")
    assert paper.proposal("other", theirs)["status"] == "pending"


def test_updating_a_proposal_merges_the_legs_given(paper: Store) -> None:
    decided = pd.Timestamp("2026-12-02 10:00:00", tz="UTC")
    with paper.transaction("paper", bar=1, timestamp=T0) as tx:
        pid = tx.add_proposal(proposal(T0))
    with paper.transaction("paper", bar=2, timestamp=T0 + HOUR) as tx:
        tx.update_proposal(
            pid,
            status="approved",
            legs=[{"leg": 0, "status": "approved"}, {"leg": 1, "status": "rejected"}],
            decided_by="ana",
            decided_at=decided,
            note="only BTC",
        )
    with paper.transaction("paper", bar=3, timestamp=T0 + 2 * HOUR) as tx:
        tx.update_proposal(
            pid, status="sent", legs=[{"leg": 0, "status": "sent", "client_order_id": "tt-1"}]
        )
    p = paper.proposal("paper", pid)
    assert (p["status"], p["decided_by"], p["decided_at"], p["note"]) == (
        "sent",
        "ana",
        decided,
        "only BTC",
    )
    assert p["bar"] == 1  # it stays at the bar it was proposed at
    btc, eth = p["legs"]
    assert (btc["status"], btc["client_order_id"]) == ("sent", "tt-1")
    assert btc["quantity"] == Decimal("0.0125") and btc["notional"] == Decimal("500.0")
    assert eth["status"] == "rejected" and eth["guard"] == {"max_order_notional": 1000.0}
    with paper.transaction("paper", bar=3) as tx:
        with pytest.raises(StoreError, match=rf"proposal {pid}: a status must be one of .*'ok'"):
            tx.update_proposal(pid, status="ok")
        with pytest.raises(StoreError, match="needs its 'leg' number"):
            tx.update_proposal(pid, legs=[{"status": "sent"}])
        with pytest.raises(StoreError, match=r"leg 0's status must be one of .*'filled'"):
            tx.update_proposal(pid, legs=[{"leg": 0, "status": "filled"}])


def test_a_bad_proposal_is_refused_with_what_is_wrong(paper: Store) -> None:
    cases = [
        ({"subaccount": None}, "a proposal needs a subaccount"),
        ({"source": "model"}, r"a proposal source must be one of approve-mode, auto-envelope"),
        ({"legs": [{"symbol": "BTCUSDT", "side": "long"}]}, "leg 0 needs a symbol and a side"),
        ({"legs": [{**btc_buy(), "leg": 1}, {**btc_buy(), "leg": 1}]}, "two legs numbered"),
        ({"legs": [{**btc_buy(), "notional": "lots"}]}, r"leg 0's notional: not a number"),
    ]
    for change, message in cases:
        with (
            pytest.raises(StoreError, match=message),
            paper.transaction("paper", bar=0, timestamp=T0) as tx,
        ):
            tx.add_proposal({**proposal(T0), **change})
    with pytest.raises(StoreError, match="a proposal needs a timestamp"):
        with paper.transaction("paper", bar=0) as tx:
            tx.add_proposal({**proposal(T0), "timestamp": None})
    assert paper.proposals("paper") == []


# --- commands ------------------------------------------------------------------------------
def test_commands_are_recorded_then_finished_by_the_runner(paper: Store) -> None:
    pause = paper.add_command("paper", "pause", subaccount="core", actor="ana", reason="news")
    close = paper.add_command(
        "paper", "close", subaccount="core", args={"symbols": ["BTCUSDT"]}, actor="ana", reason="x"
    )
    approve = paper.add_command(
        "paper", "approve", args={"proposal_id": 3, "legs": [0, 2]}, actor="bo", reason="ok"
    )
    assert pause < close < approve
    pending = paper.pending_commands("paper")
    assert [c["command_id"] for c in pending] == [pause, close, approve]
    first = pending[0]
    assert (first["kind"], first["subaccount"], first["args"], first["actor"]) == (
        "pause",
        "core",
        None,
        "ana",
    )
    assert first["status"] == "pending" and first["created_at"].tz is not None
    assert pending[2]["args"] == {"proposal_id": 3, "legs": [0, 2]}
    with paper.transaction("paper", bar=4, timestamp=T0) as tx:
        tx.finish_command(pause, "applied", "core paused")
        tx.finish_command(approve, "refused", "run 'paper': no proposal 3")
    assert [c["command_id"] for c in paper.pending_commands("paper")] == [close]
    done = paper.commands("paper", status="applied")
    assert [c["command_id"] for c in done] == [pause]
    assert (done[0]["outcome"], done[0]["applied_bar"], done[0]["applied_timestamp"]) == (
        "core paused",
        4,
        T0,
    )
    assert done[0]["applied_at"] >= done[0]["created_at"]
    assert paper.commands("paper", status="refused")[0]["outcome"].endswith("no proposal 3")
    assert [c["command_id"] for c in paper.commands("paper")] == [pause, close, approve]
    with paper.transaction("paper", bar=5, timestamp=T0) as tx:
        with pytest.raises(StoreError, match=rf"run 'paper': command {pause} is applied already"):
            tx.finish_command(pause, "refused", "again")
        with pytest.raises(StoreError, match=r"run 'paper': no command 999$"):
            tx.finish_command(999, "applied", "x")
        with pytest.raises(StoreError, match="must be one of applied, refused: 'pending'"):
            tx.finish_command(close, "pending", "x")
    with pytest.raises(StoreError, match="a command status must be one of pending, applied"):
        paper.commands("paper", status="done")


def test_a_command_finished_in_a_rolled_back_transaction_stays_pending(paper: Store) -> None:
    cid = paper.add_command("paper", "resume", subaccount="core", actor="ana", reason="calm")
    with pytest.raises(RuntimeError), paper.transaction("paper", bar=1, timestamp=T0) as tx:
        tx.finish_command(cid, "applied", "resumed")
        raise RuntimeError("killed before the bar committed")
    (again,) = paper.pending_commands("paper")
    assert again["command_id"] == cid and again["outcome"] is None
    # Another run cannot finish it.
    paper.start_run("other", "paper", {})
    with pytest.raises(StoreError, match=rf"run 'other': no command {cid}$"):
        with paper.transaction("other", bar=0) as tx:
            tx.finish_command(cid, "applied", "x")


def test_a_bad_command_is_refused_naming_the_run_and_what_is_allowed(paper: Store) -> None:
    ok = {"actor": "ana", "reason": "why"}
    with pytest.raises(StoreError) as info:
        paper.add_command("paper", "halt", **ok)
    assert str(info.value) == f"a command kind must be one of {', '.join(COMMAND_KINDS)}: 'halt'"
    cases = [
        ("close", {}, r"run 'paper': command 'close' needs args .*\"all\": true"),
        ("close", {"symbols": []}, "command 'close' needs args"),
        ("limits", {"key": "max_asset_weight"}, "command 'limits' needs args"),
        ("mode", {"mode": 3}, "command 'mode' needs args"),
        ("approve", {"legs": [0]}, r"command 'approve' needs args \{\"proposal_id\""),
        ("approve", {"proposal_id": 3, "legs": ["0"]}, "command 'approve' needs args"),
        ("reject", {"proposal_id": "3"}, r"command 'reject' needs args \{\"proposal_id\": 3\}"),
    ]
    for kind, args, message in cases:
        with pytest.raises(StoreError, match=message):
            paper.add_command("paper", kind, args=args, **ok)
    with pytest.raises(StoreError, match=r"run 'paper': command 'pause' needs an actor \(who\)"):
        paper.add_command("paper", "pause", actor=" ", reason="why")
    # A limit or a mode changed says why; a pause or an approval may say nothing.
    limits = {"key": "max_asset_weight", "value": 0.2}
    with pytest.raises(StoreError, match=r"run 'paper': command 'limits' needs a reason \(why\)"):
        paper.add_command("paper", "limits", args=limits, actor="ana", reason=" ")
    with pytest.raises(StoreError, match=r"run 'paper': command 'mode' needs a reason \(why\)"):
        paper.add_command("paper", "mode", args={"mode": "auto"}, actor="ana", reason="")
    with pytest.raises(StoreError, match=r"command 'pause' needs a reason \(why\)"):
        paper.add_command("paper", "pause", actor="ana", reason=None)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="no run 'ghost'"):
        paper.add_command("ghost", "pause", **ok)
    assert paper.commands("paper") == []
    quiet = paper.add_command("paper", "pause", actor="ana", reason="")
    assert paper.commands("paper")[0]["reason"] == ""
    assert [c["command_id"] for c in paper.pending_commands("paper")] == [quiet]
    # What each kind accepts.
    for kind, args in [
        ("close", {"all": True}),
        ("limits", {"key": "max_asset_weight", "value": 0.2}),
        ("mode", {"mode": "auto"}),
        ("approve", {"proposal_id": 3, "legs": None}),
        ("reject", {"proposal_id": 3}),
    ]:
        paper.add_command("paper", kind, args=args, **ok)
    assert [c["args"] for c in paper.commands("paper")][2] == {
        "key": "max_asset_weight",
        "value": 0.2,
    }


RUNNER = textwrap.dedent(
    """
    import sys
    from trimtab.journal.store import Store

    store = Store.open(sys.argv[1])
    store.start_run("paper", "paper", {"portfolio": "p.yaml"})
    ts = None
    for bar in range(200_000):
        pending = store.pending_commands("paper")
        last = False
        with store.transaction("paper", bar=bar, timestamp=f"2024-03-01T00:00:00Z") as tx:
            tx.add_decisions([{"id": bar, "action": "hold"}], subaccount="core")
            tx.add_balances([{"subaccount": "core", "equity": 1e4, "cash": 1e4}])
            for c in pending:
                tx.finish_command(c["command_id"], "applied", f"bar {bar}")
                last = last or bool((c["args"] or {}).get("last"))
            tx.save_state("status", {"bar": bar})
            tx.set_checkpoint()
        store.save_heartbeat("paper", {"pid": 1, "bar": bar})
        if bar == 3:
            print("going", flush=True)
        if last:
            print(bar, flush=True)
            break
    else:
        sys.exit("no last command seen")
    """
)


def test_commands_from_another_process_while_the_runner_writes_bars_are_never_lost(
    store_url: str,
) -> None:
    cli = Store.open(store_url)
    cli.start_run("paper", "paper", {"portfolio": "p.yaml"})
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, store_url], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert runner.stdout is not None
        assert runner.stdout.readline().strip() == "going"  # it is writing bars now
        n = 150
        ids = [
            cli.add_command("paper", "pause", args={"n": k}, actor="cli", reason=f"test {k}")
            for k in range(n)
        ]
        ids.append(
            cli.add_command("paper", "resume", args={"last": True}, actor="cli", reason="end")
        )
        last_bar = int(runner.stdout.readline())
        assert runner.wait(timeout=600) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert ids == sorted(set(ids))
    commands = cli.commands("paper")
    assert [c["command_id"] for c in commands] == ids
    assert [c["args"] for c in commands] == [{"n": k} for k in range(n)] + [{"last": True}]
    assert {c["status"] for c in commands} == {"applied"}
    bars = [c["applied_bar"] for c in commands]
    assert bars == sorted(bars) and bars[0] >= 3 and bars[-1] == last_bar
    assert [c["outcome"] for c in commands] == [f"bar {b}" for b in bars]
    assert [d["id"] for d in cli.decisions("paper")] == list(range(last_bar + 1))
    assert cli.checkpoint("paper")[0] == last_bar
    heartbeat = cli.heartbeat("paper")
    assert heartbeat is not None and heartbeat["bar"] == last_bar
    cli.close()


# --- alerts and the outbox -----------------------------------------------------------------
def alert(key: str = "drawdown:core", **extra) -> dict:
    return {
        "rule": "drawdown",
        "key": key,
        "severity": "warning",
        "title": "core is 8% below its peak",
        "message": "equity 9,200 USDT, peak 10,000 USDT",
        "numbers": {"drawdown": 0.08, "equity": 9200.0},
        "action": "trimtab status",
        "subaccount": "core",
        **extra,
    }


def test_alerts_go_to_the_outbox_one_delivery_per_target_name(paper: Store) -> None:
    with paper.transaction("paper", bar=2, timestamp=T0) as tx:
        first = tx.add_alert(alert(), ["ops", "phone", "ops"])
    with paper.transaction("paper", bar=3, timestamp=T0 + HOUR) as tx:
        second = tx.add_alert(alert(severity="critical", subaccount=None), ["ops"])
        tx.add_alert(alert("breaker:core", rule="breaker"), [])
    a1, a2, a3 = paper.alerts("paper")
    assert (a1["alert_id"], a2["alert_id"]) == (first, second) and second > first
    assert (a1["timestamp"], a1["bar"], a1["severity"], a1["subaccount"]) == (
        T0,
        2,
        "warning",
        "core",
    )
    assert a1["numbers"] == {"drawdown": 0.08, "equity": 9200.0}
    assert a1["action"] == "trimtab status" and a2["subaccount"] is None
    last = paper.last_alert("paper", "drawdown:core")
    assert last is not None and last["alert_id"] == second and last["timestamp"] == T0 + HOUR
    assert paper.last_alert("paper", "nothing") is None
    assert paper.last_alert("other-run", "drawdown:core") is None
    box = paper.outbox("paper")
    assert [(d["alert_id"], d["target"]) for d in box] == [
        (first, "ops"),
        (first, "phone"),
        (second, "ops"),
    ]
    assert {(d["status"], d["attempts"], d["run_id"]) for d in box} == {("pending", 0, "paper")}
    assert paper.outbox(status="delivered") == [] and len(paper.outbox()) == 3


def test_a_target_that_looks_like_a_url_is_refused_without_being_shown(paper: Store) -> None:
    secret = "tgram://123456:AAE-secret-token/987"
    with pytest.raises(StoreError) as info, paper.transaction("paper", bar=0, timestamp=T0) as tx:
        tx.add_alert(alert(), ["ops", secret])
    assert "alert target 1 looks like a URL" in str(info.value)
    assert "secret-token" not in str(info.value) and "tgram" not in str(info.value)
    for bad, message in [
        ({"severity": "loud"}, "a severity must be one of info, warning, critical: 'loud'"),
        ({"title": ""}, "an alert needs a title"),
    ]:
        with pytest.raises(StoreError, match=message):
            with paper.transaction("paper", bar=0, timestamp=T0) as tx:
                tx.add_alert(alert(**bad), ["ops"])
    assert paper.alerts("paper") == [] and paper.outbox() == []


def test_deliveries_come_due_retry_and_end_delivered_or_failed(store_url: str) -> None:
    store = Store.open(store_url)
    store.start_run("paper", "paper", {})
    store.start_run("other", "paper", {})
    with store.transaction("paper", bar=0, timestamp=T0) as tx:
        alert_id = tx.add_alert(alert(), ["ops", "phone", "mail"])
    with store.transaction("other", bar=0, timestamp=T0) as tx:
        tx.add_alert(alert("x", title="other run"), ["ops"])
    now = pd.Timestamp.now(tz="UTC")
    due = store.due_deliveries(now)
    assert [(d["run_id"], d["target"]) for d in due] == [
        ("paper", "ops"),
        ("paper", "phone"),
        ("paper", "mail"),
        ("other", "ops"),
    ]
    ops = due[0]
    assert (ops["alert_id"], ops["title"], ops["severity"], ops["action"]) == (
        alert_id,
        "core is 8% below its peak",
        "warning",
        "trimtab status",
    )
    assert ops["numbers"] == {"drawdown": 0.08, "equity": 9200.0} and ops["message"]
    assert ops["rule"] == "drawdown" and ops["key"] == "drawdown:core"
    assert store.due_deliveries(now, limit=2) == due[:2]
    assert store.due_deliveries(now - pd.Timedelta("1D")) == []
    ops_id, phone_id, mail_id = (d["delivery_id"] for d in due[:3])
    retry_at = now + pd.Timedelta("5min")
    store.mark_delivery(ops_id, ok=True)
    store.mark_delivery(
        phone_id,
        ok=False,
        error="HTTP 502 from tgram://123456:AAE-secret/987 and json://hook.example/x?k=v",
        next_attempt_at=retry_at,
    )
    store.mark_delivery(mail_id, ok=False, error="refused", give_up=True)
    store.close()
    # A restart finds the outbox as it was: the retry is due only at its time.
    store = Store.open(store_url)
    rows = {d["delivery_id"]: d for d in store.outbox("paper")}
    assert rows[ops_id]["status"] == "delivered" and rows[ops_id]["attempts"] == 1
    assert rows[ops_id]["delivered_at"] is not None and rows[ops_id]["delivered_at"].tz
    phone = rows[phone_id]
    assert (phone["status"], phone["attempts"], phone["next_attempt_at"]) == (
        "pending",
        1,
        retry_at,
    )
    assert phone["last_error"] == "HTTP 502 from tgram://*** and json://***"
    assert (rows[mail_id]["status"], rows[mail_id]["last_error"]) == ("failed", "refused")
    assert [d["run_id"] for d in store.due_deliveries(now)] == ["other"]
    # Soonest first: the other run's delivery has been due since it was written.
    assert [d["delivery_id"] for d in store.due_deliveries(retry_at)] == [4, phone_id]
    store.mark_delivery(phone_id, ok=True)
    assert store.outbox("paper", status="delivered")[1]["attempts"] == 2
    assert [d["target"] for d in store.outbox(status="failed")] == ["mail"]
    with pytest.raises(StoreError, match=rf"delivery {ops_id} is delivered already"):
        store.mark_delivery(ops_id, ok=True)
    with pytest.raises(StoreError, match="no delivery 999 in"):
        store.mark_delivery(999, ok=True)
    with pytest.raises(StoreError, match="needs next_attempt_at"):
        store.mark_delivery(4, ok=False, error="x")
    with pytest.raises(StoreError, match="a delivery status must be one of pending"):
        store.outbox(status="sent")
    store.close()


# --- reviews and the heartbeat -------------------------------------------------------------
def test_reviews_are_upserted_by_bar_and_the_newest_is_read_per_subaccount(paper: Store) -> None:
    with paper.transaction("paper", bar=0, timestamp=T0) as tx:
        tx.add_review("account", T0, {"score": 0.2})
        tx.add_review("core", None, {"score": 0.4})
    with paper.transaction("paper", bar=24, timestamp=T0 + 24 * HOUR) as tx:
        tx.add_review("account", None, {"score": 0.3})
        tx.add_review("account", None, {"score": 0.35})  # the same bar: replaced
    latest = paper.latest_reviews("paper")
    assert sorted(latest) == ["account", "core"]
    assert (latest["account"]["bar"], latest["account"]["payload"]) == (24, {"score": 0.35})
    assert latest["account"]["timestamp"] == T0 + 24 * HOUR
    assert (latest["core"]["bar"], latest["core"]["payload"]) == (0, {"score": 0.4})
    assert paper.latest_reviews("other") == {}
    with pytest.raises(StoreError, match="a review needs a bar"):
        with paper.transaction("paper", timestamp=T0) as tx:
            tx.add_review("account", None, {})


def test_the_heartbeat_is_replaced_and_read_with_its_wall_clock(paper: Store) -> None:
    assert paper.heartbeat("paper") is None
    before = pd.Timestamp.now(tz="UTC")
    paper.save_heartbeat("paper", {"pid": 123, "status": "starting"})
    paper.save_heartbeat("paper", {"pid": 123, "status": "running", "next_bar": T0.isoformat()})
    beat = paper.heartbeat("paper")
    assert beat is not None and beat.pop("at") >= before
    assert beat == {"pid": 123, "status": "running", "next_bar": T0.isoformat()}
    with pytest.raises(StoreError, match="no run 'ghost'"):
        paper.save_heartbeat("ghost", {"pid": 1})


# --- rewinding and deleting ----------------------------------------------------------------
def test_rewind_removes_later_proposals_and_reviews_but_never_commands_or_alerts(
    paper: Store,
) -> None:
    with paper.transaction("paper", bar=0, timestamp=T0) as tx:
        kept = tx.add_proposal(proposal(T0))
        tx.add_review("account", None, {"bar": 0})
        tx.set_checkpoint()
    # A bar that committed but whose process died before its checkpoint.
    cid = paper.add_command("paper", "pause", subaccount="core", actor="ana", reason="x")
    with paper.transaction("paper", bar=1, timestamp=T0 + HOUR) as tx:
        gone = tx.add_proposal(proposal(T0 + HOUR, decision=13))
        tx.add_review("account", None, {"bar": 1})
        tx.add_alert(alert(), ["ops"])
        tx.finish_command(cid, "applied", "paused")
    paper.save_heartbeat("paper", {"pid": 7})
    assert paper.rewind("paper") == (0, T0)
    assert [p["proposal_id"] for p in paper.proposals("paper")] == [kept]
    assert len(paper.proposal("paper", kept)["legs"]) == 2
    assert paper.latest_reviews("paper")["account"]["payload"] == {"bar": 0}
    (command,) = paper.commands("paper")
    assert command["status"] == "applied" and command["applied_bar"] == 1
    assert len(paper.alerts("paper")) == 1 and len(paper.outbox("paper")) == 1
    assert paper.heartbeat("paper")["pid"] == 7
    counts = count_rows(paper, "paper")
    assert counts["proposal_legs"] == 2
    # The bar written again: a proposal id a person may have seen is never given again,
    # so an "approve <gone>" cannot approve the new proposal.
    with paper.transaction("paper", bar=1, timestamp=T0 + HOUR) as tx:
        again = tx.add_proposal(proposal(T0 + HOUR, decision=13))
        tx.set_checkpoint()
    assert again > gone
    with pytest.raises(StoreError, match=rf"no proposal {gone}$"):
        paper.proposal("paper", gone)
    # Without a checkpoint every bar's proposal goes; the human acts stay.
    paper.start_run("fresh", "paper", {})
    with paper.transaction("fresh", bar=0, timestamp=T0) as tx:
        tx.add_proposal(proposal(T0))
    paper.add_command("fresh", "pause", actor="ana", reason="x")
    paper.rewind("fresh")
    assert paper.proposals("fresh") == [] and len(paper.pending_commands("fresh")) == 1


def test_delete_run_removes_everything_of_the_run_and_nothing_else(paper: Store) -> None:
    paper.start_run("other", "paper", {})
    for run in ("paper", "other"):
        write_bar(paper, run, 0)
        cid = paper.add_command(run, "pause", actor="ana", reason="x")
        with paper.transaction(run, bar=1, timestamp=T0) as tx:
            tx.add_proposal(proposal(T0))
            tx.add_alert(alert(), ["ops", "phone"])
            tx.add_review("account", None, {"x": 1})
            tx.add_transfers([{"source": "core", "target": "carry", "amount": 10.0}])
            tx.add_breaker_changes(
                [{"scope": "core", "old": "active", "new": "halted", "trigger": "manual"}]
            )
            tx.add_overrides([{"key": "max_asset_weight", "new": 0.2, "by": "a", "reason": "b"}])
            tx.finish_command(cid, "applied", "ok")
            tx.set_checkpoint()
        paper.save_heartbeat(run, {"pid": 1})
    before = count_rows(paper, "other")
    assert all(before.values()), before  # every table has rows of the run
    assert paper.delete_run("paper") is True
    assert set(count_rows(paper, "paper").values()) == {0}
    assert count_rows(paper, "other") == before
    assert paper.delete_run("paper") is False


# --- the schema ----------------------------------------------------------------------------
def test_the_migrations_build_exactly_the_models_schema_at_head(store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = Store.open(store_url)
    assert store.schema_revision() == "0005"
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"version_table": m.VERSION_TABLE, "compare_type": True}
        )
        assert compare_metadata(ctx, m.metadata) == []
    store.close()


def test_a_store_at_migration_0001_is_upgraded_in_place_and_keeps_its_rows(
    store_url: str,
) -> None:
    from alembic import command
    from alembic.config import Config

    old = Store.open(store_url, upgrade=False)
    with old.engine.begin() as conn:  # what trimtab wrote before migration 0002 existed
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(m.__file__).with_name("migrations")))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    assert old.schema_revision() == "0001"
    with old.engine.connect() as conn:
        assert not sa.inspect(conn).has_table("commands")
    old.start_run("bt", "backtest", {"policy": "managed"})
    ids = [cid for bar in range(3) for cid in write_bar(old, "bt", bar)]
    written = (old.decisions("bt"), old.orders("bt"), old.fills("bt"), old.balances("bt"))
    old.close()

    store = Store.open(store_url)
    assert store.schema_revision() == "0005"
    run = store.run("bt")
    assert run is not None and run.spec == {"policy": "managed"} and run.checkpoint[0] == 2
    assert (store.decisions("bt"), store.orders("bt"), store.fills("bt"), store.balances("bt")) == (
        written
    )
    assert [o["client_order_id"] for o in store.orders("bt")] == ids
    assert store.load_state("bt", "account") == {"bar": 2}
    # The old run carries on, with the new tables.
    write_bar(store, "bt", 3)
    cid = store.add_command("bt", "pause", actor="ana", reason="upgrade")
    with store.transaction("bt", bar=4, timestamp=T0) as tx:
        pid = tx.add_proposal(proposal(T0))
        tx.add_alert(alert(), ["ops"])
        tx.finish_command(cid, "applied", "ok")
        tx.set_checkpoint()
    assert store.proposal("bt", pid)["legs"][0]["notional"] == Decimal("500.0")
    assert store.commands("bt", status="applied")[0]["command_id"] == cid
    assert len(store.due_deliveries(pd.Timestamp.now(tz="UTC"))) == 1
    assert [d["id"] for d in store.decisions("bt")] == [0, 1, 2, 3]
    store.close()
    with Store.open(store_url) as again:  # nothing more to apply
        assert again.schema_revision() == "0005"
