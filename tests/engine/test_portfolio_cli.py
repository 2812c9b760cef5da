"""Many subaccounts end to end: `trimtab backtest --portfolio`, its files, the transfer
journal, and isolation (one subaccount wiped out leaves the others exactly as they were)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import SHARED_DATA, synthetic_bars
from trimtab.cli import app
from trimtab.data.panel import panel_from_long
from trimtab.domain.decisions import json_ready
from trimtab.engine.portfolio_file import parse_portfolio
from trimtab.engine.portfolio_run import TOTAL, PortfolioOptions, run_portfolio

PORTFOLIO = """
backtest: {start: 2022-01-01, end: 2022-03-31}
account:
  limits: {max_drawdown: 0.9}
  transfers: {max_transfer: 8000}
subaccounts:
  core: {strategy: equal-monthly, symbols: [BTCUSDT, ETHUSDT, BNBUSDT], capital: 40000}
  managed: {strategy: managed, universe: top:5, capital: 30000, limits: {min_cash: 0.2}}
  btc: {strategy: btc-hold, capital: 20000}
  pair: {strategy: fixed, weights: {BTCUSDT: 0.5, ETHUSDT: 0.3}, capital: 10000}
transfers:
  - {at: 2022-01-10, from: pair, to: core, amount: 1000, reason: "within free cash"}
  - {at: 2022-01-20, from: btc, to: core, amount: 5000, reason: "btc holds no cash"}
  - {at: 2022-02-01, from: pair, to: btc, amount: 6000, partial: true, reason: "cut to free cash"}
  - {at: 2022-02-15, from: managed, to: core, amount: 20000, partial: true, reason: "cut to max_transfer"}
