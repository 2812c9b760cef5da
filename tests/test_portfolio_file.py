"""The portfolio file: strict validation with errors that name the file and the key."""

from pathlib import Path

import pytest

from trimtab.config import ConfigError
from trimtab.engine.portfolio_file import (
    load_portfolio,
    make_subaccount_policy,
    parse_portfolio,
    transfer_guard,
    transfer_schedule,
)
from trimtab.execution.costs import CostModel

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
backtest: {start: 2021-01-01, end: 2021-06-30, timeframe: 1d}
account:
  limits: {max_drawdown: 0.6}
  transfers: {max_transfer: 20000}
subaccounts:
  core: {strategy: equal-monthly, universe: top:10, capital: 40000}
  trend:
    strategy: managed
    universe: top:5
    capital: 30000
    max_capital: 60000
    limits: {max_gross_leverage: 0.8, min_cash: 0.1}
    governor: {recovery_bars: 10}
  fx: {strategy: fixed, weights: {BTC/USDT: 0.6, ETHUSDT: 0.3}, rule: calendar:weekly, capital: 1000}
transfers:
  - {at: 2021-02-01, from: core, to: trend, amount: 10000, reason: more to trend}
  - {at: "2021-03-01T12:00", from: trend, to: fx, amount: 500, partial: true}
rebalance_capital: {every: quarterly, shares: {core: 0.5, trend: 0.5}, band: 0.05}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_portfolio(text, source="portfolio.yaml")
    assert str(info.value).startswith("invalid configuration portfolio.yaml:")
    return info.value.problems


def test_a_valid_file_becomes_typed_sections_and_run_parts():
    p = parse_portfolio(GOOD, source="portfolio.yaml").settings
    assert list(p.subaccounts) == ["core", "trend", "fx"]
    assert p.total_capital == 71_000
    trend = p.subaccounts["trend"]
    assert trend.limits.max_gross_leverage == 0.8 and trend.governor.recovery_bars == 10
    assert p.subaccounts["core"].limits.max_gross_leverage == 1.0  # defaults elsewhere
    assert p.subaccounts["fx"].traded_symbols() == ("BTCUSDT", "ETHUSDT")
    assert p.backtest.start == "2021-01-01"
    assert p.transfers[0].source == "core" and p.transfers[1].partial
    schedule = transfer_schedule(p)
    assert [t.at.isoformat() for t in schedule.scheduled] == [
        "2021-02-01T00:00:00+00:00",
        "2021-03-01T12:00:00+00:00",
    ]
    assert schedule.rebalance.every == "quarterly"
    guard = transfer_guard(p)
    assert guard.max_capital["trend"] == 60_000 and guard.account.max_transfer == 20_000
    fixed = make_subaccount_policy(p.subaccounts["fx"], "BTCUSDT", CostModel())
    assert fixed.weights == {"BTCUSDT": 0.6, "ETHUSDT": 0.3} and fixed.rebalance == "weekly"
    managed = make_subaccount_policy(trend, "BTCUSDT", CostModel())
    assert managed.governor is not None and managed.governor.settings.recovery_bars == 10


def test_the_example_file_is_valid():
    p = load_portfolio(ROOT / "examples" / "subaccounts.yaml").settings
    assert len(p.subaccounts) >= 4 and p.transfers


def test_limits_out_of_range_and_unknown_keys_name_the_key_path():
    text = GOOD.replace("max_gross_leverage: 0.8", "max_gross_leverage: 200, leverage: 2")
    assert problems(text) == [
        "subaccounts.trend.limits.max_gross_leverage: must be <= 125 (got 200)",
        "subaccounts.trend.limits.leverage: unknown key; allowed keys: max_gross_leverage, "
        "max_net_exposure, max_asset_weight, max_cluster_weight, max_order_notional, "
        "max_daily_turnover, min_cash, allowed_symbols, allowed_venues, max_drawdown",
    ]


