"""Alerts of a scripted crash delivered to a local receiver, each exactly once, through a
SIGKILL: ``trimtab run`` (the console script) replays a small market where one held
coin falls 40 % in a day; the runner is killed once the crash's alerts are delivered and
started again to the end. The receiver is a real HTTP server (apprise's ``json://``), the
store and the paper exchange real SQLite files."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from decimal import Decimal

import pandas as pd
import pytest

from tests._cli import command, environment, trimtab
from tests.app.receiver import Receiver
from tests.conftest import synthetic_bars
from trimtab.journal.store import Store, StoreError

START = "2021-01-01"
BARS = 30
CRASH = 8  # AAAUSDT closes at 60 on this bar, from 100 flat before
END = (pd.Timestamp(START) + pd.Timedelta(days=BARS - 1)).strftime("%Y-%m-%d")
#: Replay pace of the run that is killed: a daily bar every 0.4 s of wall time, so the
#: kill lands while bars remain.
SPEED = 86_400 / 0.4
CRASH_KEYS = {
    "drawdown:core:0.1",
    "drawdown:account:0.1",
    "breaker:core:active->halted",
    "breaker:account:active->reducing",
}

PORTFOLIO = """
backtest: {timeframe: 1d}
runner: {tick_seconds: 0.05, review_every: 0}
subaccounts:
  core:
    strategy: equal-weight
    rule: calendar:monthly
    symbols: [AAAUSDT, BBBUSDT]
    capital: 10000
    mode: auto
    envelope: {max_order_notional: 100000, max_daily_turnover: 100000}
    limits: {max_drawdown: 0.15}   # the crash's 20 % drawdown halts it
alerts:
  cooldown: 30d
  notify:
    local: {url_env: TT_CRASH_ALERT_URL}
  rules:
    - {kind: drawdown, level: 0.10}
    - {kind: breaker}
