"""The human-override service functions on a real SQLite store: each command writes the
row the runner reads, each mistake is refused with a message naming what is wrong, and
the views read back what the runner wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from trimtab.app import control
from trimtab.app.control import ControlError
from trimtab.guard.limits import Limits
from trimtab.journal.store import RunInfo, Store

T0 = pd.Timestamp("2024-03-01 00:00", tz="UTC")


def leg(n: int, symbol: str, side: str, quantity: float, price: float) -> dict:
    return {
        "leg": n,
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "quote_quantity": None,
        "planned_price": price,
        "band_low": price * 0.99,
        "band_high": price * 1.01,
        "notional": quantity * price,
        "reason": "drift above band",
        "status": "pending",
        "client_order_id": None,
    }


def build_run(
    path: Path,
    run_id: str = "paper-1",
    *,
    subaccounts: tuple[str, ...] = ("core", "trend"),
    status: bool = True,
    proposal: bool = True,
    heartbeat: dict | None = None,
) -> tuple[Store, RunInfo]:
    """A store at ``path`` with one paper run (and the run), as the runner leaves it
    after a cycle: the status state, a pending proposal of the first subaccount with
    legs 0 (sell 0.05 BTCUSDT at 60,000 = 3,000 USDT) and 1 (buy 1 ETHUSDT at 3,000),
    an auto envelope on every subaccount but the first, and optionally a heartbeat."""
    store = Store.open(f"sqlite:///{path}")
    store.start_run(run_id, kind="paper", spec={"subaccounts": list(subaccounts)})
    with store.transaction(run_id, bar=0, timestamp=T0) as tx:
        if status:
            tx.save_state(
                "status",
                {
                    "timestamp": T0.isoformat(),
                    "bar": 0,
                    "account": {"equity": 20_000.0, "state": "active"},
                    "subaccounts": {
                        name: {
                            "mode": "approve",
                            "paused": False,
                            "trading_state": "active",
                            "equity": 10_000.0,
                            "cash": 4_000.0,
                            "positions": {"BTCUSDT": 0.1, "ETHUSDT": 0.0},
                            "limits": Limits().model_dump(mode="json"),
                            # auto mode's envelope: the first subaccount has none
                            "envelope": None
                            if name == subaccounts[0]
                            else {"max_order_notional": 500.0, "max_daily_turnover": 0.2},
                            "turnover_today": 0.0,
                        }
                        for name in subaccounts
                    },
                },
            )
        if proposal:
            tx.add_proposal(
                {
                    "subaccount": subaccounts[0],
                    "decision_id": 1,
                    "timestamp": T0,
                    "expires_at": T0 + pd.Timedelta(hours=1),
                    "legs": [
                        leg(0, "BTCUSDT", "sell", 0.05, 60_000.0),
                        leg(1, "ETHUSDT", "buy", 1.0, 3_000.0),
                    ],
                    "reasons": ["rebalance"],
                    "source": "approve-mode",
                    "summary": "sell BTC, buy ETH",
                }
            )
        tx.set_checkpoint()
    if heartbeat is not None:
        store.save_heartbeat(run_id, heartbeat)
    return store, store.run(run_id)


@pytest.fixture
def run(tmp_path):
    store, info = build_run(tmp_path / "trimtab.db")
    yield store, info
    store.close()


def only_command(store, info) -> dict:
    rows = store.pending_commands(info.run_id)
    assert len(rows) == 1, rows
    return rows[0]


# --- where the store is and which run ---------------------------------------------------
def test_default_db_is_the_env_var_else_the_runners_default(monkeypatch):
    monkeypatch.delenv("TRIMTAB_DB", raising=False)
    assert control.default_db() == "sqlite:///runs/trimtab.db"
    monkeypatch.setenv("TRIMTAB_DB", "sqlite:////tmp/elsewhere.db")
    assert control.default_db() == "sqlite:////tmp/elsewhere.db"


def test_open_store_refuses_a_missing_sqlite_file_instead_of_creating_one(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(ControlError, match=r"no store at .*nope\.db.*--db"):
        control.open_store(f"sqlite:///{missing}")
    assert not missing.exists()


def test_find_run_takes_the_single_paper_run_and_ignores_backtests(run):
    store, info = run
    store.start_run("bt-1", kind="backtest", spec={})
    assert control.find_run(store).run_id == "paper-1"
    assert control.find_run(store, "paper-1").run_id == "paper-1"


def test_find_run_without_a_paper_run_lists_what_is_there(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ControlError, match=r"no paper or live run in .*x\.db"):
        control.find_run(store)
    store.start_run("bt-1", kind="backtest", spec={})
    with pytest.raises(ControlError, match=r"no paper or live run .*bt-1 \(backtest"):
        control.find_run(store)
    with pytest.raises(ControlError, match=r"run 'bt-1' .* is a backtest run"):
        control.find_run(store, "bt-1")
    store.close()


def test_find_run_with_two_runs_lists_both_and_asks_for_run_id(run):
    store, _ = run
    store.start_run("live-1", kind="live", spec={"subaccounts": ["core"]})
    with pytest.raises(ControlError) as caught:
        control.find_run(store)
    message = str(caught.value)
    assert "paper-1 (paper" in message and "live-1 (live" in message
    assert "--run-id" in message
    assert control.find_run(store, "live-1").kind == "live"


def test_find_run_names_a_missing_run_and_the_runs_there(run):
    store, _ = run
    with pytest.raises(ControlError, match=r"no run 'ghost' .*paper-1"):
        control.find_run(store, "ghost")


# --- pause, resume, close -----------------------------------------------------------------
def test_pause_and_resume_write_rows_for_one_subaccount_or_all(run):
    store, info = run
    out = control.pause(store, info, "trend", actor="ana", reason="news in 5 min")
    assert out["kind"] == "pause" and out["subaccount"] == "trend"
    row = only_command(store, info)
    assert row["command_id"] == out["command_id"]
    assert (row["kind"], row["subaccount"], row["actor"], row["reason"], row["status"]) == (
        "pause",
        "trend",
        "ana",
        "news in 5 min",
        "pending",
    )
    control.resume(store, info, None, actor="ana")
    rows = store.pending_commands(info.run_id)
    assert [(r["kind"], r["subaccount"]) for r in rows] == [("pause", "trend"), ("resume", None)]
    assert rows[1]["reason"] == ""  # optional, and recorded as text, not null


def test_actor_defaults_to_the_login_name(run, monkeypatch):
    store, info = run
    monkeypatch.setenv("LOGNAME", "login-name")
    monkeypatch.setenv("USER", "login-name")
    control.pause(store, info)
    assert only_command(store, info)["actor"] == "login-name"


def test_unknown_subaccount_is_refused_with_the_known_ones(run):
    store, info = run
    for call in (
        lambda: control.pause(store, info, "carry", actor="ana"),
        lambda: control.resume(store, info, "carry", actor="ana"),
        lambda: control.close(store, info, ["BTCUSDT"], subaccount="carry", actor="ana"),
        lambda: control.set_limit(
            store, info, "max_asset_weight", "0.2", subaccount="carry", actor="a", reason="r"
        ),
        lambda: control.set_mode(store, info, "carry", "auto", actor="ana", reason="r"),
    ):
        with pytest.raises(ControlError, match=r"unknown subaccount 'carry' .*core, trend"):
            call()
    assert store.pending_commands(info.run_id) == []


def test_close_symbols_are_normalised_and_all_closes_everything(run):
    store, info = run
    out = control.close(store, info, ["btc/usdt", "BTCUSDT"], subaccount="core", actor="ana")
    assert out["notes"] == []
    control.close(store, info, all=True, actor="ana", reason="flatten before the FOMC")
    first, second = store.pending_commands(info.run_id)
    assert (first["kind"], first["subaccount"], first["args"]) == (
        "close",
        "core",
        {"symbols": ["BTCUSDT"]},
    )
    assert (second["subaccount"], second["args"]) == (None, {"all": True})


def test_close_needs_symbols_or_all_but_not_both(run):
    store, info = run
    with pytest.raises(ControlError, match="symbols to close .* or --all"):
        control.close(store, info, [], actor="ana")
    with pytest.raises(ControlError, match="not both"):
        control.close(store, info, ["BTCUSDT"], all=True, actor="ana")
    assert store.pending_commands(info.run_id) == []


def test_close_of_a_symbol_not_held_is_written_with_a_note(run):
    store, info = run
    # ETHUSDT is at 0 in the last status, SOLUSDT absent: most likely a typo, but a
    # person closing is never blocked by a view that may be a cycle old.
    out = control.close(store, info, ["ETHUSDT", "SOLUSDT"], actor="ana")
    assert "ETHUSDT, SOLUSDT" in out["notes"][0]
    assert only_command(store, info)["args"] == {"symbols": ["ETHUSDT", "SOLUSDT"]}


# --- limits ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("max_asset_weight", "0.2", 0.2),
        ("max_order_notional", "2500", 2500.0),
        ("max_order_notional", "null", None),
        ("max_daily_turnover", "none", None),
        ("min_cash", "5e-2", 0.05),
        ("allowed_symbols", "BTCUSDT, ETHUSDT", ["BTCUSDT", "ETHUSDT"]),
        ("allowed_symbols", "[BTCUSDT, SOLUSDT]", ["BTCUSDT", "SOLUSDT"]),
    ],
)
def test_set_limit_writes_the_value_as_the_limits_model_reads_it(run, key, text, value):
    store, info = run
    out = control.set_limit(store, info, key, text, actor="ana", reason="desk decision")
    row = only_command(store, info)
    assert (row["kind"], row["subaccount"], row["reason"]) == ("limits", None, "desk decision")
    assert row["args"] == {"key": key, "value": value}
    assert out["args"] == row["args"]
    # What the runner will do with it: Limits accepts it as it stands.
    assert Limits.model_validate({key: row["args"]["value"]}).model_dump(mode="json")[key] == value


def test_set_limit_on_one_subaccount_says_old_and_new(run):
    store, info = run
    out = control.set_limit(
        store, info, "max_asset_weight", "0.25", subaccount="trend", actor="a", reason="r"
    )
    assert out["notes"] == ["trend: max_asset_weight 1 -> 0.25"]
    assert only_command(store, info)["subaccount"] == "trend"


def test_unknown_limit_key_lists_the_keys(run):
    store, info = run
    with pytest.raises(ControlError) as caught:
        control.set_limit(store, info, "max_weight", "0.2", actor="a", reason="r")
    message = str(caught.value)
    assert "unknown limit 'max_weight'" in message
    for key in Limits.model_fields:
        assert key in message


@pytest.mark.parametrize(
    ("key", "text", "why"),
    [
        ("max_asset_weight", "abc", "valid number"),
        ("max_asset_weight", "0", "greater than 0"),
        ("min_cash", "1.5", "less than 1"),
        ("max_drawdown", "nan", "finite"),
        ("max_asset_weight", "yes", "yes/no"),
        ("max_gross_leverage", "null", "valid number"),  # a cap that cannot be removed
    ],
)
def test_bad_limit_value_is_refused_naming_the_key_and_value(run, key, text, why):
    store, info = run
    with pytest.raises(ControlError) as caught:
        control.set_limit(store, info, key, text, actor="a", reason="r")
    message = str(caught.value)
    assert f"limit {key}: {text!r}" in message and why in message
    assert store.pending_commands(info.run_id) == []


def test_limits_and_mode_need_a_reason(run):
    store, info = run
    for blank in (None, "", "   "):
        with pytest.raises(ControlError, match=r"limits set needs --reason"):
            control.set_limit(store, info, "max_asset_weight", "0.2", actor="a", reason=blank)
        with pytest.raises(ControlError, match=r"mode set needs --reason"):
            control.set_mode(store, info, "core", "auto", actor="a", reason=blank)
    assert store.pending_commands(info.run_id) == []


# --- mode -------------------------------------------------------------------------------------
def test_set_mode_writes_the_mode(run):
    store, info = run
    out = control.set_mode(store, info, "trend", "AUTO", actor="ana", reason="envelope set")
    assert out["notes"] == ["trend: approve -> auto"]
    row = only_command(store, info)
    assert (row["kind"], row["subaccount"], row["args"]) == ("mode", "trend", {"mode": "auto"})


def test_auto_without_an_envelope_is_refused(run):
    store, info = run  # the runner's status says core has none
    with pytest.raises(ControlError, match=r"core has no envelope, so it cannot trade in auto"):
        control.set_mode(store, info, "core", "auto", actor="ana", reason="r")
    assert store.pending_commands(info.run_id) == []
    control.set_mode(store, info, "core", "monitor", actor="ana", reason="r")


def test_unknown_mode_lists_the_modes(run):
    store, info = run
    with pytest.raises(
        ControlError, match=r"unknown mode 'yolo'; modes are monitor, approve, auto"
    ):
        control.set_mode(store, info, "core", "yolo", actor="ana", reason="r")


# --- proposals --------------------------------------------------------------------------------
def test_approve_every_leg_or_some(run):
    store, info = run
    (proposal,) = store.proposals(info.run_id, status="pending")
    pid = proposal["proposal_id"]
    out = control.approve(store, info, pid, actor="ana")
    assert out["subaccount"] == "core"
    row = only_command(store, info)
    assert (row["kind"], row["subaccount"], row["args"]) == (
        "approve",
        "core",
        {"proposal_id": pid, "legs": None},
    )


def test_approve_some_legs(run):
    store, info = run
    pid = store.proposals(info.run_id)[0]["proposal_id"]
    control.approve(store, info, pid, [1, 1], actor="ana", reason="only the ETH buy")
    row = only_command(store, info)
    assert row["args"] == {"proposal_id": pid, "legs": [1]}
    assert row["reason"] == "only the ETH buy"


def test_approve_unknown_legs_names_them_and_the_proposals_legs(run):
    store, info = run
    pid = store.proposals(info.run_id)[0]["proposal_id"]
    with pytest.raises(ControlError, match=rf"proposal {pid} has no leg 2, 5; its legs: 0, 1"):
        control.approve(store, info, pid, [0, 2, 5], actor="ana")
    with pytest.raises(ControlError, match="--legs is empty"):
        control.approve(store, info, pid, [], actor="ana")


def test_unknown_proposal_lists_the_pending_ones(run):
    store, info = run
    pid = store.proposals(info.run_id)[0]["proposal_id"]
    with pytest.raises(
        ControlError, match=rf"no proposal 99 in run 'paper-1'; pending proposals: {pid}"
    ):
        control.approve(store, info, 99, actor="ana")
    with pytest.raises(ControlError, match="no proposal 99"):
        control.reject(store, info, 99, actor="ana")


@pytest.mark.parametrize("status", ["expired", "rejected", "sent"])
def test_a_proposal_that_is_not_pending_is_refused_with_its_status(run, status):
    store, info = run
    pid = store.proposals(info.run_id)[0]["proposal_id"]
    with store.transaction(info.run_id, bar=0, timestamp=T0) as tx:
        tx.update_proposal(pid, status=status, decided_by="runner")
    for call in (control.approve, control.reject):
        with pytest.raises(
            ControlError, match=rf"proposal {pid} is {status} \(by runner\), not pending"
        ):
            call(store, info, pid, actor="ana")
    assert store.pending_commands(info.run_id) == []


def test_reject_writes_the_row_and_a_second_decision_is_refused(run):
    store, info = run
    pid = store.proposals(info.run_id)[0]["proposal_id"]
    control.reject(store, info, pid, actor="ana", reason="too big")
    row = only_command(store, info)
    assert (row["kind"], row["subaccount"], row["args"]) == ("reject", "core", {"proposal_id": pid})
    with pytest.raises(ControlError, match=rf"proposal {pid} already has a pending reject command"):
        control.approve(store, info, pid, actor="bob")


def test_approve_notes_a_proposal_past_its_expiry_on_the_runners_clock(run):
    store, info = run
    pid = store.proposals(info.run_id)[0]["proposal_id"]
    later = (T0 + pd.Timedelta(hours=2)).isoformat()
    with store.transaction(info.run_id, bar=1, timestamp=T0 + pd.Timedelta(hours=2)) as tx:
        tx.save_state("status", {**store.load_state(info.run_id, "status"), "timestamp": later})
    out = control.approve(store, info, pid, actor="ana")
    assert "nothing is sent" in out["notes"][0]


# --- views ------------------------------------------------------------------------------------
def test_heartbeat_alive_within_three_ticks_or_60_s(run):
    store, info = run
    assert control.heartbeat(store, info)["alive"] is False  # none yet
    store.save_heartbeat(info.run_id, {"pid": 123, "status": "running"})
    at = pd.Timestamp(store.heartbeat(info.run_id)["at"])
    at = at.tz_localize("UTC") if at.tz is None else at
    assert control.heartbeat(store, info, now=at + pd.Timedelta(seconds=59))["alive"] is True
    assert control.heartbeat(store, info, now=at + pd.Timedelta(seconds=61))["alive"] is False
    store.save_heartbeat(info.run_id, {"pid": 123, "status": "running", "tick_seconds": 100})
    at = pd.Timestamp(store.heartbeat(info.run_id)["at"])
    at = at.tz_localize("UTC") if at.tz is None else at
    beat = control.heartbeat(store, info, now=at + pd.Timedelta(seconds=299))
    assert beat["alive"] is True and beat["age_seconds"] == pytest.approx(299)
    assert control.heartbeat(store, info, now=at + pd.Timedelta(seconds=301))["alive"] is False
    store.save_heartbeat(info.run_id, {"pid": 123, "status": "stopped"})
    assert control.runner_alive(store, info) is False  # it said so itself


def test_status_gathers_run_state_reviews_proposals_and_commands(run):
    store, info = run
    store.save_heartbeat(info.run_id, {"pid": 42, "status": "running", "next_bar": "x"})
    with store.transaction(info.run_id, bar=0, timestamp=T0) as tx:
        tx.add_review(
            "core",
            T0,
            {
                "risk_score": 41.2,
                "risk_level": "moderate",
                "factors": [{"name": "volatility", "score": 60.0, "contribution": 20.0}],
                "flags": [{"severity": "high", "code": "concentration", "message": "BTC 62%"}],
            },
        )
    done = control.pause(store, info, "core", actor="ana")["command_id"]
    with store.transaction(info.run_id, bar=1, timestamp=T0 + pd.Timedelta(hours=1)) as tx:
        tx.finish_command(done, "applied", "core paused")
    control.resume(store, info, "core", actor="ana")
    doc = control.status(store, info)
    json.dumps(doc, allow_nan=False)  # plain JSON throughout
    assert doc["run"]["run_id"] == "paper-1" and doc["run"]["subaccounts"] == ["core", "trend"]
    assert doc["heartbeat"]["alive"] is True and doc["heartbeat"]["pid"] == 42
    assert doc["state"]["account"]["equity"] == 20_000.0
    assert doc["reviews"]["core"]["risk_score"] == 41.2
    assert doc["reviews"]["core"]["flags"][0]["code"] == "concentration"
    assert doc["reviews"]["core"]["factors"][0]["name"] == "volatility"
    (proposal,) = doc["pending_proposals"]
    assert [lg["notional"] for lg in proposal["legs"]] == [3_000.0, 3_000.0]
    assert [c["kind"] for c in doc["pending_commands"]] == ["resume"]
    (recent,) = doc["recent_commands"]
    assert (recent["kind"], recent["status"], recent["outcome"]) == (
        "pause",
        "applied",
        "core paused",
    )


def test_proposals_pending_or_all_and_commands_journal(run):
    store, info = run
    pid = store.proposals(info.run_id)[0]["proposal_id"]
    assert [p["proposal_id"] for p in control.proposals(store, info)] == [pid]
    with store.transaction(info.run_id, bar=0, timestamp=T0) as tx:
        tx.update_proposal(pid, status="rejected", decided_by="ana")
    assert control.proposals(store, info) == []
    assert [p["status"] for p in control.proposals(store, info, all=True)] == ["rejected"]
    control.pause(store, info, actor="ana")
    control.set_mode(store, info, "core", "monitor", actor="bob", reason="calm down")
    journal = control.commands(store, info)
    json.dumps(journal, allow_nan=False)
    assert [(c["kind"], c["actor"]) for c in journal] == [("pause", "ana"), ("mode", "bob")]


def test_limits_view_reads_the_runners_last_limits(run):
    store, info = run
    control.set_limit(store, info, "max_asset_weight", "0.3", actor="a", reason="r")
    doc = control.limits(store, info)
    assert doc["subaccounts"]["core"]["max_asset_weight"] == 1.0
    assert [c["args"]["value"] for c in doc["pending"]] == [0.3]
