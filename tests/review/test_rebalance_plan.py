"""The rebalance plan for real holdings: exchange rules, balances and dust."""

import math

import pytest

from trimtab.review.holdings import HoldingsError, parse_holdings
from trimtab.review.rebalance_plan import load_markets, load_targets, plan_rebalance

MARKETS = {"BTC": {"lot_size": 0.001, "min_notional": 10}, "ETH": {"lot_size": 0.01}}


def _plan(daily_panel, text, targets, **kw):
    holdings = parse_holdings(text, "yaml", "h.yaml")
    return plan_rebalance(holdings, targets, daily_panel, markets=MARKETS, **kw)


def test_buys_are_paid_by_cash_and_sales_and_come_in_whole_lots(daily_panel):
    text = "as_of: 2022-06-30\nsubaccounts:\n  main:\n    cash: {USDT: 0}\n    spot: {ETH: 20}\n"
    plan = _plan(daily_panel, text, {"main": {"BTC": 0.5, "ETH": 0.5}})["subaccounts"]["main"]
    sides = {o["symbol"]: o for o in plan["orders"]}
    assert sides["ETHUSDT"]["side"] == "sell" and sides["BTCUSDT"]["side"] == "buy"
    proceeds = sides["ETHUSDT"]["notional"] - sides["ETHUSDT"]["expected_cost"]
    spent = sides["BTCUSDT"]["notional"] + sides["BTCUSDT"]["expected_cost"]
    assert spent <= proceeds + 1e-9  # no cash: the buy lives on the sale
    assert "buys cut" in plan["note"]
    for o in plan["orders"]:
        lot = MARKETS[o["symbol"][:3]]["lot_size"]
        assert math.isclose(o["quantity"] / lot, round(o["quantity"] / lot), abs_tol=1e-6)


def test_positions_too_small_to_sell_are_reported_as_dust(daily_panel):
    # 0.0002 BTC (about 4 USDT) is less than one 0.001 lot, so it cannot be closed.
    text = (
        "as_of: 2022-06-30\nsubaccounts:\n  main:\n    cash: {USDT: 1000}\n"
        "    spot: {ETH: 1, BTC: 0.0002}\n"
    )
    plan = _plan(daily_panel, text, {"main": {"ETH": 0.9}})["subaccounts"]["main"]
    assert all(o["symbol"] != "BTCUSDT" for o in plan["orders"])
    (dust,) = plan["dust"]
    assert dust["symbol"] == "BTCUSDT" and dust["quantity"] == pytest.approx(0.0002)
    assert "lot size 0.001" in dust["reason"]
    untraded = {u["symbol"]: u["reason"] for u in plan["untraded"]}
    assert "below the exchange minimum" in untraded["BTCUSDT"]


def test_targets_and_markets_errors_name_the_file_and_key(tmp_path):
    holdings = parse_holdings("subaccounts:\n  main:\n    cash: {USDT: 10}\n", "yaml", "h.yaml")
    bad = tmp_path / "t.yaml"
    bad.write_text("targets: {BTC: 0.5}\nmarkets: {BTC: {lot: 0.1}}\n")
    assert load_targets(bad, holdings) == {"main": {"BTC": 0.5}}
    with pytest.raises(HoldingsError, match=r"t.yaml: markets.BTC.lot: unknown rule"):
        load_markets(bad)
    bad.write_text("targets: {BTC: 0.5}\nmarkets: {BTC: {lot_size: -1}}\n")
    with pytest.raises(HoldingsError, match=r"markets.BTC.lot_size: must be a number >= 0"):
        load_markets(bad)
    bad.write_text("targets: {BTC: -0.5}\n")
    with pytest.raises(HoldingsError, match=r"targets.main.BTC: weight must be a number >= 0"):
        load_targets(bad, holdings)


def test_plan_bands_follow_the_volatility_regime(daily_panel):
    # 12 May 2022, the LUNA crash: short-term volatility far above its 90-day level.
    text = (
        "subaccounts:\n  main:\n    cash: {USDT: 5000}\n"
        "    spot: {BTC: 0.5, ETH: 4, SOL: 120, LINK: 300}\n"
    )
    targets = {"main": {"BTC": 0.4, "ETH": 0.3, "SOL": 0.1, "LINK": 0.1}}
    calm = _plan(daily_panel, text, targets, as_of="2021-10-15")["subaccounts"]["main"]
    crash = _plan(daily_panel, text, targets, as_of="2022-05-12")["subaccounts"]["main"]
    reasons = " ".join(o["reason"] for o in crash["orders"])
    assert "band tightened: volatility regime stressed" in reasons
    assert "band tightened" not in " ".join(o["reason"] for o in calm["orders"])
