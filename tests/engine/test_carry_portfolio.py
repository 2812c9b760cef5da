"""A portfolio file with a funding carry: ``strategy: carry`` on the spot legs runs in
``run_portfolio`` and ``trimtab backtest --portfolio`` beside other subaccounts.

What is checked: the carry subaccount's funding in the ledger equals what the simulated
broker reported paying it (read by wrapping its ``on_bar``), and is the only funding; no
other subaccount ever holds or trades a ``-PERP`` column (one with no ``symbols:`` takes
every spot symbol, never a perpetual); with no funding rate known over the run the carry
stays flat and says why; bad carry settings are one clear error.
"""

from __future__ import annotations

from contextlib import contextmanager
from unittest.mock import patch

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import HAVE_REAL_DATA, REAL_DATA
from trimtab.cli import app
from trimtab.config import ConfigError
from trimtab.data import sample
from trimtab.engine.portfolio_file import parse_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, PortfolioRun, run_portfolio
from trimtab.execution.simulated import SimulatedBroker

PERPS = ("BTCUSDT-PERP", "ETHUSDT-PERP")

PORTFOLIO = """
backtest: {{start: {start}, end: {end}, timeframe: 1d}}
account:
  limits: {{max_gross_leverage: 2.0, max_drawdown: 0.9}}
  breakers: {{daily_loss_limit: null, loss_streak: null}}
subaccounts:
  core:
    strategy: core
    capital: 40000
    params: {{top: 5}}
    breakers: {{daily_loss_limit: null, loss_streak: null}}
  trend:
    strategy: trend
    symbols: [BTCUSDT, ETHUSDT]
    capital: 40000
    breakers: {{daily_loss_limit: null, loss_streak: null}}
  carry:
    strategy: carry
    symbols: [BTCUSDT, ETHUSDT]
    capital: 20000
    params: {{enter_apr: 0.08, exit_apr: 0.0, gross: 0.95}}
    limits: {{max_gross_leverage: 2.0, max_drawdown: 0.5}}
    breakers: {{daily_loss_limit: null, loss_streak: null}}
"""


@contextmanager
def funding_reports():
    """Every funding payment the simulated broker reports meanwhile: (sub, symbol, USDT)."""
    rows: list[tuple[str, str, float]] = []
    original = SimulatedBroker.on_bar

    def on_bar(self, i):
        report = original(self, i)
        rows.extend(report.funding)
        return report

    with patch.object(SimulatedBroker, "on_bar", on_bar):
        yield rows


def run_file(text: str, data: str) -> tuple[PortfolioRun, pd.DataFrame]:
    portfolio = parse_portfolio(text, source="carry.yaml")
    with funding_reports() as rows:
        run = run_portfolio(portfolio, PortfolioOptions(data=data))
    return run, pd.DataFrame(rows, columns=["subaccount", "symbol", "amount"])


def check_isolated_carry(run: PortfolioRun, paid: pd.DataFrame) -> float:
    """The carry's funding is the broker's and the only funding; nobody else touches a
    perpetual. Returns the carry's funding (USDT)."""
    account = run.subaccounts["carry"].account
    carry = account.subaccount("carry")
    assert set(paid["subaccount"]) <= {"carry"}
    assert set(paid["symbol"]) <= set(PERPS)
    assert carry.funding_pnl == pytest.approx(float(paid["amount"].sum()), rel=1e-12, abs=1e-9)
    for name in ("core", "trend"):
        r = run.subaccounts[name]
        assert not r.trades["symbol"].isin(PERPS).any()
        assert (r.weights[list(PERPS)] == 0).all().all()
        assert account.subaccount(name).funding_pnl == 0
        assert len(r.trades)  # they trade, only not perpetuals
    return float(carry.funding_pnl)


@pytest.mark.real_data
def test_three_subaccounts_on_the_real_data_the_carry_alone_earns_funding():
    run, paid = run_file(PORTFOLIO.format(start="2020-01-01", end="2022-12-31"), str(REAL_DATA))
    funding = check_isolated_carry(run, paid)
    carry = run.subaccounts["carry"]
    fees = float(carry.account.subaccount("carry").fees_paid)
    assert funding > 5 * fees > 0
    assert run.subaccounts["carry"].trades["symbol"].isin(PERPS).any()
    # Delta-neutral: the carry's net weight stays near zero at every close.
    net = carry.weights.sum(axis=1)
    assert net.abs().max() < 0.02
    reasons = {r["code"] for d in carry.decisions for r in d["reasons"]}
    assert {"funding", "carry_target", "carry_trade"} <= reasons


