"""The rebalance plan for real holdings: exchange rules, balances and dust."""

import json
import math

import pytest

from trimtab.domain import MarginTier, perpetual
from trimtab.guard.limits import Limits
from trimtab.policy.rebalance import CostAwareSettings
from trimtab.review.holdings import HoldingsError, parse_holdings
from trimtab.review.rebalance_plan import (
    load_leverage,
    load_markets,
    load_targets,
    plan_rebalance,
    render_plan,
)

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


def test_a_full_exit_sells_whole_lots_and_lists_its_remainder_once_as_dust(daily_panel):
    # 1.2345 BTC out of the targets: 1.234 sells (whole 0.001 lots), 0.0005 stays as dust.
    text = (
        "as_of: 2022-06-30\nsubaccounts:\n  main:\n    cash: {USDT: 1000}\n"
        "    spot: {ETH: 1, BTC: 1.2345}\n"
    )
    plan = _plan(daily_panel, text, {"main": {"ETH": 0.9}})["subaccounts"]["main"]
    (sell,) = [o for o in plan["orders"] if o["symbol"] == "BTCUSDT"]
    assert sell["side"] == "sell" and sell["quantity"] == pytest.approx(1.234)
    (dust,) = plan["dust"]
    assert dust["symbol"] == "BTCUSDT" and dust["quantity"] == pytest.approx(0.0005)
    assert all(u["symbol"] != "BTCUSDT" for u in plan["untraded"])
    text = render_plan({"as_of": "2022-06-30", "subaccounts": {"main": plan}})
    assert "left: BTCUSDT" not in text and text.count("dust: 0.0005 BTCUSDT") == 1


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


@pytest.mark.real_data
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


# --------------------------------------------------------------------------- the guard


def _guarded(daily_panel, text, targets, limits, **kw):
    holdings = parse_holdings(text, "yaml", "h.yaml")
    return plan_rebalance(holdings, targets, daily_panel, markets=MARKETS, limits=limits, **kw)


SPOT = (
    "as_of: 2022-06-30\nsubaccounts:\n  main:\n    cash: {USDT: 40000}\n"
    "    spot: {ETH: 10, SOL: 100}\n"
)


def test_plan_targets_pass_the_guard_and_the_plan_says_what_it_clipped(daily_panel):
    limits = Limits(max_asset_weight=0.30, min_cash=0.10)
    plan = _guarded(daily_panel, SPOT, {"main": {"BTC": 0.6, "ETH": 0.3}}, limits)
    main = plan["subaccounts"]["main"]
    rules = {(g["stage"], g["rule"]) for g in main["guard"]}
    assert ("targets", "max_asset_weight") in rules
    clip = next(g for g in main["guard"] if g["rule"] == "max_asset_weight")
    assert clip["symbols"] == ["BTCUSDT"] and clip["before"] == 0.6 and clip["after"] == 0.3
    btc = next(o for o in main["orders"] if o["symbol"] == "BTCUSDT")
    assert btc["target"] == pytest.approx(0.3) and btc["weight_to"] <= 0.3 + 1e-9
    assert "max_asset_weight" in btc["guard"]
    invested = sum(o["weight_to"] for o in main["orders"] if o["side"] == "buy")
    assert invested <= 0.9 + 1e-9  # min_cash: 10 % stays in cash
    text = render_plan(plan)
    assert "guard, targets: max_asset_weight: asset weight clipped from 60.00% to 30.00%" in text
    assert plan["limits"]["max_asset_weight"] == 0.3


def test_plan_orders_pass_the_guard_scaled_or_blocked_with_the_reason(daily_panel):
    limits = Limits(max_order_notional=2000, allowed_symbols=("ETH/USDT", "BTC/USDT"))
    plan = _guarded(daily_panel, SPOT, {"main": {"BTC": 0.3, "ETH": 0.2, "LINK": 0.2}}, limits)
    main = plan["subaccounts"]["main"]
    for o in main["orders"]:
        assert o["notional"] <= 2000 * (1 + 1e-9), o
    by_rule = {g["rule"]: g for g in main["guard"]}
    assert by_rule["max_order_notional"]["stage"] == "orders"
    # LINK may not be bought: its target is zeroed by the guard, and SOL (held, not
    # allowed) may still be sold down.
    assert "LINKUSDT" in by_rule["allowed_symbols"]["symbols"]
    assert all(o["symbol"] != "LINKUSDT" for o in main["orders"])
    sol = next(o for o in main["orders"] if o["symbol"] == "SOLUSDT")
    assert sol["side"] == "sell"
    assert "guard, orders: max_order_notional" in render_plan(plan)


