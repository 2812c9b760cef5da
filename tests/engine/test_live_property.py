"""Property: in approve mode, no order reaches the exchange without a person's approval.

Hypothesis draws what a person does before each bar (approve all or some legs of a
proposal, reject one, pause, resume, switch the mode between monitor and approve, close
everything, tighten a limit, or nothing) and when (between bars, or at the next cycle).
Whatever the sequence, every order the paper exchange holds for the subaccount is a leg
a person approved (an applied approve command naming it, or all legs) or a close a
person asked for. ``TRIMTAB_PROPERTY_EXAMPLES`` raises the number of sequences.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SHARED_DATA
from tests.engine._live import START, make_run, write_portfolio
from trimtab.engine.portfolio_file import load_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, prepare_portfolio

END = "2022-01-24"
APPROVE_ONLY = """
backtest: {timeframe: 1d}
runner: {review_every: 0, band: 0.5}
subaccounts:
  ask:
    strategy: equal-weight
    rule: calendar:daily
    symbols: [BTCUSDT, ETHUSDT, BNBUSDT]
    capital: 10000
    mode: approve
"""
EXAMPLES = int(os.environ.get("TRIMTAB_PROPERTY_EXAMPLES", "20"))

ACTIONS = st.one_of(
    st.just(("none",)),
    st.tuples(st.just("approve"), st.none() | st.lists(st.integers(0, 3), max_size=3)),
    st.just(("reject",)),
    st.just(("pause",)),
    st.just(("resume",)),
    st.tuples(st.just("mode"), st.sampled_from(["monitor", "approve"])),
    st.just(("close",)),
    st.tuples(st.just("limit"), st.sampled_from([0.2, 0.34, 0.5])),
)
STEP = st.tuples(ACTIONS, st.booleans())  # (what, applied at a tick rather than the cycle)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prop")
    path = write_portfolio(folder, APPROVE_ONLY, "ask.yaml")
    prepared = prepare_portfolio(
        load_portfolio(path), PortfolioOptions(data=str(SHARED_DATA), start=START, end=END)
    )
    return path, prepared


def _command(store, rid, action) -> None:
    kind = action[0]
    pending = [p for p in store.proposals(rid, status="pending")]
    if kind == "approve" and pending:
        store.add_command(
            rid,
            "approve",
            args={"proposal_id": pending[-1]["proposal_id"], "legs": action[1]},
            actor="tester",
            reason="",
        )
    elif kind == "reject" and pending:
        store.add_command(
            rid, "reject", args={"proposal_id": pending[-1]["proposal_id"]}, actor="t", reason=""
        )
    elif kind in ("pause", "resume"):
        store.add_command(rid, kind, subaccount="ask", actor="t", reason="")
    elif kind == "mode":
        store.add_command(
            rid, "mode", subaccount="ask", args={"mode": action[1]}, actor="t", reason="r"
        )
    elif kind == "close":
        store.add_command(rid, "close", subaccount="ask", args={"all": True}, actor="t", reason="")
    elif kind == "limit":
        store.add_command(
            rid,
            "limits",
            subaccount="ask",
            args={"key": "max_asset_weight", "value": action[1]},
            actor="t",
            reason="r",
        )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(STEP, min_size=5, max_size=16))
def test_no_order_reaches_the_exchange_in_approve_mode_without_an_approval(
    setup, tmp_path_factory, steps
):
    path, prepared = setup
    run = make_run(path, tmp_path_factory.mktemp("ex"), SHARED_DATA, prepared=prepared, end=END)
    r, store, rid = run.runner, run.store, run.run_id
    try:
        i = r.start()
        for action, at_tick in steps:
            if i > r.context.end_i:
                break
            _command(store, rid, action)
            if at_tick:
                r.tick()
            r.cycle(i)
            i += 1
        r.tick()
        # What a person allowed: legs named by an applied approval, and human closes.
        allowed: set[str] = set()
        for cmd in store.commands(rid):
            if cmd["status"] != "applied":
                continue
            if cmd["kind"] == "approve":
                p = store.proposal(rid, cmd["args"]["proposal_id"])
                legs = cmd["args"]["legs"]
                for leg in p["legs"]:
                    if (legs is None or leg["leg"] in legs) and leg["client_order_id"]:
                        allowed.add(leg["client_order_id"])
        closes = {
            cid
            for d in store.decisions(rid, "ask")
            if d.get("action") == "close" and d.get("policy") == "human"
            for cid in d.get("sent", [])
        }
        sent = {o.client_order_id for o in run.exchange.orders("ask")}
        assert sent <= allowed | closes, sorted(sent - allowed - closes)
        # and no decision of the policy sent anything itself
        for d in store.decisions(rid, "ask"):
            if d.get("policy") != "human":
                assert not d.get("sent"), d
    finally:
        run.close()
