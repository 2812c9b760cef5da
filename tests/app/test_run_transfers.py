"""``trimtab run`` makes a portfolio file's dated ``transfers`` and its
``rebalance_capital`` rule, as a backtest of the file asks for them: each request checked
by the transfer guard, booked at its close, written to the store and made on the paper
exchange in auto mode; recorded as ``not_made`` with why in monitor mode."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import SHARED_DATA
from trimtab.app.run import RunOptions, build_run
from trimtab.cli import app
from trimtab.engine.portfolio_file import load_portfolio
from trimtab.journal.store import Store
from trimtab.policy.transfers import CapitalRebalance, capital_moves

START, END = "2021-01-04", "2021-03-10"

# Each subaccount holds 40 % (BTC and ETH, or ETH alone, rebalanced weekly: their shares
# drift apart) and keeps 60 % in cash, free to leave it under the default limits (the
# transfer guard's check).
FILE = """
backtest: {timeframe: 1d}
runner: {tick_seconds: 0.05, review_every: 0}
subaccounts:
  core:
    strategy: fixed
    rule: calendar:weekly
    weights: {BTCUSDT: 0.2, ETHUSDT: 0.2}
    symbols: [BTCUSDT, ETHUSDT]
    capital: 30000
    mode: MODE
    envelope: {max_order_notional: 1000000}
  satellite:
    strategy: fixed
    rule: calendar:weekly
    weights: {ETHUSDT: 0.4}
    symbols: [BTCUSDT, ETHUSDT]
    capital: 10000
    mode: MODE
    envelope: {max_order_notional: 1000000}
transfers:
  - {at: 2021-01-15, from: core, to: satellite, amount: 2500, reason: top up}
  - {at: 2021-06-01, from: core, to: satellite, amount: 100}
rebalance_capital: {every: monthly, shares: {core: 0.6, satellite: 0.4}, band: 0.01}
"""
RULE = CapitalRebalance("monthly", {"core": 0.6, "satellite": 0.4}, 0.01)


def run(folder: Path, mode: str) -> tuple[list[dict], list[dict]]:
    """The file replayed in ``mode``: the store's transfers and balances (floats)."""
    folder.mkdir()
    path = folder / "portfolio.yaml"
    path.write_text(FILE.replace("MODE", mode))
    url = f"sqlite:///{folder / 'store.db'}"
    build_run(
        load_portfolio(path),
        RunOptions(db=url, run_id="tx", replay=str(SHARED_DATA), start=START, end=END),
    ).run()
    with Store.open(url) as store:
        return store.transfers("tx", floats=True), store.balances("tx", floats=True)


def status(folder: Path, *extra: str) -> str:
    result = CliRunner().invoke(
        app, ["status", "--db", f"sqlite:///{folder / 'store.db'}", "--run-id", "tx", *extra]
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_dated_transfers_and_the_capital_rule_are_made_in_auto_mode(tmp_path):
    made, balances = run(tmp_path / "auto", "auto")
    equity = {(pd.Timestamp(r["timestamp"]), r["subaccount"]): float(r["equity"]) for r in balances}
    flow = {key: 0.0 for key in equity}
    for t in made:
        ts = pd.Timestamp(t["timestamp"])
        flow[(ts, t["source"])] -= t["amount"]
        flow[(ts, t["target"])] += t["amount"]
    # The dated one at its day; the rule at the first close of February and of March when
    # the shares are off by more than the band (the run's first bar has no bar before it:
    # no period starts there, as in a backtest); the one dated after the run's end never.
    dated, *rule = made
    assert pd.Timestamp(dated["timestamp"]) == pd.Timestamp("2021-01-15", tz="UTC")
    assert (dated["source"], dated["target"], dated["reason"]) == ("core", "satellite", "top up")
    assert dated["status"] == "done" and dated["amount"] == 2500.0
    assert dated["guard"]["status"] == "done" and dated["guard"]["requested"] == 2500.0
    by_day = {pd.Timestamp(t["timestamp"]): t for t in rule}
    assert len(by_day) == len(rule) and pd.Timestamp("2021-02-01", tz="UTC") in by_day
    for day in ("2021-02-01", "2021-03-01"):
        # What the rule asks for on the equities before the move (the store's, less it).
        ts = pd.Timestamp(day, tz="UTC")
        now = {n: equity[(ts, n)] - flow[(ts, n)] for n in ("core", "satellite")}
        wants = capital_moves(ts, RULE, now)
        if ts not in by_day:
            assert wants == []  # within the band: nothing asked
            continue
        t, [want] = by_day[ts], wants
        assert (t["source"], t["target"]) == (want.source, want.target)
        assert t["guard"]["requested"] == pytest.approx(want.amount, rel=1e-12)
        assert t["status"] == "done" and t["amount"] == t["guard"]["moved"] > 0
        after = equity[(ts, "core")] / (equity[(ts, "core")] + equity[(ts, "satellite")])
        assert after == pytest.approx(0.6, abs=1e-9)  # the shares restored at that close
    ids = [t["guard"]["transfer_id"] for t in made]
    assert ids == [f"tx:t{t['bar']}:0" for t in made]
    # `trimtab status` shows them, newest first.
    doc = json.loads(status(tmp_path / "auto", "--json"))
    shown = doc["recent_transfers"]
    assert [(t["status"], t["origin"], t["moved"]) for t in shown] == [
        (t["status"], t["guard"]["origin"], t["amount"]) for t in made[::-1]
    ]
    text = status(tmp_path / "auto")
    assert "Recent transfers (newest first)" in text and "2,500.00" in text and "top up" in text


def test_in_monitor_mode_each_is_recorded_not_made(tmp_path):
    rows, balances = run(tmp_path / "monitor", "monitor")
    # Asked for as in auto mode: the dated one, then the rule at each month's first close;
    # nothing moves, so core stays at 30,000 of 40,000 (75 %), 0.15 x 40,000 above its 60 %.
    assert [(r["guard"]["origin"], r["status"], r["amount"]) for r in rows] == [
        ("scheduled", "not_made", 2500.0),
        ("rebalance_capital", "not_made", 6000.0),
        ("rebalance_capital", "not_made", 6000.0),
    ]
    assert all("monitor" in r["guard"]["not_made"] for r in rows)
    [last] = json.loads(status(tmp_path / "monitor", "--json"))["recent_transfers"][:1]
    assert (last["moved"], last["requested"], last["status"]) == (0.0, 6000.0, "not_made")
    assert last["why"].startswith("monitor mode (core, satellite)")
    # Nothing moved: each subaccount ends with the cash it started with.
    end = {r["subaccount"]: float(r["equity"]) for r in balances[-3:]}
    assert end == {"*account": 40000.0, "core": 30000.0, "satellite": 10000.0}