def test_no_limit_acted_is_said_too(daily_panel):
    plan = _guarded(daily_panel, SPOT, {"main": {"ETH": 0.3}}, Limits())
    assert plan["subaccounts"]["main"]["guard"] == []
    assert "guard: every target and order within the limits" in render_plan(plan)


# --------------------------------------------------------------------------- perpetuals

AS_OF = "2022-06-30"


def _perps(cash=1000.0, perps="", exchange=""):
    return f"as_of: {AS_OF}\nsubaccounts:\n  futures:\n{exchange}    cash: {{USDT: {cash}}}\n" + (
        f"    perps:\n{perps}" if perps else ""
    )


BTC_LONG = "      - {symbol: BTCUSDT, side: long, size: 0.02, entry_price: 20000, leverage: 10}\n"
#: Trade all the way to target, so that the hand-worked figures are exact.
TO_TARGET = CostAwareSettings(trade_fraction=1.0)


@pytest.mark.real_data
def test_a_target_in_a_perps_subaccount_is_a_perpetual_order_with_its_margin(daily_panel):
    # Hand-worked: 0.02 BTC long from 20,000 at 10x (margin 40) and 1,000 free cash.
    # Target 50 % of equity long at 5x: the order buys up to 0.5 * equity / price, and
    # the new position's initial margin is its notional / 5.
    price = float(daily_panel.close.loc[AS_OF, "BTCUSDT"])
    equity = 1000 + 40 + 0.02 * (price - 20000)
    holdings = parse_holdings(_perps(perps=BTC_LONG), "yaml", "h.yaml")
    plan = plan_rebalance(
        holdings,
        {"futures": {"BTC": 0.5}},
        daily_panel,
        leverage={"futures": {"BTC": 5.0}},
        settings=TO_TARGET,
    )
    e = plan["subaccounts"]["futures"]
    assert e["instruments"] == "perpetuals" and e["equity"] == pytest.approx(equity)
    (o,) = e["orders"]
    q1 = 0.5 * equity / price
    assert o["instrument"] == "perpetual" and o["side"] == "buy" and not o["reduce_only"]
    assert o["quantity"] == pytest.approx(q1 - 0.02)
    assert o["position_to"] == pytest.approx(q1) and o["leverage"] == 5
    assert o["margin_to"] == pytest.approx(q1 * price / 5)
    assert o["margin_needed"] == pytest.approx(q1 * price / 5 - 40)
    assert o["weight_to"] == pytest.approx(0.5)
    assert e["margin"]["free_cash_after"] == pytest.approx(
        1000 - (q1 * price / 5 - 40) - o["expected_cost"]
    )
    assert "perpetual (5x" in render_plan(plan)
    assert "not planned" not in render_plan(plan)


def test_a_smaller_perp_target_is_a_reduce_only_order_releasing_margin_pro_rata(daily_panel):
    price = float(daily_panel.close.loc[AS_OF, "BTCUSDT"])
    equity = 1000 + 40 + 0.02 * (price - 20000)
    holdings = parse_holdings(_perps(perps=BTC_LONG), "yaml", "h.yaml")
    plan = plan_rebalance(holdings, {"futures": {"BTC": 0.1}}, daily_panel, settings=TO_TARGET)
    (o,) = plan["subaccounts"]["futures"]["orders"]
    q1 = 0.1 * equity / price
    assert o["side"] == "sell" and o["reduce_only"] and o["leverage"] == pytest.approx(10)
    assert o["position_to"] == pytest.approx(q1)
    assert o["margin_to"] == pytest.approx(40 * q1 / 0.02)  # margin released pro rata
    # The PnL of the part closed is realized: (price - 20000) per BTC sold.
    assert o["realized_pnl"] == pytest.approx((0.02 - q1) * (price - 20000))


def test_a_short_target_flips_the_long_with_one_sell_that_is_not_reduce_only(daily_panel):
    price = float(daily_panel.close.loc[AS_OF, "BTCUSDT"])
    equity = 1000 + 40 + 0.02 * (price - 20000)
    holdings = parse_holdings(_perps(perps=BTC_LONG), "yaml", "h.yaml")
    plan = plan_rebalance(
        holdings, {"futures": {"BTCUSDT-PERP": -0.4}}, daily_panel, settings=TO_TARGET
    )
    (o,) = plan["subaccounts"]["futures"]["orders"]
    assert o["side"] == "sell" and not o["reduce_only"]
    assert o["position_to"] == pytest.approx(-0.4 * equity / price)
    assert o["quantity"] == pytest.approx(0.02 + 0.4 * equity / price)
    assert "flip" in o["reason"]
    assert o["liquidation_price"] > price  # a short is liquidated above the price