def test_the_same_file_on_the_sample_market():
    folder = sample.ensure_sample()
    run, paid = run_file(PORTFOLIO.format(start="2020-01-01", end="2022-12-31"), str(folder))
    assert run.provenance.get("synthetic") is True
    check_isolated_carry(run, paid)
    assert len(paid)  # the synthetic funding pays the short at times


def test_with_no_funding_over_the_run_the_carry_stays_flat_and_says_why():
    # The sample's funding ends with 2022: in 2023 no rate is known, so no pair enters.
    folder = sample.ensure_sample()
    run, paid = run_file(PORTFOLIO.format(start="2023-03-01", end="2023-04-30"), str(folder))
    carry = run.subaccounts["carry"]
    assert carry.trades.empty and paid.empty
    assert carry.equity.iloc[-1] == pytest.approx(20_000.0)
    messages = [r["message"] for d in carry.decisions for r in d["reasons"]]
    assert any("no funding data" in m for m in messages)
    assert len(run.subaccounts["trend"].equity) == len(carry.equity)


def test_trimtab_backtest_runs_a_portfolio_file_with_a_carry(tmp_path):
    data = str(REAL_DATA) if HAVE_REAL_DATA else str(sample.ensure_sample())
    path = tmp_path / "carry.yaml"
    path.write_text(PORTFOLIO.format(start="2021-01-01", end="2021-03-31"))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["backtest", "--portfolio", str(path), "--data", data, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "carry" in result.output
    trades = pd.read_csv(out / "carry" / "trades.csv") if (out / "carry").is_dir() else None
    if trades is not None and len(trades):
        assert set(trades["symbol"]) <= {"BTCUSDT", "ETHUSDT", *PERPS}


def test_carry_settings_that_cannot_run_are_one_clear_error(tmp_path):
    folder = str(sample.ensure_sample())
    text = PORTFOLIO.format(start="2021-01-01", end="2021-01-31")
    missing = text.replace("timeframe: 1d}", "timeframe: 1d, funding: nowhere.csv.gz}")
    with pytest.raises(ConfigError, match=r"backtest.funding: no such file: .*nowhere"):
        run_portfolio(
            parse_portfolio(missing, source="x.yaml", folder=tmp_path),
            PortfolioOptions(data=folder),
        )
    # At 2x the short is liquidated about 50 % above its entry: re-strike well before.
    levered = text.replace("gross: 0.95}", "gross: 0.95, leverage: 2, reset_move: 0.5}")
    with pytest.raises(ConfigError, match=r"reset_move \(0.5\) must be at most 0.375 at 2x"):
        run_portfolio(parse_portfolio(levered, source="x.yaml"), PortfolioOptions(data=folder))


def test_a_data_folder_without_funding_leaves_the_carry_flat(tmp_path):
    # Bars without a funding file beside them: the carry has no rates, holds its cash and
    # says why; the run's provenance says there was no funding data.
    bars = tmp_path / "bars"
    bars.mkdir()
    (bars / sample.DAILY_FILE).symlink_to(sample.ensure_sample() / sample.DAILY_FILE)
    text = PORTFOLIO.format(start="2021-01-01", end="2021-02-28")
    run, paid = run_file(text, str(bars))
    carry = run.subaccounts["carry"]
    assert carry.trades.empty and paid.empty
    assert "no funding data" in run.provenance["carry"]["funding"]
    assert any(r["code"] == "no_funding" for d in carry.decisions for r in d["reasons"])


def test_a_walk_forward_over_the_carry_window_has_each_windows_feature():
    # The grid's windows (9 and 21 funding intervals) each need their own feature. To
    # mid-April: two refits, each replaying both windows (on the real data the first
    # chooses 21, the second 9: each window also decides live bars), at half the time of
    # the whole year's four.
    data = str(REAL_DATA) if HAVE_REAL_DATA else str(sample.ensure_sample())
    text = PORTFOLIO.format(start="2021-01-01", end="2021-04-15").replace(
        "    params: {enter_apr: 0.08, exit_apr: 0.0, gross: 0.95}\n",
        "    params: {enter_apr: 0.08, exit_apr: 0.0, gross: 0.95}\n"
        "    walk_forward: {every: quarterly, train: 90, grid: {window: [9, 21]}}\n",
    )
    portfolio = parse_portfolio(text, source="wf.yaml")
    with funding_reports() as rows:
        run = run_portfolio(portfolio, PortfolioOptions(data=data, walk_forward=True))
    paid = pd.DataFrame(rows, columns=["subaccount", "symbol", "amount"])
    check_isolated_carry(run, paid)
