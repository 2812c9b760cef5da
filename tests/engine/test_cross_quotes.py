"""A pair quoted in another currency than the account's (ADABTC in USDT) is refused
everywhere it could be priced as USDT: backtests, holdings, plans."""

import numpy as np
import pytest

from trimtab.domain import spot
from trimtab.domain.quotes import QuoteError
from trimtab.engine.backtest import Backtest, BacktestConfig
from trimtab.engine.context import MarketContext
from trimtab.execution.costs import CostModel
from trimtab.policy import EqualWeight
from trimtab.review.holdings import HoldingsError, parse_holdings, resolve_holdings
from trimtab.review.rebalance_plan import plan_rebalance

DAYS = 40
# ADA at about 0.00001 BTC, BTC at about 30,000 USDT: ADA is worth about 0.30 USDT.
CLOSES = {
    "BTCUSDT": list(np.linspace(30_000, 33_000, DAYS)),
    "ADABTC": list(np.linspace(1.0e-5, 1.1e-5, DAYS)),
    "ARBUSD": list(np.linspace(5.0, 6.0, DAYS)),  # AR against BUSD: at par with USDT
}


def test_backtest_refuses_a_pair_quoted_in_btc(make_panel):
    # Before: 50,000 USDT "bought" ADABTC at its BTC price, about 5e9 ADA (~1.5e9 USDT).
    ctx = MarketContext.build(make_panel(CLOSES))
    with pytest.raises(QuoteError) as err:
        Backtest(ctx, EqualWeight("monthly"), BacktestConfig(costs=CostModel.free()))
    msg = str(err.value)
    assert "ADABTC is quoted in BTC" in msg and "subaccount's USDT" in msg
    assert "ADAUSDT" in msg and "ARBUSD" not in msg and "BTCUSDT" not in msg


def test_backtest_refuses_through_the_instrument_rules_too(make_panel):
    panel = make_panel({k: CLOSES[k] for k in ("BTCUSDT", "ARBUSD")})
    ctx = MarketContext.build(panel)
    rules = {"ARBUSD": spot("ARBUSD", quote="USD")}  # an exchange quoting it in dollars
    with pytest.raises(QuoteError, match="ARBUSD is quoted in USD"):
        Backtest(ctx, EqualWeight("monthly"), instruments=rules)


def test_pairs_at_par_and_members_only_run(make_panel):
    # ADABTC in the data but never a member: only what may be traded is checked.
    panel = make_panel(CLOSES)
    members = panel.close.notna()
    members["ADABTC"] = False
    ctx = MarketContext.build(panel, universe=members)
    result = Backtest(ctx, EqualWeight("monthly"), BacktestConfig(costs=CostModel.free())).run()
    assert set(result.trades["symbol"]) == {"BTCUSDT", "ARBUSD"}
    # BUSD at par: half the cash buys about 50,000 / 5 = 10,000 AR.
    first = result.trades[result.trades["symbol"] == "ARBUSD"].iloc[0]
    assert first["quantity"] * first["price"] == pytest.approx(50_000, rel=1e-9)


HOLDINGS = "as_of: {as_of}\nsubaccounts:\n  main:\n    cash: {{USDT: 1000}}\n    spot: {spot}\n"


def test_holdings_refuse_a_pair_quoted_in_btc_naming_file_and_field(make_panel):
    panel = make_panel(CLOSES)
    as_of = f"{panel.index[-1]:%Y-%m-%d}"
    holdings = parse_holdings(
        HOLDINGS.format(as_of=as_of, spot="{ADABTC: 1000}"), "yaml", "mine.yaml"
    )
    with pytest.raises(HoldingsError) as err:
        resolve_holdings(holdings, panel)
    msg = str(err.value)
    assert msg.startswith("mine.yaml: ") and "ADABTC" in msg
    assert "quoted in BTC" in msg and "USDT" in msg
    # The plan resolves the same holdings, and refuses them the same way.
    with pytest.raises(HoldingsError, match="ADABTC is quoted in BTC"):
        plan_rebalance(holdings, {"main": {"BTC": 0.5}}, panel)


def test_holdings_in_pairs_at_par_are_valued_in_usdt(make_panel):
    panel = make_panel(CLOSES)
    as_of = f"{panel.index[-1]:%Y-%m-%d}"
    text = HOLDINGS.format(as_of=as_of, spot="{ARBUSD: 10, BTC: 0.01}")
    book = resolve_holdings(parse_holdings(text, "yaml", "mine.yaml"), panel)
    assert {p.symbol for p in book.positions} == {"ARBUSD", "BTCUSDT"}


def test_a_plan_refuses_a_target_quoted_in_btc(make_panel):
    panel = make_panel(CLOSES)
    as_of = f"{panel.index[-1]:%Y-%m-%d}"
    holdings = parse_holdings(HOLDINGS.format(as_of=as_of, spot="{}"), "yaml", "mine.yaml")
    with pytest.raises(QuoteError, match="subaccount 'main'.*ADABTC is quoted in BTC"):
        plan_rebalance(holdings, {"main": {"ADABTC": 0.5}}, panel)


def test_the_command_line_refuses_a_btc_pair_before_loading_data(tmp_path):
    from typer.testing import CliRunner

    from trimtab.cli import app

    missing = tmp_path / "nowhere"  # never read: the symbols are refused first
    result = CliRunner().invoke(
        app, ["backtest", "--data", str(missing), "--symbols", "BTCUSDT,ADA/BTC"]
    )
    assert result.exit_code != 0
    assert "ADABTC is quoted in BTC" in result.output and "Traceback" not in result.output