def test_perp_targets_keep_the_gross_leverage_limit(daily_panel):
    holdings = parse_holdings(_perps(cash=5000, perps=BTC_LONG), "yaml", "h.yaml")
    plan = plan_rebalance(
        holdings,
        {"futures": {"BTC": 2.0, "ETH": -1.5}},
        daily_panel,
        limits=Limits(
            max_gross_leverage=2.0, max_asset_weight=3, max_cluster_weight=3, max_net_exposure=3
        ),
        leverage={"futures": {"BTC": 5.0, "ETH": 5.0}},
        settings=TO_TARGET,
    )
    e = plan["subaccounts"]["futures"]
    gross = next(g for g in e["guard"] if g["rule"] == "max_gross_leverage")
    assert gross["stage"] == "targets" and gross["before"] == pytest.approx(3.5)
    assert sum(abs(o["weight_to"]) for o in e["orders"]) == pytest.approx(2.0, rel=1e-6)
    eth = next(o for o in e["orders"] if o["symbol"] == "ETHUSDT")
    assert eth["side"] == "sell" and eth["position_to"] < 0
    assert e["margin"]["gross_leverage_after"] <= 2.0 + 1e-9


def test_leverage_above_the_margin_bracket_is_lowered_to_its_maximum(daily_panel):
    tiers = (MarginTier(10_000, 0.01, 0.0, 20), MarginTier(math.inf, 0.05, 400.0, 5))
    holdings = parse_holdings(_perps(cash=10000, perps=""), "yaml", "h.yaml")
    plan = plan_rebalance(
        holdings,
        {"futures": {"BTC-PERP": 2.0}},  # 20,000 USDT: the second bracket, 5x at most
        daily_panel,
        limits=Limits(
            max_gross_leverage=3, max_asset_weight=3, max_cluster_weight=3, max_net_exposure=3
        ),
        leverage={"futures": {"BTC-PERP": 10.0}},
        margin_tiers={"BTCUSDT": tiers},
    )
    (o,) = plan["subaccounts"]["futures"]["orders"]
    assert o["leverage"] == 5 and o["margin_tier"]["max_leverage"] == 5
    assert "leverage lowered from 10x to 5x" in o["reason"]
    assert o["margin_to"] == pytest.approx(o["notional"] / 5)
    # Maintenance margin of the second bracket: 5 % of notional less its 400 deduction.
    assert o["maintenance_margin"] == pytest.approx(o["notional"] * 0.05 - 400)


def test_perp_orders_never_post_more_margin_than_the_free_cash(daily_panel):
    holdings = parse_holdings(_perps(cash=500, perps=""), "yaml", "h.yaml")
    # An empty perps subaccount is one whose targets are written as perpetuals. Twice
    # the equity at 1x needs twice the cash as margin: the order is cut to what is free.
    plan = plan_rebalance(
        holdings,
        {"futures": {"ETHUSDT-PERP": 2.0}},
        daily_panel,
        limits=Limits(
            max_gross_leverage=3, max_asset_weight=3, max_cluster_weight=3, max_net_exposure=3
        ),
    )
    e = plan["subaccounts"]["futures"]
    (o,) = e["orders"]
    assert o["instrument"] == "perpetual" and o["leverage"] == 1
    assert o["margin_needed"] + o["expected_cost"] <= 500 + 1e-6
    assert e["margin"]["free_cash_after"] >= -1e-6
    assert "cut to" in e["note"]
    assert o["margin_needed"] + o["expected_cost"] == pytest.approx(500, rel=1e-6)


