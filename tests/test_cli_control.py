"""The control commands as a person types them: each writes the row the runner reads,
says when it takes effect, prints parseable JSON with --json, and turns every mistake
into one line on stderr with exit code 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.app.test_control import build_run
from trimtab import cli_control
from trimtab.journal.store import Store

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    cli_control.register(app)
    return app


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "trimtab.db"
    store, _ = build_run(path)
    store.close()
    return path


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def invoke(app, db, *args: str):
    return runner.invoke(app, [*args, "--db", url(db)], catch_exceptions=False)


def pending(db: Path) -> list[dict]:
    with Store.open(url(db)) as store:
        return store.pending_commands("paper-1")


def proposal_id(db: Path) -> int:
    with Store.open(url(db)) as store:
        return store.proposals("paper-1")[0]["proposal_id"]


def fails(result, *words: str) -> str:
    """The error line: exit code 2, one line on stderr, naming ``words``, nothing on stdout."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""
    return lines[0]


# --- every command writes its row -------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "kind", "subaccount", "expected_args"),
    [
        (["pause"], "pause", None, None),
        (["pause", "--subaccount", "trend"], "pause", "trend", None),
        (["resume", "--subaccount", "core"], "resume", "core", None),
        (["close", "BTCUSDT", "eth/usdt"], "close", None, {"symbols": ["BTCUSDT", "ETHUSDT"]}),
        (["close", "--all", "--subaccount", "core"], "close", "core", {"all": True}),
        (
            ["limits", "set", "max_asset_weight", "0.2", "--reason", "desk"],
            "limits",
            None,
            {"key": "max_asset_weight", "value": 0.2},
        ),
        (
            [
                "limits",
                "set",
                "max_order_notional",
                "null",
                "--subaccount",
                "trend",
                "--reason",
                "x",
            ],
            "limits",
            "trend",
            {"key": "max_order_notional", "value": None},
        ),
        (
            ["mode", "set", "trend", "auto", "--reason", "envelope set"],
            "mode",
            "trend",
            {"mode": "auto"},
        ),
    ],
)
def test_each_command_writes_its_row(app, db, args, kind, subaccount, expected_args):
    result = invoke(app, db, *args, "--by", "ana")
    assert result.exit_code == 0, result.output
    (row,) = pending(db)
    assert (row["kind"], row["subaccount"], row["args"], row["actor"]) == (
        kind,
        subaccount,
        expected_args,
        "ana",
    )
    assert f"command #{row['command_id']} written: {kind}" in result.stdout
    # No heartbeat in this store: the runner is down.
    assert "the runner is not running: it applies this at its next start" in result.stdout


def test_approve_all_or_some_legs_and_reject(app, db):
    pid = proposal_id(db)
    result = invoke(app, db, "approve", str(pid), "--legs", "1", "--by", "ana", "--reason", "eth")
    assert result.exit_code == 0, result.output
    assert f"(proposal {pid}, legs 1)" in result.stdout
    (row,) = pending(db)
    assert (row["kind"], row["subaccount"], row["args"], row["reason"]) == (
        "approve",
        "core",
        {"proposal_id": pid, "legs": [1]},
        "eth",
    )
    # A second decision on the same proposal waits for the first: refused.
    fails(invoke(app, db, "reject", str(pid)), f"proposal {pid}", "pending approve")


def test_reject_writes_its_row(app, db):
    pid = proposal_id(db)
    result = invoke(app, db, "reject", str(pid), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["kind"], doc["args"], doc["runner_alive"]) == (
        "reject",
        {"proposal_id": pid},
        False,
    )
    assert [r["command_id"] for r in pending(db)] == [doc["command_id"]]


def test_a_fresh_heartbeat_says_within_one_cycle(app, db):
    with Store.open(url(db)) as store:
        store.save_heartbeat("paper-1", {"pid": os.getpid(), "status": "running"})
    result = invoke(app, db, "pause", "--by", "ana")
    assert result.exit_code == 0, result.output
    assert "the runner applies it within one cycle" in result.stdout
    status = invoke(app, db, "status")
    # A slow machine may take a second or two between the heartbeat and the status call.
    alive = re.search(rf"runner: alive \(heartbeat (\d+) s ago, pid {os.getpid()}\b", status.stdout)
    assert alive is not None, status.stdout
    assert int(alive.group(1)) <= 10


# --- mistakes: one line, exit 2 ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["pause", "--subaccount", "carry"], ["unknown subaccount 'carry'", "core, trend"]),
        (["mode", "set", "carry", "auto", "--reason", "r"], ["unknown subaccount 'carry'"]),
        (
            ["limits", "set", "max_weight", "0.2", "--reason", "r"],
            ["unknown limit 'max_weight'", "min_cash"],
        ),
        (
            ["limits", "set", "min_cash", "1.5", "--reason", "r"],
            ["limit min_cash: '1.5'", "less than 1"],
        ),
        (["limits", "set", "max_asset_weight", "0.2"], ["limits set needs --reason"]),
        (
            ["mode", "set", "core", "yolo", "--reason", "r"],
            ["unknown mode 'yolo'", "monitor, approve, auto"],
        ),
        (["mode", "set", "core", "auto"], ["mode set needs --reason"]),
        (["approve", "99"], ["no proposal 99", "pending proposals"]),
        (["reject", "99"], ["no proposal 99"]),
        (["close"], ["symbols to close", "--all"]),
        (["close", "BTCUSDT", "--all"], ["not both"]),
        (["approve", "1", "--legs", "a,b"], ["--legs takes leg numbers", "'a,b'"]),
        (["pause", "--run-id", "ghost"], ["no run 'ghost'", "paper-1"]),
    ],
)
def test_mistakes_are_one_line_and_exit_2(app, db, args, words):
    fails(invoke(app, db, *args), *words)
    assert pending(db) == []


