"""Secrets never leave their variable: a token planted in the alert URL, and an
exchange-key-like variable in the environment, are found in no output of ``trimtab run``
(replayed, ``TRIMTAB_LOG=DEBUG``) or of any control command, and in no file the run
leaves (the store and its -wal/-shm, the paper exchange's database, anything under the
run folder and HOME). A URL written into the portfolio file itself is refused with an
error that names the key and does not repeat it."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests._cli import as_json, command, environment, trimtab
from tests.app.receiver import Receiver
from tests.conftest import synthetic_bars

START, MIDDLE, END = "2021-03-01", "2021-03-08", "2021-03-10"

PORTFOLIO = """
backtest: {timeframe: 1d}
runner: {tick_seconds: 0.05, review_every: 1}
subaccounts:
  propose:
    strategy: equal-weight
    rule: calendar:daily
    symbols: [AAAUSDT, BBBUSDT]
    capital: 4000
    mode: approve
  pilot:
    strategy: equal-weight
    rule: calendar:daily
    symbols: [AAAUSDT, BBBUSDT, CCCUSDT]
    capital: 3000
    mode: auto
    envelope: {max_order_notional: 900, max_daily_turnover: 1500}   # every leg (1,000) asks
alerts:
  notify:
    ops: {url_env: TRIMTAB_ALERT_URL}
  rules:
    - {kind: proposal_waiting}
    - {kind: drawdown, level: 0.01}
    - {kind: breaker}
    - {kind: order_rejected}
"""


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_no_secret_in_any_output_or_file(tmp_path, receiver):
    # Two secrets in the URL (a password and a path token) and an exchange key.
    password, token, exchange = (f"sEcr{uuid.uuid4().hex}" for _ in range(3))
    secrets = [password, token, exchange]
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "TRIMTAB_ALERT_URL": f"json://ops:{password}@127.0.0.1:{receiver.port}/hook/{token}",
        "TRIMTAB_BINANCE_SECRET": exchange,
        "TRIMTAB_LOG": "DEBUG",
        "HOME": str(home),
    }
    data = tmp_path / "ohlcv_1d_three.csv"
    n = 10
    synthetic_bars(
        {
            "AAAUSDT": [100.0 * 0.97**k for k in range(n)],  # a steady fall: drawdown alerts
            "BBBUSDT": [50.0 + k for k in range(n)],
            "CCCUSDT": [20.0 - 0.5 * k for k in range(n)],
        },
        start=START,
    ).to_csv(data, index=False)
    portfolio = tmp_path / "paper.yaml"
    portfolio.write_text(PORTFOLIO)
    db = ("--db", f"sqlite:///{tmp_path / 'runs' / 'store.db'}")
    runner = ["run", "--portfolio", str(portfolio), "--replay", str(data), "--from", START]
    outputs: list[str] = []

    def tt(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = trimtab(*args, cwd=tmp_path, env=env, code=code)
        outputs.append(f"$ trimtab {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
        return proc

    run1 = tt(*runner, "--to", MIDDLE, *db)
    assert " DEBUG " in run1.stderr  # the logs were on, at their most talkative
    assert "/hook/***" in run1.stderr  # apprise logged the URL: masked
    pending = as_json(tt("proposals", "--json", *db))
    first = {p["subaccount"]: p["proposal_id"] for p in reversed(pending)}
    assert set(first) == {"propose", "pilot"}, pending
    by = ("--by", "ana")
    tt("approve", str(first["propose"]), "--legs", "0", *by, *db)
    tt("reject", str(first["pilot"]), *by, "--reason", "not now", *db)
    tt("pause", "--subaccount", "pilot", *by, *db)
    tt("resume", "--subaccount", "pilot", *by, *db)
    tt("close", "--all", "--subaccount", "pilot", *by, "--reason", "risk off", *db)
    tt("limits", "set", "max_asset_weight", "0.45", "--reason", "tighter", *by, *db)
    tt("mode", "set", "propose", "auto", "--reason", "trusted now", *by, *db, code=2)  # no envelope
    tt("mode", "set", "pilot", "approve", "--reason", "ask first", *by, *db)
    tt("approve", "424242", *by, *db, code=2)
    tt(*runner, "--to", END, *db)
    # The read-only views, side by side (they only read the store).
    views = [
        ["status", *db],
        ["status", "--json", *db],
        ["proposals", "--all", *db],
        ["proposals", "--all", "--json", *db],
        ["limits", "show", *db],
        ["commands", *db],
        ["commands", "--json", *db],
    ]
    procs = [
        subprocess.Popen(
            [*command(), *v],
            cwd=tmp_path,
            env=environment(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in views
    ]
    out = ""
    for v, p in zip(views, procs, strict=True):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and "Traceback" not in out + err, (v, out, err)
        outputs.append(f"$ trimtab {' '.join(v)}\n{out}\n{err}")
    commands = json.loads(out)  # the last view: commands --json
    assert len(commands) == 7 and all(c["status"] in ("applied", "refused") for c in commands)

    # The alert URL was really used: apprise posted to the receiver, on the token's path.
    assert receiver.posts and {path for path, _ in receiver.posts} == {f"/hook/{token}"}

    # Nowhere: every output, every file under the run folder (store, -wal, -shm, the paper
    # exchange's database, the data and portfolio files, anything written under HOME).
    text = "\n".join(outputs)
    for s in secrets:
        assert s not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"store.db", "store.paper.db"} <= names, names
    for path in files:
        content = path.read_bytes()
        for s in secrets:
            assert s.encode() not in content, f"a secret in {path}"


def test_a_url_in_the_portfolio_file_is_refused_without_repeating_it(tmp_path):
    token = f"sEcr{uuid.uuid4().hex}"
    portfolio = tmp_path / "leaky.yaml"
    portfolio.write_text(
        PORTFOLIO.replace(
            "ops: {url_env: TRIMTAB_ALERT_URL}", f"ops: {{url: 'tgram://{token}/12345'}}"
        )
    )
    proc = trimtab(
        "run", "--portfolio", str(portfolio), "--replay", str(tmp_path), "--from", START,
        "--db", f"sqlite:///{tmp_path / 'store.db'}",
        cwd=tmp_path, env={"TRIMTAB_LOG": "DEBUG"}, code=2,
    )  # fmt: skip
    said = proc.stderr
    assert said.startswith(f"error: invalid configuration {portfolio}") and proc.stdout == ""
    assert "alerts.notify.ops.url: " in said and "url_env" in said
    assert token not in proc.stdout + proc.stderr
    assert not (tmp_path / "store.db").exists()  # refused before anything was opened