"""


@pytest.fixture(scope="module")
def portfolio_out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("portfolio")
    path = folder / "portfolio.yaml"
    path.write_text(PORTFOLIO)
    out = folder / "run"
    result = CliRunner().invoke(
        app,
        ["backtest", "--portfolio", str(path), "--data", str(SHARED_DATA), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_every_subaccount_and_the_total_are_reported_and_written(portfolio_out):
    out, output = portfolio_out
    names = ["core", "managed", "btc", "pair"]
    for name in [*names, "TOTAL"]:
        assert name in output
    doc = json.loads((out / "result.json").read_text())
    assert list(doc["subaccounts"]) == names
    assert doc["initial_cash"] == 100_000 and doc["start"].startswith("2022-01-01")
    for name in names:
        folder = out / "subaccounts" / name
        for file in (
            "result.json",
            "equity.csv",
            "trades.csv",
            "decisions.jsonl",
            "rejections.csv",
        ):
            assert (folder / file).is_file(), (name, file)
        sub = json.loads((folder / "result.json").read_text())
        assert sub["metrics"] == doc["subaccounts"][name]["metrics"]
        equity = pd.read_csv(folder / "equity.csv", index_col=0)["equity"]
        assert sub["metrics"]["end_equity"] == pytest.approx(equity.iloc[-1], rel=1e-9)
        assert len(pd.read_csv(folder / "trades.csv")) > 0
    assert doc["total"]["metrics"] == doc["metrics"]


def test_total_equity_is_the_sum_of_the_subaccounts_at_every_bar(portfolio_out):
    out, _ = portfolio_out
    frame = pd.read_csv(out / "equity.csv", index_col=0)
    assert list(frame.columns) == [TOTAL, "core", "managed", "btc", "pair"]
    parts = frame.drop(columns=TOTAL).sum(axis=1)
    np.testing.assert_allclose(frame[TOTAL], parts, rtol=1e-9)
    doc = json.loads((out / "result.json").read_text())
    end = sum(s["metrics"]["end_equity"] for s in doc["subaccounts"].values())
    assert doc["metrics"]["end_equity"] == pytest.approx(end, rel=1e-12)
    # Each subaccount's own files agree with the total's columns.
    for name in ("core", "btc"):
        own = pd.read_csv(out / "subaccounts" / name / "equity.csv", index_col=0)["equity"]
        np.testing.assert_allclose(own.to_numpy(), frame[name].to_numpy(), rtol=1e-9)


def test_transfers_are_journaled_with_the_guards_outcome(portfolio_out):
    out, output = portfolio_out
    rows = pd.read_csv(out / "transfers.csv", keep_default_na=False)
    assert list(rows["status"]) == ["done", "refused", "cut", "cut"]
    done, refused, cut, capped = rows.to_dict("records")
    assert done["moved"] == 1000 and done["checks"] == ""
    # More than the free cash, not allowed in part: refused, nothing moves.
    assert refused["moved"] == 0 and "btc has" in refused["checks"] and "free" in refused["checks"]
    assert 0 < cut["moved"] < 6000 and "pair has" in cut["checks"]
    assert cut["moved"] == pytest.approx(
        round(cut["moved"], 2), abs=1e-9
    )  # whole cents (or all the cash)
    assert capped["moved"] == pytest.approx(8000) and "max_transfer" in capped["checks"]
    assert "refused" in output and "Transfers" in output
    doc = json.loads((out / "result.json").read_text())
    net = {n: s["metrics"]["net_transfers"] for n, s in doc["subaccounts"].items()}
    assert net["core"] == pytest.approx(1000 + 8000)
    assert net["managed"] == pytest.approx(-8000)
    assert net["btc"] == pytest.approx(cut["moved"])
    assert net["pair"] == pytest.approx(-1000 - cut["moved"])
    assert sum(net.values()) == pytest.approx(0, abs=1e-9)
    # A transfer shows in the equity of both sides at the bar it is booked.
    frame = pd.read_csv(out / "equity.csv", index_col=0, parse_dates=True)
    day = pd.Timestamp("2022-02-15", tz="UTC")
    jump = frame["core"].loc[day] - frame["core"].shift(1).loc[day]
    assert jump > 8000 * 0.8  # the move, give or take a day's return on the book


def test_portfolio_flags_that_the_file_decides_are_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PORTFOLIO)
    result = CliRunner().invoke(
        app, ["backtest", "--portfolio", str(path), "--symbols", "BTCUSDT", "--capital", "5"]
    )
    assert result.exit_code == 2
    assert "--symbols, --capital: with --portfolio" in " ".join(result.output.split())


def test_a_bad_portfolio_file_is_one_clear_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PORTFOLIO.replace("limits: {min_cash: 0.2}", "limits: {min_cash: 2}"))
    result = CliRunner().invoke(app, ["backtest", "--portfolio", str(path)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"invalid configuration {path}" in text
    assert "subaccounts.managed.limits.min_cash: must be < 1 (got 2)" in text


def test_symbols_not_in_the_data_name_the_subaccount(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PORTFOLIO.replace("ETHUSDT, BNBUSDT]", "ETHUSDT, NOPEUSDT]"))
    result = CliRunner().invoke(
        app, ["backtest", "--portfolio", str(path), "--data", str(SHARED_DATA)]
    )
    assert result.exit_code == 2
    assert "subaccounts.core.symbols: not in the data" in " ".join(result.output.split())


# --- isolation ----------------------------------------------------------------------------

ISOLATION = """
account:
  limits: {max_drawdown: 0.99}    # the account breaker is the one intended link: kept off
subaccounts:
  index: {strategy: equal-monthly, symbols: [BBBUSDT, CCCUSDT], capital: 50000}
  steady: {strategy: fixed, weights: {CCCUSDT: 0.9}, rule: calendar:weekly, capital: 30000}
"""
LOSER = """
  loser:
    strategy: fixed
    weights: {AAAUSDT: 1.0}
    capital: 20000
    limits: {max_drawdown: 0.999}
    breakers: {daily_loss_limit: null, loss_streak: null}
