"""Exchange rules from ccxt markets, cached for offline plans."""

import pytest

import trimtab.data.markets as markets_mod
from trimtab.data import DataError
from trimtab.data.markets import (
    cached_market_rules,
    fetch_market_rules,
    markets_path,
    rules_from_market,
)

BTC = {
    "symbol": "BTC/USDT",
    "base": "BTC",
    "quote": "USDT",
    "spot": True,
    "active": True,
    # As ccxt.binance reports it (precisionMode TICK_SIZE): steps, not decimals.
    "precision": {"amount": 1e-05, "price": 0.01},
    "limits": {"amount": {"min": 1e-05, "max": 9000.0}, "cost": {"min": 5.0, "max": None}},
}


class FakeExchange:
    precisionMode = 4  # ccxt.TICK_SIZE

    def __init__(self, markets):
        self._markets = markets

    def load_markets(self):
        return self._markets


def test_rules_from_tick_size_and_decimal_places_markets():
    assert rules_from_market(BTC, 4) == {"lot_size": 1e-05, "min_qty": 1e-05, "min_notional": 5.0}
    okx_style = {**BTC, "precision": {"amount": 4}, "limits": {"cost": {"min": None}}}
    assert rules_from_market(okx_style, 2) == {"lot_size": pytest.approx(1e-4)}
    # Significant-digit precision has no fixed step: no lot rule rather than a wrong one.
    assert "lot_size" not in rules_from_market(BTC, 3)


def test_fetch_caches_active_spot_rules_and_reads_them_back(tmp_path, monkeypatch):
    perp = {**BTC, "symbol": "BTC/USDT:USDT", "spot": False}
    dead = {**BTC, "symbol": "LUNA/USDT", "base": "LUNA", "active": False}
    fake = FakeExchange({"BTC/USDT": BTC, "BTC/USDT:USDT": perp, "LUNA/USDT": dead})
    monkeypatch.setattr(markets_mod, "_make_exchange", lambda exchange_id: fake)
    rules = fetch_market_rules("binance", tmp_path)
    assert rules == {"BTCUSDT": {"lot_size": 1e-05, "min_qty": 1e-05, "min_notional": 5.0}}
    assert cached_market_rules("binance", tmp_path) == rules
    assert cached_market_rules("okx", tmp_path) == {}
    markets_path(tmp_path, "binance").write_text("{not json")
    with pytest.raises(DataError, match="markets-binance.json: unreadable market rules"):
        cached_market_rules("binance", tmp_path)


def test_network_failures_are_named(tmp_path, monkeypatch):
    class Down(FakeExchange):
        def load_markets(self):
            raise OSError("connection refused")

    monkeypatch.setattr(markets_mod, "_make_exchange", lambda exchange_id: Down({}))
    with pytest.raises(DataError, match="binance: could not load markets"):
        fetch_market_rules("binance", tmp_path)


def test_plans_use_the_cached_rules_of_the_subaccounts_exchange(daily_panel):
    from trimtab.review.holdings import parse_holdings
    from trimtab.review.rebalance_plan import plan_rebalance

    text = (
        "as_of: 2022-06-30\nsubaccounts:\n  main:\n    exchange: binance\n"
        "    cash: {USDT: 10000}\n    spot: {ETH: 1}\n"
    )
    holdings = parse_holdings(text, "yaml", "h.yaml")
    rules = {"binance": {"BTCUSDT": {"lot_size": 0.01, "min_notional": 10.0}}}
    plan = plan_rebalance(holdings, {"main": {"BTC": 0.5}}, daily_panel, exchange_rules=rules)
    entry = plan["subaccounts"]["main"]
    assert entry["exchange_rules"] == "the cached binance rules"
    (btc,) = [o for o in entry["orders"] if o["symbol"] == "BTCUSDT"]
    assert btc["quantity"] == pytest.approx(round(btc["quantity"] / 0.01) * 0.01)


def test_cli_caches_the_rules_where_plans_find_them(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from trimtab.cli import app

    monkeypatch.setattr(
        markets_mod, "_make_exchange", lambda exchange_id: FakeExchange({"BTC/USDT": BTC})
    )
    result = CliRunner().invoke(
        app, ["data", "markets", "--exchange", "binance", "--cache", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "1 spot markets cached" in result.output
    assert cached_market_rules("binance", tmp_path)["BTCUSDT"]["min_notional"] == 5.0
