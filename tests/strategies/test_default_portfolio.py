"""The default portfolio (examples/portfolio.yaml, what ``trimtab demo`` runs)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from trimtab.engine.portfolio_file import load_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, run_portfolio

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "portfolio.yaml"
PACKAGED = ROOT / "src" / "trimtab" / "default_portfolio.yaml"


def test_the_packaged_default_is_the_example():
    assert PACKAGED.read_text() == EXAMPLE.read_text()


def test_core_trend_and_carry_under_the_allocator_in_monitor_mode():
    p = load_portfolio(EXAMPLE).settings
    assert {n: s.strategy for n, s in p.subaccounts.items()} == {
        "core": "core",
        "trend": "trend",
        "carry": "carry",
    }
    assert p.allocator is not None and p.allocator.every == "monthly"
    assert {s.mode for s in p.subaccounts.values()} == {"monitor"}


def test_the_default_portfolio_runs_and_allocates(daily_panel):
    portfolio = load_portfolio(EXAMPLE)
    run = run_portfolio(
        portfolio, PortfolioOptions(start="2020-06-01", end="2021-12-31"), panel=daily_panel
    )
    assert set(run.subaccounts) == {"core", "trend", "carry"}
    for name in ("core", "trend"):
        assert len(run.subaccounts[name].trades) > 0, name
    # The allocator decided every month once two subaccounts had 60 bars of returns.
    records = [r for r in run.allocations if r["strategies"]]
    assert len(records) >= 14
    assert all(abs(sum(r["targets"].values()) - 1) < 1e-9 for r in records), [
        r["targets"] for r in records
    ]
    assert all(0.10 - 1e-9 <= v <= 0.50 + 1e-9 for r in records for v in r["targets"].values())
    # Total equity is the sum of the subaccounts' at every close.
    frame = run.equity_frame()
    pd.testing.assert_series_equal(
        frame["total"], frame[["core", "trend", "carry"]].sum(axis=1), check_names=False
    )
    # Only the carry subaccount ever holds a perpetual.
    for name in ("core", "trend"):
        trades = run.subaccounts[name].trades
        assert not trades["symbol"].str.endswith("-PERP").any(), name