"""


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_a_crash_alerts_each_once_through_a_kill(tmp_path, receiver):
    data = tmp_path / "ohlcv_1d_crash.csv"
    aaa = [100.0] * CRASH + [60.0] * (BARS - CRASH)
    synthetic_bars({"AAAUSDT": aaa, "BBBUSDT": [50.0] * BARS}, start=START).to_csv(
        data, index=False
    )
    portfolio = tmp_path / "crash.yaml"
    portfolio.write_text(PORTFOLIO)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    env = {"TT_CRASH_ALERT_URL": f"json://127.0.0.1:{receiver.port}/alerts"}
    args = ["run", "--portfolio", str(portfolio), "--replay", str(data), "--from", START]
    args += ["--to", END, "--db", url]
    crash_at = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=CRASH)

    # 1. Paced, watched from outside; SIGKILL once the crash's alerts are delivered.
    proc = subprocess.Popen(
        [*command(), *args, "--speed", str(SPEED)],
        cwd=tmp_path,
        env=environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = None
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "the run ended before the crash's alerts were delivered"
            assert time.monotonic() < deadline, "no alert delivered in 120 s"
            if store is None and (tmp_path / "store.db").is_file():
                # Read only: the runner may be creating the tables right now.
                with contextlib.suppress(StoreError):
                    store = Store.open(url, upgrade=False)
            if store is not None and delivered_crash(store, receiver):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert "Traceback" not in out + err
    killed_at = store.run("crash").checkpoint[1]
    assert pd.Timestamp(killed_at) < pd.Timestamp(END, tz="UTC"), "bars left after the kill"
    posts_before_restart = len(receiver.posts)
    store.close()

    # 2. The same command again, to the end: it carries on; nothing is delivered twice.
    trimtab(*args, cwd=tmp_path, env=env)
    store = Store.open(url)
    try:
        assert store.run("crash").checkpoint[1] == pd.Timestamp(END, tz="UTC")
        alerts = store.alerts("crash")
        keys = [a["key"] for a in alerts]
        assert len(keys) == len(set(keys)), keys
        # the crash: both drawdowns, core halted (drawdown past 15 %), the account
        # reducing (a 20 % daily loss) and back to active after its 5-bar cooldown
        assert set(keys) == CRASH_KEYS | {"breaker:account:reducing->active"}, keys
        outbox = store.outbox("crash")
        assert len(outbox) == len(alerts) and all(r["target"] == "local" for r in outbox)
        assert all(r["status"] == "delivered" for r in outbox), outbox
        # the receiver: one post per alert, each title once, on the path of the URL
        titles = [body["title"] for _, body in receiver.posts]
        assert sorted(titles) == sorted(a["title"] for a in alerts)
        assert {path for path, _ in receiver.posts} == {"/alerts"}
        assert posts_before_restart == len(CRASH_KEYS)  # the rest came after the restart

        # The drawdown, worked by hand from the fills: the peak is the starting capital
        # (the buy-in's costs lowered the equity, flat prices kept it there), and after
        # the crash the equity is the cash left plus the coins at their closes.
        fills = store.fills("crash")
        assert fills and all(f["side"] == "buy" and f["timestamp"] < crash_at for f in fills)
        cash = Decimal(10000) - sum(f["quantity"] * f["price"] + f["fee"] for f in fills)
        close = {"AAAUSDT": 60, "BBBUSDT": 50}
        equity = float(cash + sum(f["quantity"] * close[f["symbol"]] for f in fills))
        peak = 10000.0
        drawdown = 1 - equity / peak
        assert 0.2 < drawdown < 0.201  # half the book lost 40 %, and the costs
        dd = next(a for a in alerts if a["key"] == "drawdown:core:0.1")
        assert pd.Timestamp(dd["timestamp"]) == crash_at
        assert dd["numbers"]["drawdown"] == pytest.approx(drawdown, rel=1e-9)
        assert dd["numbers"]["peak"] == peak
        assert dd["numbers"]["equity"] == pytest.approx(equity, rel=1e-9)
        body = post_titled(receiver, dd["title"])
        assert dd["title"] == f"core: drawdown {drawdown:.1%} past 10.0%"
        assert f"to {drawdown:.1%} below its peak" in body["message"]
        assert f"({equity:,.0f} USDT against a peak of 10,000 USDT)" in body["message"]
        assert "What to do:" in body["message"] and "subaccount core" in body["message"]
        br = next(a for a in alerts if a["key"] == "breaker:core:active->halted")
        assert pd.Timestamp(br["timestamp"]) == crash_at
        body = post_titled(receiver, br["title"])
        assert br["title"] == "core: guard active -> halted"
        assert f"drawdown {drawdown:.1%}" in body["message"]
        assert body["type"] == "failure"  # apprise's type for a critical alert
    finally:
        store.close()


def delivered_crash(store: Store, receiver: Receiver) -> bool:
    """The crash's drawdown and breaker alerts are in the store and delivered, and no
    delivery is under way (each post received is recorded as delivered).

    A kill between apprise's POST and the store's record of it would deliver that alert
    again after the restart (the outbox is at least once: an alert is never lost), so the
    kill waits for a quiet outbox; the next alert is bars away."""
    try:
        alerts = {a["alert_id"]: a["key"] for a in store.alerts("crash")}
        rows = store.outbox("crash")
    except Exception:  # the run's tables are being created
        return False
    done = {alerts.get(r["alert_id"]) for r in rows if r["status"] == "delivered"}
    quiet = all(r["status"] == "delivered" for r in rows) and len(receiver.posts) == len(rows)
    return CRASH_KEYS <= done and quiet


def post_titled(receiver: Receiver, title: str) -> dict:
    [body] = [b for _, b in receiver.posts if b["title"] == title]
    return body


def test_a_40_percent_day_trips_the_daily_loss_breaker_on_daily_bars():
    """On daily bars the UTC day starts at the previous close (it once started at the
    bar's own close, so a daily loss was never seen)."""
    from trimtab.guard.breakers import BreakerConfig
    from trimtab.guard.safety import SafetyLayer

    guard = SafetyLayer(breakers=BreakerConfig(daily_loss_limit=0.10), subaccount="core")
    day = pd.Timestamp(START, tz="UTC")
    assert guard.on_bar(day, 10_000.0, 10_000.0, True) == []
    # the next daily bar closes 20 % lower: a 20 % loss over its UTC day
    changes = guard.on_bar(day + pd.Timedelta(days=1), 8_000.0, 10_000.0, True)
    assert [(c.scope, c.trigger) for c in changes] == [
        ("account", "daily_loss"),
        ("core", "daily_loss"),
    ]