def test_a_subaccount_given_twice_is_an_error_with_both_lines():
    text = GOOD.replace(
        "subaccounts:\n", "subaccounts:\n  core: {strategy: btc-hold, capital: 5}\n"
    )
    (problem,) = problems(text)
    assert problem.startswith("subaccounts.core: duplicate key at line 8 (first at line 7)")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("capital: 40000", "capital: 0", "subaccounts.core.capital: must be > 0 (got 0)"),
        ("capital: 40000", "capital: -5", "subaccounts.core.capital: must be > 0 (got -5)"),
        ("capital: 40000", 'capital: "40000"', "subaccounts.core.capital: must be a number"),
        (
            "strategy: equal-monthly",
            "strategy: momentum",
            "subaccounts.core.strategy: must be one of",
        ),
        (
            "to: trend, amount: 10000",
            "to: carry, amount: 10000",
            "transfers[0].to: unknown subaccount 'carry'; subaccounts are core, trend, fx",
        ),
        ("amount: 10000", "amount: 0", "transfers[0].amount: must be > 0 (got 0)"),
        ("from: trend, to: fx", "from: fx, to: fx", "transfers[1]: from and to are both 'fx'"),
        ("{at: 2021-02-01,", "{at: soon,", "transfers[0].at: not a date or UTC time: 'soon'"),
        (
            "shares: {core: 0.5, trend: 0.5}",
            "shares: {core: 0.5, trend: 0.6}",
            "rebalance_capital.shares: must sum to 1 (got 1.1)",
        ),
        (
            "shares: {core: 0.5, trend: 0.5}",
            "shares: {core: 0.5, carry: 0.5}",
            "rebalance_capital.shares.carry: unknown subaccount",
        ),
        (
            "rule: calendar:weekly",
            "rule: threshold:0.05",
            "subaccounts.fx.rule: strategy fixed rebalances on a calendar rule only",
        ),
        (
            "universe: top:10, capital",
            "universe: top:10, symbols: [BTCUSDT], capital",
            "subaccounts.core.universe: give either symbols or universe",
        ),
        (
            "universe: top:10, capital",
            "universe: best:10, capital",
            "subaccounts.core.universe: use top:N or all",
        ),
        (
            "{strategy: equal-monthly,",
            "{strategy: equal-monthly, sizing: {target_vol: 0.3},",
            "subaccounts.core.sizing: only the managed strategy",
        ),
        (
            "weights: {BTC/USDT: 0.6, ETHUSDT: 0.3}",
            "weights: {BTC/USDT: 0.8, ETHUSDT: 0.3}",
            "subaccounts.fx.weights: sum to 1.1000, more than 1",
        ),
        (
            "fx: {strategy: fixed, weights: {BTC/USDT: 0.6, ETHUSDT: 0.3},",
            "fx: {strategy: fixed,",
            "subaccounts.fx.weights: strategy fixed needs weights",
        ),
        ("  core: {", "  core/x: {", "subaccounts: subaccount name 'core/x'"),
        (
            "max_drawdown: 0.6",
            "max_drawdwn: 0.6",
            "account.limits.max_drawdwn: unknown key; allowed keys: max_gross_leverage",
        ),
        (
            "max_transfer: 20000",
            "max_transfer: 0",
            "account.transfers.max_transfer: must be > 0 (got 0)",
        ),
    ],
)
def test_bad_values_get_one_clear_line(old, new, expected):
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_a_file_with_no_subaccounts_or_not_a_mapping():
    assert problems("account: {}\n") == ["subaccounts: required"]
    assert problems("subaccounts: {}\n") == ["subaccounts: declare at least one subaccount"]
    assert "top level must be a mapping" in problems("- core\n")[0]


def test_a_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_portfolio(tmp_path / "nope.yaml")


def test_account_limits_hold_by_construction_or_are_refused():
    # The total's gross exposure is an equity-weighted mean of the subaccounts': it stays
    # under the account's cap only if every subaccount's cap does.
    text = GOOD.replace("max_drawdown: 0.6}", "max_drawdown: 0.6, max_gross_leverage: 0.9}")
    assert problems(text) == [
        "subaccounts.core.limits.max_gross_leverage: 1 is above account.limits."
        "max_gross_leverage (0.9), so the total could pass it; lower it or raise the account's",
        "subaccounts.fx.limits.max_gross_leverage: 1 is above account.limits."
        "max_gross_leverage (0.9), so the total could pass it; lower it or raise the account's",
    ]
    text = GOOD.replace("max_drawdown: 0.6}", "max_drawdown: 0.6, min_cash: 0.1}")
    (problem,) = problems(text)
    assert problem.startswith("account.limits.min_cash: not an account-wide limit")