"""


def _isolation_panel():
    n = 150
    rng = np.random.default_rng(7)
    b = 50 * np.cumprod(1 + rng.normal(0, 0.03, n))
    c = 20 * np.cumprod(1 + rng.normal(0, 0.02, n))
    # AAA collapses to a millionth of its price over days 60-80, then trades on at that.
    a = np.full(n, 100.0)
    a[60:80] = 100 * np.geomspace(1, 1e-6, 20)
    a[80:] = 1e-4
    closes = {"AAAUSDT": list(a), "BBBUSDT": list(b), "CCCUSDT": list(c)}
    return panel_from_long(synthetic_bars(closes, start="2021-01-01"))


def _comparable(decisions):
    """Decisions without what names the run rather than the subaccount: the input digest
    (it hashes every close of the run, AAA's too) and order ids (numbered across the
    run's subaccounts)."""
    out = []
    for d in decisions:
        d = {k: v for k, v in d.items() if k != "inputs"} | {"equity": d["inputs"]["equity"]}
        d["orders"] = [{k: v for k, v in o.items() if k != "id"} for o in d.get("orders", [])]
        for key in ("not_filled", "fill_guard"):
            if key in d:
                d[key] = [{k: v for k, v in e.items() if k != "order"} for e in d[key]]
        out.append(d)
    return out


def test_a_subaccount_wiped_out_leaves_the_others_exactly_as_without_it():
    panel = _isolation_panel()
    options = PortfolioOptions(start="2021-02-01")
    with_loser = run_portfolio(parse_portfolio(ISOLATION + LOSER), options, panel=panel)
    alone = run_portfolio(parse_portfolio(ISOLATION), options, panel=panel)
    loser = with_loser.subaccounts["loser"]
    # The loser is gone: it held AAA through a 99.9999 % fall.
    assert loser.equity.iloc[-1] < 20_000 * 1e-4
    assert loser.equity.iloc[0] == pytest.approx(20_000, rel=0.01)
    for name in ("index", "steady"):
        a, b = with_loser.subaccounts[name], alone.subaccounts[name]
        pd.testing.assert_series_equal(a.equity, b.equity, check_exact=True)
        pd.testing.assert_frame_equal(
            a.trades.reset_index(drop=True), b.trades.reset_index(drop=True), check_exact=True
        )
        assert _comparable(a.decisions) == _comparable(b.decisions)
        assert len(a.trades) > 0 and len(a.decisions) > 0
        assert json_ready(with_loser.metrics[name]) == json_ready(alone.metrics[name])
    # And the total is the three of them, loss included.
    parts = sum(r.equity for r in with_loser.subaccounts.values())
    np.testing.assert_allclose(with_loser.equity, parts, rtol=1e-12)


def test_rebalance_capital_moves_free_cash_toward_the_shares():
    text = ISOLATION + "rebalance_capital: {every: monthly, shares: {index: 0.7, steady: 0.3}}\n"
    run = run_portfolio(parse_portfolio(text), PortfolioOptions(), panel=_isolation_panel())
    assert run.transfers, "the rule asked for nothing"
    parts = sum(r.equity for r in run.subaccounts.values())
    np.testing.assert_allclose(run.equity, parts, rtol=1e-12)
    for t in run.transfers:
        ts = pd.Timestamp(t["timestamp"])
        assert ts.day == 1  # monthly: the first bar of each month only
        # Hand-worked: what brings steady to 30 % of the two's equity just before the
        # move (the result's equity is after it).
        steady = float(run.subaccounts["steady"].equity.loc[ts]) + t["moved"]
        index = float(run.subaccounts["index"].equity.loc[ts]) - t["moved"]
        assert (t["from"], t["to"]) == ("steady", "index")
        assert t["requested"] == pytest.approx(steady - 0.3 * (steady + index), rel=1e-9)
        # Only free cash moves: steady holds 90 % CCC, so a month's move is cut to it.
        assert 0 < t["moved"] <= t["requested"] + 1e-9
        assert t["status"] == ("done" if t["moved"] == t["requested"] else "cut")
    assert {t["status"] for t in run.transfers} == {"cut", "done"}
