"""The paper walkthrough as a new user runs it: ``examples/paper.yaml`` replayed by
``trimtab run`` in separate processes, with the control commands between runs (the
runner is down, so each command is applied at its next start), all through the
installed console script on a real SQLite store and the paper exchange's own file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests._cli import as_json, one_line_error, trimtab
from tests.conftest import SHARED_DATA
from trimtab.journal.store import Store

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "paper.yaml"
D1 = "2022-01-03"  # a Monday: the weekly rules trade on the first bar of each week
DAY = pd.Timedelta(days=1)


def day(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%d")


def test_the_paper_walkthrough(tmp_path, daily_bars):
    portfolio = tmp_path / "paper.yaml"
    # The example as shipped, without its scheduled review (the monitor's own tests and
    # the README's commands run it): a review a bar in each of its runs triples the time.
    text = EXAMPLE.read_text()
    assert "review_every: 1" in text
    portfolio.write_text(text.replace("review_every: 1", "review_every: 0"))
    url = f"sqlite:///{tmp_path / 'runs' / 'paper.db'}"
    db = ("--db", url)

    def run(to: pd.Timestamp) -> str:
        out = trimtab(
            "run", "--portfolio", str(portfolio), "--replay", str(SHARED_DATA),
            "--from", D1, "--to", day(to), *db, cwd=tmp_path,
        )  # fmt: skip
        return out.stdout

    def pending_of(sub: str) -> list[dict]:
        rows = as_json(trimtab("proposals", "--json", *db, cwd=tmp_path))
        assert all(p["status"] == "pending" for p in rows)
        return [p for p in rows if p["subaccount"] == sub]

    # 1. Run to a bar where the approve-mode subaccount's weekly rebalance waits for a
    # person (the next Monday; a later day if the data has no trade there).
    d2 = pd.Timestamp("2022-01-10")
    summary = run(d2)
    waiting = pending_of("propose")
    while not waiting:
        assert d2 < pd.Timestamp(D1) + 21 * DAY, "no proposal of 'propose' in three weeks"
        d2 += DAY
        summary = run(d2)
        waiting = pending_of("propose")
    assert "propose" in summary and "pending proposals" in summary
    [proposal] = waiting
    assert proposal["source"] == "approve-mode" and len(proposal["legs"]) == 2
    assert pd.Timestamp(proposal["timestamp"]) == pd.Timestamp(d2, tz="UTC")
    assert all(leg["client_order_id"] is None for leg in proposal["legs"])
    pid = proposal["proposal_id"]

    # 2. Approve one leg while the runner is down: written, applied at the next start.
    receipt = as_json(
        trimtab("approve", str(pid), "--legs", "0", "--json", "--by", "ana", *db, cwd=tmp_path)
    )
    assert receipt["kind"] == "approve" and receipt["status"] == "pending"
    assert receipt["args"] == {"proposal_id": pid, "legs": [0]}
    assert receipt["runner_alive"] is False and "next start" in receipt["takes_effect"]
    status = as_json(trimtab("status", "--json", *db, cwd=tmp_path))
    assert status["heartbeat"]["alive"] is False
    assert [(c["kind"], c["status"]) for c in status["pending_commands"]] == [
        ("approve", "pending")
    ]
    assert [p["proposal_id"] for p in status["pending_proposals"] if p["subaccount"] == "propose"]
    assert status["state"]["timestamp"] == pd.Timestamp(d2, tz="UTC").isoformat()

    # Mistakes are one line and exit code 2.
    unknown = trimtab("approve", "987654", "--by", "ana", *db, cwd=tmp_path, code=2)
    assert "987654" in one_line_error(unknown)
    bad_key = trimtab(
        "limits", "set", "max_coffee", "1", "--reason", "x", "--by", "ana", *db,
        cwd=tmp_path, code=2,
    )  # fmt: skip
    assert "max_coffee" in one_line_error(bad_key)

    # 3. Carry on one week: the approved leg leaves at start, and only it.
    d3 = d2 + 7 * DAY
    run(d3)
    store = Store.open(url)
    try:
        run_id = "paper"
        [approve] = [c for c in store.commands(run_id) if c["kind"] == "approve"]
        assert approve["status"] == "applied", approve["outcome"]
        assert approve["applied_timestamp"] == pd.Timestamp(d2, tz="UTC")  # before any new bar
        done = store.proposal(run_id, pid)
        assert done["status"] == "sent"
        leg0, leg1 = sorted(done["legs"], key=lambda leg: leg["leg"])
        assert leg0["client_order_id"] and leg1["client_order_id"] is None
        orders = store.orders(run_id, floats=True)
        from_proposal = [
            o
            for o in orders
            if o["subaccount"] == "propose" and o["decision_id"] == done["decision_id"]
        ]
        assert [o["client_order_id"] for o in from_proposal] == [leg0["client_order_id"]]
        assert from_proposal[0]["status"] in ("sent", "filled")
        assert from_proposal[0]["symbol"] == leg0["symbol"]
        assert from_proposal[0]["filled_quantity"] > 0  # filled at the next bar's open
        # monitor: decisions, never an order
        assert store.decisions(run_id, "watch")
        assert not [o for o in orders if o["subaccount"] == "watch"]
        # auto: every order and every UTC day inside the envelope (3,000 / 6,000 USDT),
        # priced at the close it was planned at
        closes = daily_bars.set_index(["timestamp", "symbol"])["close"]
        pilot = [o for o in orders if o["subaccount"] == "pilot"]
        assert pilot
        per_day: dict[str, float] = {}
        for o in pilot:
            notional = o["quote_quantity"]
            if notional is None:
                notional = o["quantity"] * closes[(o["timestamp"], o["symbol"])]
            assert notional <= 3000 * (1 + 1e-12), o
            key = day(o["timestamp"])
            per_day[key] = per_day.get(key, 0.0) + notional
        assert max(per_day.values()) <= 6000 * (1 + 1e-12)
        pilot_before = {o["client_order_id"] for o in pilot}
    finally:
        store.close()

    # 4. Pause the auto subaccount, lower its weight cap, put the monitor in approve
    # mode; run one more week.
    by = ("--by", "ana")
    trimtab("pause", "--subaccount", "pilot", *by, *db, cwd=tmp_path)
    trimtab(
        "limits", "set", "max_asset_weight", "0.2", "--subaccount", "pilot",
        "--reason", "less concentration", *by, *db, cwd=tmp_path,
    )  # fmt: skip
    trimtab("mode", "set", "watch", "approve", "--reason", "ready to trade", *by, *db, cwd=tmp_path)
    d4 = d3 + 7 * DAY
    run(d4)
    commands = as_json(trimtab("commands", "--json", *db, cwd=tmp_path))
    by_kind = {c["kind"]: c for c in commands}
    assert [c["kind"] for c in commands] == ["approve", "pause", "limits", "mode"]
    for kind in ("pause", "limits", "mode"):
        c = by_kind[kind]
        assert c["status"] == "applied" and c["outcome"], c
        assert c["actor"] == "ana"
        assert c["applied_timestamp"] == pd.Timestamp(d3, tz="UTC").isoformat()
    assert by_kind["limits"]["args"] == {"key": "max_asset_weight", "value": 0.2}
    assert by_kind["limits"]["reason"] == "less concentration"
    assert by_kind["mode"]["args"] == {"mode": "approve"}
    assert "0.2" in by_kind["limits"]["outcome"]
    status = as_json(trimtab("status", "--json", *db, cwd=tmp_path))
    subs = status["state"]["subaccounts"]
    assert subs["pilot"]["paused"] is True
    assert subs["pilot"]["limits"]["max_asset_weight"] == 0.2
    assert subs["watch"]["mode"] == "approve"
    assert status["state"]["timestamp"] == pd.Timestamp(d4, tz="UTC").isoformat()
    store = Store.open(url)
    try:
        orders = store.orders("paper")
        pilot_after = {o["client_order_id"] for o in orders if o["subaccount"] == "pilot"}
        assert pilot_after == pilot_before, "the paused subaccount sent an order"
        assert not [o for o in orders if o["subaccount"] == "watch"]
        later = [
            d
            for d in store.decisions("paper", "pilot")
            if pd.Timestamp(d["timestamp"]) > pd.Timestamp(d3, tz="UTC")
        ]
        assert later and all(d.get("paused") is True for d in later)
        # in approve mode the former monitor proposes its weekly rebalance
        assert [
            p
            for p in store.proposals("paper")
            if p["subaccount"] == "watch" and p["timestamp"] > pd.Timestamp(d3, tz="UTC")
        ]
    finally:
        store.close()


@pytest.fixture(autouse=True)
def _the_example_exists():
    assert EXAMPLE.is_file(), EXAMPLE