def test_unknown_legs_and_a_proposal_that_expired(app, db):
    pid = proposal_id(db)
    fails(
        invoke(app, db, "approve", str(pid), "--legs", "0,7"),
        f"proposal {pid} has no leg 7",
        "0, 1",
    )
    with Store.open(url(db)) as store, store.transaction("paper-1", bar=0) as tx:
        tx.update_proposal(pid, status="expired")
    fails(invoke(app, db, "approve", str(pid)), f"proposal {pid} is expired", "not pending")
    fails(invoke(app, db, "reject", str(pid)), f"proposal {pid} is expired")


def test_no_run_and_two_runs_ask_for_run_id(app, tmp_path, db):
    empty = tmp_path / "empty.db"
    Store.open(url(empty)).close()
    fails(invoke(app, empty, "status"), "no paper or live run", "--run-id")
    with Store.open(url(db)) as store:
        store.start_run("paper-2", kind="paper", spec={"subaccounts": ["core"]})
    fails(
        invoke(app, db, "pause"),
        "2 paper/live runs",
        "paper-1 (paper",
        "paper-2 (paper",
        "--run-id",
    )
    result = invoke(app, db, "pause", "--run-id", "paper-2", "--by", "ana")
    assert result.exit_code == 0, result.output
    with Store.open(url(db)) as store:
        assert [r["kind"] for r in store.pending_commands("paper-2")] == ["pause"]


def test_a_missing_store_file_is_named_and_not_created(app, tmp_path):
    missing = tmp_path / "none" / "x.db"
    fails(invoke(app, missing, "status"), "no store at", "x.db")
    assert not missing.exists()


# --- views ------------------------------------------------------------------------------------
def test_status_human_and_json(app, db):
    invoke(app, db, "pause", "--subaccount", "core", "--by", "ana")
    result = invoke(app, db, "status")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "run paper-1 (paper, running)" in out
    assert "runner: not running (no heartbeat yet)" in out
    assert "account equity 20,000.00 USDT" in out
    for word in (
        "Subaccounts",
        "core",
        "trend",
        "approve",
        "Pending proposals",
        "Pending commands",
    ):
        assert word in out
    doc = json.loads(invoke(app, db, "status", "--json").stdout)
    assert doc["run"]["run_id"] == "paper-1" and doc["heartbeat"]["alive"] is False
    assert [c["kind"] for c in doc["pending_commands"]] == ["pause"]
    assert len(doc["pending_proposals"]) == 1


def test_proposals_and_commands_human_and_json(app, db):
    pid = proposal_id(db)
    result = invoke(app, db, "proposals")
    assert result.exit_code == 0, result.output
    assert "BTCUSDT" in result.stdout and "ETHUSDT" in result.stdout
    rows = json.loads(invoke(app, db, "proposals", "--json").stdout)
    assert [p["proposal_id"] for p in rows] == [pid]
    assert [(lg["leg"], lg["side"], lg["notional"]) for lg in rows[0]["legs"]] == [
        (0, "sell", 3000.0),
        (1, "buy", 3000.0),
    ]
    assert "no commands yet" in invoke(app, db, "commands").stdout
    invoke(app, db, "mode", "set", "core", "monitor", "--reason", "calm", "--by", "bob")
    journal = json.loads(invoke(app, db, "commands", "--json").stdout)
    assert [(c["kind"], c["actor"], c["reason"], c["status"]) for c in journal] == [
        ("mode", "bob", "calm", "pending")
    ]
    table = invoke(app, db, "commands").stdout
    assert "calm" in table and "bob" in table and "monitor" in table


def test_limits_show(app, db):
    invoke(app, db, "limits", "set", "max_asset_weight", "0.3", "--reason", "r", "--by", "a")
    result = invoke(app, db, "limits", "show")
    assert result.exit_code == 0, result.output
    assert "max_asset_weight" in result.stdout and "Pending limit changes" in result.stdout
    doc = json.loads(invoke(app, db, "limits", "show", "--json").stdout)
    assert doc["subaccounts"]["trend"]["max_drawdown"] == 0.5
    assert doc["pending"][0]["args"] == {"key": "max_asset_weight", "value": 0.3}


# --- the installed command --------------------------------------------------------------------
def _registered() -> bool:
    text = (ROOT / "src" / "trimtab" / "cli.py").read_text()
    return "cli_control" in text and "register(" in text


@pytest.mark.skipif(
    not _registered(), reason="trimtab.cli does not call cli_control.register(app) yet"
)
def test_the_installed_console_script_runs_status_and_pause(db):
    script = Path(sys.executable).with_name("trimtab")
    env = {**os.environ, "TRIMTAB_DB": url(db)}
    done = subprocess.run(
        [str(script), "status", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run"]["run_id"] == "paper-1"
    bad = subprocess.run(
        [str(script), "mode", "set", "core", "yolo", "--reason", "r"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "unknown mode 'yolo'" in bad.stderr
    assert "Traceback" not in bad.stderr
