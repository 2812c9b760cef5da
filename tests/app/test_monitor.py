"""The monitor on hand-made cycle reports, a real SQLite store and a real local HTTP
receiver: reviews written, alerts raised on crossings and delivered, a restart resumes
the pulse and the outbox, deliveries that fail never raise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.app.receiver import Receiver
from trimtab.app.monitor import PULSE_STATE, Monitor, holdings_of
from trimtab.config import parse_alert_settings
from trimtab.domain import perpetual, spot
from trimtab.engine.cycle import CycleReport, SubaccountCycle
from trimtab.journal.store import Store

RUN = "paper-mon"
TOKEN = "tok-monitor-4411aa77"


@pytest.fixture
def panel(make_panel):
    rng = np.random.default_rng(3)
    n = 120
    closes = {
        "BTCUSDT": list(30000 * np.cumprod(1 + rng.normal(0, 0.02, n))),
        "ETHUSDT": list(2000 * np.cumprod(1 + rng.normal(0, 0.03, n))),
    }
    return make_panel(closes)


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "run.db")
    s.start_run(RUN, kind="paper", spec={"t": 1})
    yield s
    s.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def settings(monkeypatch, receiver):
    monkeypatch.setenv("TT_MON_URL", f"json://127.0.0.1:{receiver.port}/{TOKEN}")
    return parse_alert_settings(
        {
            "notify": {"phone": {"url_env": "TT_MON_URL"}},
            "rules": [
                {"kind": "breaker"},
                {"kind": "drawdown", "level": 0.10},
                {"kind": "risk_score", "level": 1},
            ],
        }
    )


def report(panel, i, *, state="active", before="active", equity=10_000.0, peak=10_000.0, qty=0.1):
    ts = panel.index[i]
    price = float(panel.close["BTCUSDT"].iloc[i])
    sub = SubaccountCycle(
        name="core",
        mode="monitor",
        paused=False,
        trading_state=state,
        previous_trading_state=before,
        equity=equity,
        peak=peak,
        cash=equity - qty * price,
        positions={"BTCUSDT": qty} if qty else {},
        marks={"BTCUSDT": price},
    )
    idle = SubaccountCycle(
        name="idle",
        mode="monitor",
        paused=False,
        trading_state="active",
        previous_trading_state="active",
        equity=500.0,
        peak=500.0,
        cash=500.0,
        positions={},
        marks={},
    )
    return CycleReport(
        run_id=RUN,
        bar=i,
        timestamp=ts,
        account_equity=equity + 500.0,
        account_state=None,
        subaccounts={"core": sub, "idle": idle},
        instruments={"BTCUSDT": spot("BTCUSDT")},
        panel=panel.slice(None, ts),
    )


def test_reviews_alerts_and_delivery(panel, store, receiver, settings):
    receiver.start()
    mon = Monitor(settings)
    mon.on_cycle(report(panel, 100), store)
    reviews = store.latest_reviews(RUN)
    assert sorted(reviews) == ["account", "core"]  # idle holds nothing: no review of its own
    core = reviews["core"]["payload"]
    assert core["positions"][0]["symbol"] == "BTCUSDT" and core["risk_score"] > 1
    # The first cycle: the risk score is past level 1 (nothing before it): one alert.
    assert [a["rule"] for a in store.alerts(RUN)] == ["risk_score", "risk_score"]
    assert len(receiver.posts) == 2
    assert store.load_state(RUN, PULSE_STATE)["subaccounts"]["core"]["risk_score"] == pytest.approx(
        core["risk_score"]
    )
    # The guard halts and the drawdown goes past 10 %: core's 1 - 8,800 / 10,000 = 12 %,
    # the account's 1 - 9,300 / 10,500 = 11.4 % (its peak is the most equity seen).
    mon.on_cycle(report(panel, 101, state="halted", equity=8_800.0), store)
    new = store.alerts(RUN)[2:]
    assert [(a["rule"], a["subaccount"], a["severity"]) for a in new] == [
        ("breaker", "core", "critical"),
        ("drawdown", "core", "warning"),
        ("drawdown", None, "warning"),
    ]
    assert new[2]["numbers"]["drawdown"] == pytest.approx(1 - 9_300 / 10_500)
    titles = [b["title"] for _, b in receiver.posts]
    assert "core: guard active -> halted" in titles
    dd = next(b for _, b in receiver.posts if b["title"].startswith("core: drawdown"))
    assert "12.0%" in dd["message"] and "8,800 USDT" in dd["message"]
    assert {r["status"] for r in store.outbox(RUN)} == {"delivered"}
    # Still halted (no change) and still past 10 %: nothing new.
    mon.on_cycle(report(panel, 102, state="halted", before="halted", equity=8_700.0), store)
    assert len(store.alerts(RUN)) == 5 and len(receiver.posts) == 5


def test_receiver_down_never_raises_and_a_restart_delivers(tmp_path, panel, receiver, settings):
    path = tmp_path / "restart.db"
    first = Store.open(path)
    first.start_run(RUN, kind="paper", spec={"t": 1})
    mon = Monitor(settings, review_every=0)  # deliveries due by the real wall clock
    mon.on_cycle(report(panel, 100, state="halted", equity=8_000.0), first)  # receiver down
    # core halted and its drawdown 20 %; the account's peak is what the monitor has seen
    # (this first equity), so no account drawdown yet.
    assert mon.last_delivery is not None and len(mon.last_delivery.retrying) == 2
    assert {r["status"] for r in first.outbox(RUN)} == {"pending"}
    first.close()
    # A new process: a new store object and a new monitor on the same file.
    receiver.start()
    second = Store.open(path)
    try:
        again = Monitor(
            settings,
            review_every=0,
            wall_clock=lambda: pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=2),
        )
        # The same state as before the restart: no crossing, no new alert ...
        again.on_cycle(report(panel, 101, state="halted", before="halted", equity=8_000.0), second)
        assert again.last_alerts == []
        # ... and what was left in the outbox goes out, once each.
        assert len(again.last_delivery.delivered) == 2
        assert sorted(b["title"] for _, b in receiver.posts) == [
            "core: drawdown 20.0% past 10.0%",
            "core: guard active -> halted",
        ]
        again.on_cycle(report(panel, 102, state="halted", before="halted", equity=8_000.0), second)
        assert len(receiver.posts) == 2
    finally:
        second.close()
    assert TOKEN.encode() not in path.read_bytes()


def test_review_every_n_bars(panel, store, settings):
    mon = Monitor(settings, review_every=3, deliver=False)
    reviewed = []
    for i in range(100, 107):
        mon.on_cycle(report(panel, i), store)
        reviewed.append(store.latest_reviews(RUN)["core"]["bar"])
    assert reviewed == [100, 100, 100, 103, 103, 103, 106]


def test_holdings_of_a_report(panel):
    r = report(panel, 100, qty=0.2)
    h = holdings_of(r)
    assert h.subaccounts["core"].spot["BTCUSDT"].quantity == 0.2
    assert h.subaccounts["idle"].cash == {"USDT": 500.0}
    perp_report = CycleReport(
        **{
            **r.__dict__,
            "subaccounts": {
                "core": SubaccountCycle(
                    **{**r.subaccounts["core"].__dict__, "positions": {"BTCUSDT": -0.5}}
                )
            },
            "instruments": {"BTCUSDT": perpetual("BTCUSDT")},
        }
    )
    [p] = holdings_of(perp_report).subaccounts["core"].perps
    assert p.side == "short" and p.size == 0.5 and p.leverage == 1.0
