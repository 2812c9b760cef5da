"""The alert outbox delivered through apprise's json:// to a real local HTTP server, on a
real SQLite store: delivered once, retried with backoff while the receiver is down,
given up after N attempts, resumed by a new process's store; no secret leaks."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from tests.app.receiver import Receiver
from trimtab.app.notify import DeliveryPolicy, deliver_due, send
from trimtab.app.secrets import Secret
from trimtab.config import NotifyTarget
from trimtab.journal.store import Store

RUN = "paper-1"
TOKEN = "tok-planted-7c1e55a0b9"
T_RUN = pd.Timestamp("2024-03-01", tz="UTC")


def alert(key: str = "risk_score:core:up:50", **kw) -> dict:
    return {
        "rule": "risk_score",
        "key": key,
        "timestamp": T_RUN,
        "severity": "warning",
        "title": "core: risk score 63 crossed above 50",
        "message": "The risk score of subaccount core rose from 45.0 to 63.0.",
        "numbers": {"risk_score": 63.0},
        "action": "cap BTC at 25% of equity",
        "subaccount": "core",
        **kw,
    }


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "run.db")
    s.start_run(RUN, kind="paper", spec={"test": True})
    yield s
    s.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def targets(monkeypatch, receiver):
    monkeypatch.setenv("TT_PHONE_URL", f"json://127.0.0.1:{receiver.port}/hook/{TOKEN}")
    return {"phone": NotifyTarget(url_env="TT_PHONE_URL")}


def raise_alert(store: Store, targets=("phone",), **kw) -> int:
    with store.transaction(RUN, bar=0, timestamp=T_RUN) as tx:
        return tx.add_alert(alert(**kw), list(targets))


def now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def test_delivered_exactly_once(store, receiver, targets):
    receiver.start()
    raise_alert(store)
    rep = deliver_due(store, targets)
    assert len(rep.delivered) == 1 and not rep.retrying
    [(path, body)] = receiver.posts
    assert path == f"/hook/{TOKEN}"
    assert body["title"] == "core: risk score 63 crossed above 50"
    assert "rose from 45.0 to 63.0" in body["message"]
    assert "What to do: cap BTC at 25% of equity" in body["message"]
    assert body["type"] == "warning"
    [row] = store.outbox(RUN)
    assert row["status"] == "delivered" and row["attempts"] == 1
    assert deliver_due(store, targets, now=now() + pd.Timedelta(days=1)).delivered == []
    assert len(receiver.posts) == 1


def test_receiver_down_then_up(store, receiver, targets):
    raise_alert(store)  # nobody listens on the port yet
    t = now()
    rep = deliver_due(store, targets, now=t)
    assert rep.retrying and not rep.delivered
    [row] = store.outbox(RUN)
    assert row["status"] == "pending" and row["attempts"] == 1
    nxt = pd.Timestamp(row["next_attempt_at"])
    nxt = nxt.tz_localize("UTC") if nxt.tzinfo is None else nxt
    assert nxt == pytest.approx(t + pd.Timedelta(seconds=30), abs=pd.Timedelta(seconds=1))
    assert "Connection error" in row["last_error"]
    # Not due yet: nothing is attempted, even with the receiver up.
    receiver.start()
    assert deliver_due(store, targets, now=t + pd.Timedelta(seconds=10)).delivered == []
    assert receiver.posts == []
    rep = deliver_due(store, targets, now=t + pd.Timedelta(seconds=31))
    assert len(rep.delivered) == 1 and len(receiver.posts) == 1
    [row] = store.outbox(RUN)
    assert row["status"] == "delivered" and row["attempts"] == 2
    deliver_due(store, targets, now=t + pd.Timedelta(days=2))
    assert len(receiver.posts) == 1


def test_backoff_grows_and_gives_up(store, targets):
    raise_alert(store)
    policy = DeliveryPolicy(base_delay=10, factor=2, max_delay=35, max_attempts=4)
    t = now()
    waits = []
    for _ in range(3):
        rep = deliver_due(store, targets, now=t, policy=policy)
        assert rep.retrying
        [row] = store.outbox(RUN)
        nxt = pd.Timestamp(row["next_attempt_at"])
        nxt = nxt.tz_localize("UTC") if nxt.tzinfo is None else nxt
        waits.append(round((nxt - t).total_seconds()))
        t = nxt
    assert waits == [10, 20, 35]  # 10, 10 x 2, 10 x 4 = 40 capped at 35
    rep = deliver_due(store, targets, now=t, policy=policy)
    assert rep.failed and not rep.retrying
    [row] = store.outbox(RUN)
    assert row["status"] == "failed" and row["attempts"] == 4


def test_a_restart_delivers_what_was_left(tmp_path, receiver, targets):
    path = tmp_path / "run.db"
    first = Store.open(path)
    first.start_run(RUN, kind="paper", spec={"test": True})
    with first.transaction(RUN, bar=0, timestamp=T_RUN) as tx:
        tx.add_alert(alert("a"), ["phone"])
        tx.add_alert(alert("b", title="second alert"), ["phone"])
    t = now()
    deliver_due(first, targets, now=t)  # receiver down: both stay pending
    first.close()
    receiver.start()
    second = Store.open(path)  # a new process on the same file
    try:
        rep = deliver_due(second, targets, now=t + pd.Timedelta(minutes=5))
        assert len(rep.delivered) == 2
        assert sorted(b["title"] for _, b in receiver.posts) == [
            "core: risk score 63 crossed above 50",
            "second alert",
        ]
        assert {r["status"] for r in second.outbox(RUN)} == {"delivered"}
    finally:
        second.close()


def test_unknown_target_and_missing_variable_are_retried_with_a_clear_error(store, monkeypatch):
    raise_alert(store, targets=("pager",), key="x")
    raise_alert(store, targets=("phone",), key="y")
    monkeypatch.delenv("TT_PHONE_URL", raising=False)
    rep = deliver_due(store, {"phone": NotifyTarget(url_env="TT_PHONE_URL")})
    assert len(rep.retrying) == 2
    errors = {r["target"]: r["last_error"] for r in store.outbox(RUN)}
    assert "'pager' is not under alerts.notify" in errors["pager"]
    assert "TT_PHONE_URL is not set" in errors["phone"]


def test_no_secret_in_the_database_logs_or_errors(tmp_path, store, receiver, targets, caplog):
    caplog.set_level(logging.DEBUG)
    raise_alert(store)
    t = now()
    rep = deliver_due(store, targets, now=t)  # down: apprise and urllib3 log the attempt
    assert rep.retrying
    receiver.status = 500
    receiver.start()
    deliver_due(store, targets, now=t + pd.Timedelta(minutes=1))  # an HTTP error
    receiver.status = 200
    deliver_due(store, targets, now=t + pd.Timedelta(minutes=5))
    assert [r["status"] for r in store.outbox(RUN)] == ["delivered"]
    assert len(receiver.posts) == 2  # the 500 and the success
    store.close()
    for f in tmp_path.iterdir():
        assert TOKEN.encode() not in f.read_bytes(), f.name
    logs = caplog.text + "".join(str(r.msg) for r in caplog.records)
    assert "apprise" in logs.lower() or "json" in logs.lower()  # something was logged
    assert TOKEN not in logs
    # The error text of a failed send is masked too.
    url = Secret(f"json://127.0.0.1:{receiver.port}/hook/{TOKEN}", "phone")
    receiver.status = 500
    error = send(url, "t", "m", "info")
    assert error is not None and "500" in error and TOKEN not in error
    bad = send(Secret(f"nosuchscheme://{TOKEN}@example", "odd"), "t", "m", "info")
    assert bad is not None and "nosuchscheme://" in bad and TOKEN not in bad
