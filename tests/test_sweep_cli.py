"""`trimtab sweep` from the command line: the table, sweep.csv and sweep.json, and the
mistakes a person can make (one line, exit code 2, nothing run or written)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import SHARED_DATA
from trimtab.cli import app
from trimtab.engine.portfolio_file import parse_portfolio
from trimtab.engine.portfolio_run import TOTAL, PortfolioOptions, run_portfolio

PORTFOLIO = """
backtest: {start: 2022-01-01, end: 2022-04-30}
subaccounts:
  core: {strategy: equal-monthly, symbols: [BTCUSDT, ETHUSDT, BNBUSDT], capital: 40000}
  pair: {strategy: fixed, weights: {BTCUSDT: 0.5, ETHUSDT: 0.3}, capital: 10000}
"""
GRID = "subaccounts.pair.weights.BTCUSDT=0.2,0.7"


def _sweep(tmp_path, *args):
    path = tmp_path / "p.yaml"
    path.write_text(PORTFOLIO)
    return CliRunner().invoke(
        app, ["sweep", "--portfolio", str(path), "--data", str(SHARED_DATA), *args]
    )


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "out"
    result = _sweep(tmp, "--grid", GRID, "--workers", "1", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    return tmp, out, result.output


def test_the_table_and_the_files(swept):
    tmp, out, output = swept
    assert "2 points, best 2 by total.sharpe" in output
    assert "pair.weights.BTCUSDT" in output  # the grid key, without "subaccounts."
    assert "2 of 2 points ran in" in output and "on 1 local process" in output
    assert f"wrote {out}/: sweep.csv, sweep.json" in output
    frame = pd.read_csv(out / "sweep.csv")
    doc = json.loads((out / "sweep.json").read_text())
    assert list(frame.columns[:9]) == [
        "rank",
        "point",
        "subaccounts.pair.weights.BTCUSDT",
        "status",
        "error",
        "start",
        "end",
        "seconds",
        "total.total_return",
    ]
    assert {"core.sharpe", "pair.max_drawdown", "total.fees_paid"} <= set(frame.columns)
    assert frame["status"].tolist() == ["ok", "ok"]
    assert frame["total.sharpe"].is_monotonic_decreasing
    assert doc["grid"] == {"subaccounts.pair.weights.BTCUSDT": [0.2, 0.7]}
    assert doc["portfolio"] == str(tmp / "p.yaml") and len(doc["portfolio_sha256"]) == 64
    assert doc["rank_by"] == "total.sharpe" and doc["points"] == 2
    assert Path(doc["data"]["location"]["path"]).resolve() == Path(SHARED_DATA).resolve()
    assert doc["date"].endswith("+00:00") and doc["executor"] == "local"
    # Each row is the point's own backtest, to the last digit.
    for row in doc["rows"]:
        weight = row["subaccounts.pair.weights.BTCUSDT"]
        text = PORTFOLIO.replace("BTCUSDT: 0.5", f"BTCUSDT: {weight}")
        run = run_portfolio(parse_portfolio(text), PortfolioOptions(data=str(SHARED_DATA)))
        for scope in (TOTAL, "core", "pair"):
            for metric in ("total_return", "sharpe", "max_drawdown", "turnover", "fees_paid"):
                assert row[f"{scope}.{metric}"] == run.metrics[scope][metric], (scope, metric)
    csv_sharpe = frame["total.sharpe"].tolist()
    assert csv_sharpe == [r["total.sharpe"] for r in doc["rows"]]


def test_the_same_out_folder_takes_a_second_sweep(swept):
    tmp, out, _ = swept
    result = _sweep(tmp, "--grid", GRID, "--workers", "1", "--out", str(out), "--top", "1")
    assert result.exit_code == 0, result.output
    assert "best 1 by total.sharpe" in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["--grid", "subaccounts.pair.weight.BTCUSDT=0.2"],
            "at grid point 0 (subaccounts.pair.weight.BTCUSDT=0.2)",
        ),
        (["--grid", "subaccounts.pair.weights.BTCUSDT=0.2,x"], "grid point 1"),
        (["--grid", "subaccounts.pair.capital"], "no '=' found"),
        (["--grid", "backtest.start=2022-01-01", "--start", "2022-02-01"], "the flag wins"),
        (["--grid", GRID, "--rank-by", "total.sharp"], "unknown metric 'sharp'"),
        (["--grid", GRID, "--workers", "0"], "--workers must be at least 1"),
        (["--grid", GRID, "--workers", "2", "--cluster", "tcp://x:1"], "--workers is for local"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(tmp_path, args, words):
    out = tmp_path / "out"
    result = _sweep(tmp_path, *args, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_an_out_folder_of_other_files_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = _sweep(tmp_path, "--grid", GRID, "--out", str(out))
    assert result.exit_code == 2 and "holds other files (notes.txt)" in result.output


def test_a_failed_point_is_reported_and_a_sweep_where_none_ran_exits_1(tmp_path):
    result = _sweep(tmp_path, "--grid", "subaccounts.core.symbols=[ETHUSDT],[NOPEUSDT]")
    assert result.exit_code == 0, result.output
    assert "point 1 failed (subaccounts.core.symbols=[NOPEUSDT])" in result.output
    assert "not in the data" in result.output and "1 of 2 points ran" in result.output
    result = _sweep(tmp_path, "--grid", "subaccounts.core.symbols=[NOPEUSDT]")
    assert result.exit_code == 1 and "0 of 1 points ran" in result.output
