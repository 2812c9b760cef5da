"""The runner on a replayed clock with the paper exchange: modes, proposals, the auto
envelope, human commands, the ledger against the exchange, every order traced."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_DATA
from tests.engine._live import START, make_run, write_portfolio
from trimtab.app.run import RunOptions
from trimtab.engine.portfolio_file import load_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, prepare_portfolio


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    path = write_portfolio(folder)
    portfolio = load_portfolio(path)
    prepared = prepare_portfolio(
        portfolio, PortfolioOptions(data=str(SHARED_DATA), start=START, end="2022-02-20")
    )
    return path, prepared


def fresh(setup, tmp_path):
    path, prepared = setup
    return make_run(path, tmp_path, SHARED_DATA, prepared=prepared)


def cycle_to(run, last: int) -> None:
    r = run.runner
    i = r.context.start_i if r.last_bar is None else r.last_bar + 1
    while i <= last:
        r.cycle(i)
        i += 1


def first_pending(store, run_id, sub):
    return next(
        (p for p in store.proposals(run_id, status="pending") if p["subaccount"] == sub), None
    )


def assert_ledger_is_the_exchange(run):
    """The runner's own ledger, built from the exchange's events, equals its books."""
    books = run.exchange.balances()
    for name, sub in run.runner.account.subaccounts.items():
        assert sub.cash == books[name]["cash"], name
        held = {s: p.quantity for s, p in sub.positions.items() if p.quantity}
        assert held == {s: q for s, q in books[name]["positions"].items() if q}, name


def test_monitor_sends_nothing_auto_stays_in_its_envelope(setup, tmp_path):
    run = fresh(setup, tmp_path)
    r, store = run.runner, run.store
    r.start()
    cycle_to(run, r.context.end_i)
    ex_orders = run.exchange.orders()
    by_sub = {n: [o for o in ex_orders if o.subaccount == n] for n in ("watch", "propose", "pilot")}
    # monitor: decisions recorded, no order anywhere
    assert store.decisions(run.run_id, "watch")
    assert by_sub["watch"] == []
    assert not [o for o in store.orders(run.run_id) if o["subaccount"] == "watch"]
    # approve, never approved: nothing reached the exchange
    assert by_sub["propose"] == []
    assert store.proposals(run.run_id) and all(
        p["status"] in ("expired",)
        for p in store.proposals(run.run_id)
        if p["subaccount"] == "propose"
    )
    # auto: every order within the envelope at the price it was planned at, and the
    # day's total too; larger ones became proposals
    rows = [o for o in store.orders(run.run_id, floats=True) if o["subaccount"] == "pilot"]
    assert rows and by_sub["pilot"]
    close = r.m.close
    per_day: dict[str, float] = {}
    for o in rows:
        price = close[o["bar"], r.m.column[o["symbol"]]]
        notional = o["quote_quantity"] if o["quote_quantity"] is not None else o["quantity"] * price
        assert notional <= 2600 * (1 + 1e-12)
        day = r.m.timestamps[o["bar"]].strftime("%Y-%m-%d")
        per_day[day] = per_day.get(day, 0.0) + notional
    assert max(per_day.values()) <= 6000 * (1 + 1e-12)
    envelope = [p for p in store.proposals(run.run_id) if p["source"] == "auto-envelope"]
    assert envelope, "the first buy-in (4 x 2,500 = 10,000 USDT) is beyond the day's 6,000"
    # the first day: two legs sent (2 x 2,500 = 5,000), the others proposed
    first_day = min(per_day)
    assert per_day[first_day] == pytest.approx(5000.0, rel=1e-12)
    assert_ledger_is_the_exchange(run)
    # every order traces to its decision and that decision's reasons
    for o in store.orders(run.run_id):
        decisions = {d["id"]: d for d in store.decisions(run.run_id, o["subaccount"])}
        record = decisions[o["decision_id"]]
        assert record["reasons"] and o["client_order_id"] in record.get("sent", [])
    run.close()


def test_approve_sends_exactly_the_approved_legs_and_nothing_after_expiry(setup, tmp_path):
    run = fresh(setup, tmp_path)
    r, store, rid = run.runner, run.store, run.run_id
    i = r.start()
    while first_pending(store, rid, "propose") is None:
        r.cycle(i)
        i += 1
    p = first_pending(store, rid, "propose")
    assert len(p["legs"]) == 2 and p["expires_at"] > p["timestamp"]
    store.add_command(
        rid,
        "approve",
        args={"proposal_id": p["proposal_id"], "legs": [1]},
        actor="ana",
        reason="BTC only later",
    )
    r.tick()  # within one tick, not a cycle
    [cmd] = store.commands(rid)
    assert cmd["status"] == "applied", cmd["outcome"]
    sent = [o for o in run.exchange.orders() if o.subaccount == "propose"]
    leg1 = next(leg for leg in store.proposal(rid, p["proposal_id"])["legs"] if leg["leg"] == 1)
    assert [o.client_order_id for o in sent] == [leg1["client_order_id"]]
    assert sent[0].symbol == leg1["symbol"]
    assert store.proposal(rid, p["proposal_id"])["status"] == "sent"
    # the next proposal expires unapproved; approving it afterwards sends nothing
    while True:
        r.cycle(i)
        i += 1
        q = first_pending(store, rid, "propose")
        if q is not None:
            break
    r.cycle(i)
    i += 1
    r.cycle(i)
    gone = store.proposal(rid, q["proposal_id"])
    assert gone["status"] == "expired"
    store.add_command(
        rid,
        "approve",
        args={"proposal_id": q["proposal_id"], "legs": None},
        actor="ana",
        reason="late",
    )
    r.tick()
    late = store.commands(rid)[-1]
    assert late["status"] == "refused" and "expired" in late["outcome"]
    assert [o.client_order_id for o in run.exchange.orders() if o.subaccount == "propose"] == [
        leg1["client_order_id"]
    ]
    assert_ledger_is_the_exchange(run)
    run.close()


def test_pause_close_and_a_lowered_limit_act_by_the_next_cycle(setup, tmp_path):
    run = fresh(setup, tmp_path)
    r, store, rid = run.runner, run.store, run.run_id
    i = r.start()
    for _ in range(5):
        r.cycle(i)
        i += 1
    pilot = r.account.subaccount("pilot")
    assert pilot.positions
    # a lower weight cap: the next decision's targets respect it
    store.add_command(
        rid,
        "limits",
        subaccount="pilot",
        args={"key": "max_asset_weight", "value": 0.2},
        actor="ana",
        reason="less concentration",
    )
    r.cycle(i)
    i += 1
    rec = store.decisions(rid, "pilot")[-1]
    assert rec["targets"] and max(rec["targets"].values()) <= 0.2 + 1e-12
    assert store.overrides(rid)[-1]["key"] == "max_asset_weight"
    assert r.subs["pilot"].step.safety.limits.limits.max_asset_weight == 0.2
    # pause: nothing new reaches the exchange
    store.add_command(rid, "pause", subaccount="pilot", actor="ana", reason="news")
    before = len(run.exchange.orders("pilot"))
    for _ in range(3):
        r.cycle(i)
        i += 1
    assert len(run.exchange.orders("pilot")) == before
    assert store.decisions(rid, "pilot")[-1].get("paused") is True
    # resume, then close everything: reduce-only sells, flat after the next bar, paused
    store.add_command(rid, "resume", subaccount="pilot", actor="ana", reason="")
    r.cycle(i)
    i += 1
    store.add_command(
        rid, "close", subaccount="pilot", args={"all": True}, actor="ana", reason="risk off"
    )
    r.tick()
    close_rec = store.decisions(rid, "pilot")[-1]
    assert close_rec["action"] == "close" and close_rec["reasons"][0]["by"] == "ana"
    closing = [o for o in run.exchange.orders("pilot") if o.client_order_id in close_rec["sent"]]
    assert closing and all(o.side == "sell" for o in closing)
    r.cycle(i)
    i += 1
    assert not {s: p for s, p in r.account.subaccount("pilot").positions.items() if p.quantity}
    assert r.subs["pilot"].paused
    kinds = [(c["kind"], c["status"]) for c in store.commands(rid)]
    assert kinds == [
        ("limits", "applied"),
        ("pause", "applied"),
        ("resume", "applied"),
        ("close", "applied"),
    ]
    # monitor never sends, not even a human close
    store.add_command(rid, "close", subaccount="watch", args={"all": True}, actor="ana", reason="")
    r.tick()
    assert store.commands(rid)[-1]["status"] == "refused"
    assert run.exchange.orders("watch") == []
    assert_ledger_is_the_exchange(run)
    run.close()


def test_a_stopped_run_carries_on_as_if_never_stopped(setup, tmp_path):
    path, prepared = setup
    whole = make_run(path, tmp_path / "a", SHARED_DATA, prepared=prepared)
    whole.run()
    stopped = make_run(path, tmp_path / "b", SHARED_DATA, prepared=prepared)
    r = stopped.runner
    mid = r.context.start_i + 17
    stopped.run(until=mid)
    again = make_run(path, tmp_path / "b", SHARED_DATA, prepared=prepared)
    again.run()
    from trimtab.journal.store import Store

    a, b = Store.open(tmp_path / "a" / "store.db"), Store.open(tmp_path / "b" / "store.db")
    strip = lambda rows, keys: [{k: v for k, v in row.items() if k not in keys} for row in rows]  # noqa: E731
    wall = {"created_at", "updated_at", "seq"}
    assert strip(a.orders("paper"), wall) == strip(b.orders("paper"), wall)
    assert strip(a.fills("paper"), wall | {"fill_id"}) == strip(
        b.fills("paper"), wall | {"fill_id"}
    )
    assert strip(a.balances("paper"), wall) == strip(b.balances("paper"), wall)
    assert [p["legs"] for p in a.proposals("paper")] == [p["legs"] for p in b.proposals("paper")]


def test_bad_options_are_clear_errors(setup, tmp_path):
    from trimtab.app.run import build_run

    path, _ = setup
    with pytest.raises(ValueError, match="--replay"):
        build_run(load_portfolio(path), RunOptions(db=f"sqlite:///{tmp_path}/s.db"))
    bad = write_portfolio(tmp_path, "subaccounts:\n  a: {capital: 100, mode: auto}\n", "bad.yaml")
    with pytest.raises(ValueError, match="envelope"):
        load_portfolio(bad)


def test_a_second_runner_on_a_running_run_is_refused(setup, tmp_path):
    import socket
    import subprocess
    import sys

    from trimtab.journal.store import StoreError

    first = fresh(setup, tmp_path)
    first.runner.start()
    start_i = first.runner.context.start_i
    first.runner.cycle(start_i)
    first.close()
    # Another process of this machine says it runs the run: a second start is refused.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from trimtab.journal.store import Store

        with Store.open(tmp_path / "store.db") as store:
            store.save_heartbeat(
                "paper",
                {
                    "pid": sleeper.pid,
                    "host": socket.gethostname(),
                    "status": "running",
                    "tick_seconds": 1,
                },
            )
        second = fresh(setup, tmp_path)
        with pytest.raises(StoreError, match="already running"):
            second.runner.start()
        second.close()
    finally:
        sleeper.kill()
        sleeper.wait()
    # Once that process is gone (as after a SIGKILL: its heartbeat still says running),
    # the run is taken up at the next bar.
    third = fresh(setup, tmp_path)
    assert third.runner.start() == start_i + 1
    third.close()