def test_short_targets_are_refused_in_a_spot_subaccount(tmp_path):
    holdings = parse_holdings(
        "subaccounts:\n  core:\n    cash: {USDT: 10}\n    spot: {BTC: 1}\n", "yaml", "h.yaml"
    )
    t = tmp_path / "t.yaml"
    t.write_text("targets: {core: {ETH: -0.2}}\n")
    with pytest.raises(HoldingsError, match=r"targets.core.ETH: .* a short is a perpetual"):
        load_targets(t, holdings)
    t.write_text("targets: {core: {ETH: {weight: 0.2, leverage: 3}}}\n")
    with pytest.raises(HoldingsError, match=r"targets.core.ETH.leverage: leverage is for perp"):
        load_targets(t, holdings)
    perps = parse_holdings(_perps(perps=BTC_LONG), "yaml", "h.yaml")
    t.write_text("targets: {futures: {BTC: {weight: -0.5, leverage: 3}, ETH: 0.2}}\n")
    assert load_targets(t, perps) == {"futures": {"BTC": -0.5, "ETH": 0.2}}
    assert load_leverage(t, perps) == {"futures": {"BTC": 3.0}}
    t.write_text("targets: {futures: {BTC: {weight: -0.5, leverage: 300}}}\n")
    with pytest.raises(HoldingsError, match=r"targets.futures.BTC.leverage: must be a number"):
        load_leverage(t, perps)


def test_rebalance_command_applies_the_configured_limits(tmp_path):
    from typer.testing import CliRunner

    from tests.conftest import DAILY_FILE
    from trimtab.cli import app

    holdings = tmp_path / "h.yaml"
    holdings.write_text(
        "as_of: 2022-06-30\nsubaccounts:\n  core:\n    cash: {USDT: 20000}\n"
        "    spot: {ETH: 10}\n  futures:\n    cash: {USDT: 3000}\n    perps:\n" + BTC_LONG
    )
    targets = tmp_path / "t.yaml"
    targets.write_text(
        "targets:\n  core: {BTC: 0.5, ETH: 0.2}\n  futures: {ETH: {weight: -0.8, leverage: 4}}\n"
    )
    config = tmp_path / "c.yaml"
    config.write_text("limits:\n  max_asset_weight: 0.25\n  max_order_notional: 3000\n")
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(
        app,
        [
            "rebalance",
            "--portfolio",
            str(holdings),
            "--targets",
            str(targets),
            "--data",
            str(DAILY_FILE),
            "--config",
            str(config),
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(out.read_text())
    assert plan["limits"]["max_asset_weight"] == 0.25
    core, futures = plan["subaccounts"]["core"], plan["subaccounts"]["futures"]
    assert {g["rule"] for g in core["guard"]} >= {"max_asset_weight"}
    assert all(o["notional"] <= 3000 * (1 + 1e-9) for o in core["orders"] + futures["orders"])
    eth = next(o for o in futures["orders"] if o["symbol"] == "ETHUSDT")
    assert eth["instrument"] == "perpetual" and eth["side"] == "sell" and eth["leverage"] == 4
    assert "guard, targets: max_asset_weight" in result.output
    assert "ETHUSDT perpetual" in result.output


def test_perp_orders_use_the_exchanges_cached_perpetual_lots_and_brackets(daily_panel):
    cached = perpetual(
        "BTCUSDT-PERP",
        margin_tiers=(MarginTier(1_000, 0.02, 0.0, 2), MarginTier(math.inf, 0.1, 80.0, 1)),
        lot_size=0.001,
        min_notional=100,
    )
    holdings = parse_holdings(_perps(cash=1000, exchange="    exchange: binance\n"), "yaml", "h")
    plan = plan_rebalance(
        holdings,
        {"futures": {"BTC-PERP": 0.9}},
        daily_panel,
        leverage={"futures": {"BTC-PERP": 3.0}},
        exchange_perps={"binance": {"BTCUSDT-PERP": cached}},
    )
    e = plan["subaccounts"]["futures"]
    (o,) = e["orders"]
    assert o["quantity"] == pytest.approx(round(o["quantity"] / 0.001) * 0.001)
    assert o["leverage"] == 2  # the cached bracket allows 2x below 1,000 USDT
    assert "the cached binance perpetual rules" in e["exchange_rules"]


def test_a_venue_not_allowed_rejects_the_whole_plan_with_the_reason(daily_panel):
    text = SPOT.replace("  main:\n", "  main:\n    exchange: kraken\n")
    plan = _guarded(daily_panel, text, {"main": {"BTC": 0.3}}, Limits(allowed_venues=("binance",)))
    main = plan["subaccounts"]["main"]
    assert main["orders"] == [] and main["decision"].startswith("guard rejected")
    (action,) = main["guard"]
    assert action["rule"] == "allowed_venues" and "kraken" in action["message"]
    assert {u["symbol"] for u in main["untraded"]} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert "guard, targets: allowed_venues" in render_plan(plan)
