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


# --- perpetual margin brackets, through the real ccxt client over a faked wire --------


def _binance_symbol(base, step, min_notional):
    """One fapi/v1/exchangeInfo entry as Binance sends it."""
    return {
        "symbol": f"{base}USDT",
        "pair": f"{base}USDT",
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "baseAsset": base,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.10",
                "maxPrice": "4529764",
                "tickSize": "0.10",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": str(step),
                "maxQty": "1000",
                "stepSize": str(step),
            },
            {"filterType": "MIN_NOTIONAL", "notional": str(min_notional)},
        ],
        "orderTypes": ["LIMIT", "MARKET"],
        "timeInForce": ["GTC"],
    }


EXCHANGE_INFO = {
    "timezone": "UTC",
    "serverTime": 1700000000000,
    "rateLimits": [],
    "assets": [],
    "symbols": [_binance_symbol("BTC", 0.001, 100), _binance_symbol("DOT", 0.1, 5)],
}
# GET /fapi/v1/leverageBracket (signed), as Binance answers it: DOT only.
LEVERAGE_BRACKETS = [
    {
        "symbol": "DOTUSDT",
        "brackets": [
            {
                "bracket": 1,
                "initialLeverage": 50,
                "notionalCap": 5000,
                "notionalFloor": 0,
                "maintMarginRatio": 0.01,
                "cum": 0.0,
            },
            {
                "bracket": 2,
                "initialLeverage": 20,
                "notionalCap": 25000,
                "notionalFloor": 5000,
                "maintMarginRatio": 0.025,
                "cum": 75.0,
            },
            {
                "bracket": 3,
                "initialLeverage": 5,
                "notionalCap": 1000000,
                "notionalFloor": 25000,
                "maintMarginRatio": 0.1,
                "cum": 1950.0,
            },
        ],
    }
]


def _binanceusdm(requests):
    """A real ccxt.binanceusdm whose HTTP layer answers from the Binance responses above."""
    import ccxt

    exchange = ccxt.binanceusdm({"enableRateLimit": False})

    def fetch(url, method="GET", headers=None, body=None):
        requests.append(url)
        if "/fapi/v1/exchangeInfo" in url:
            return EXCHANGE_INFO
        if "/fapi/v1/leverageBracket" in url:
            assert "signature=" in url  # a signed request, as Binance requires
            return LEVERAGE_BRACKETS
        if "exchangeInfo" in url:
            return {"symbols": []}
        if "/sapi/" in url:  # wallet endpoints ccxt calls once it has a key
            return []
        raise ccxt.NetworkError(f"unexpected request {url}")

    exchange.fetch = fetch
    return exchange


def test_perp_brackets_are_fetched_signed_and_cached_per_symbol(tmp_path, monkeypatch):
    from trimtab.data.markets import cached_margin_tiers, cached_perpetuals, fetch_markets
    from trimtab.domain import MarginTier
    from trimtab.domain.instruments import BINANCE_BTC_MARGIN_TIERS

    requests = []
    monkeypatch.setattr(markets_mod, "_make_exchange", lambda exchange_id: _binanceusdm(requests))
    monkeypatch.setenv("TRIMTAB_BINANCEUSDM_API_KEY", "key")
    monkeypatch.setenv("TRIMTAB_BINANCEUSDM_API_SECRET", "secret")
    got = fetch_markets("binanceusdm", tmp_path)
    assert any("/fapi/v1/leverageBracket" in u for u in requests)
    assert got.tiers_note is None and not got.spot
    assert got.perps["BTCUSDT-PERP"] == {"lot_size": 0.001, "min_qty": 0.001, "min_notional": 100.0}
    dot = (
        MarginTier(5_000, 0.01, 0.0, 50),
        MarginTier(25_000, 0.025, 75.0, 20),
        MarginTier(1_000_000, 0.1, 1_950.0, 5),
    )
    assert got.margin_tiers == {"DOTUSDT-PERP": dot}
    assert cached_margin_tiers("binanceusdm", tmp_path) == {"DOTUSDT-PERP": dot}
    # Instruments from the cache: DOT on its own brackets, BTC (none cached) on the
    # built-in ones; the keys are nowhere in the cache.
    perps = cached_perpetuals("binanceusdm", tmp_path)
    assert perps["DOTUSDT-PERP"].margin_tiers == dot and perps["DOTUSDT-PERP"].lot_size == 0.1
    assert perps["BTCUSDT-PERP"].margin_tiers == BINANCE_BTC_MARGIN_TIERS
    assert "secret" not in markets_path(tmp_path, "binanceusdm").read_text()
    # DOT's cached bracket 2 allows 20x: 30x on 10,000 is refused by the instrument.
    assert "maximum 20x" in perps["DOTUSDT-PERP"].leverage_problem(10_000, 30)


def test_without_a_key_the_rules_are_cached_and_the_note_says_why(tmp_path, monkeypatch):
    from trimtab.data.markets import cached_margin_tiers, fetch_markets

    monkeypatch.delenv("TRIMTAB_BINANCEUSDM_API_KEY", raising=False)
    monkeypatch.setattr(markets_mod, "_make_exchange", lambda exchange_id: _binanceusdm([]))
    got = fetch_markets("binanceusdm", tmp_path)
    assert set(got.perps) == {"BTCUSDT-PERP", "DOTUSDT-PERP"} and not got.margin_tiers
    assert 'requires "apiKey"' in got.tiers_note
    assert "TRIMTAB_BINANCEUSDM_API_KEY" in got.tiers_note
    assert cached_margin_tiers("binanceusdm", tmp_path) == {}


def test_cli_reports_perpetuals_and_why_brackets_are_missing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from trimtab.cli import app

    monkeypatch.delenv("TRIMTAB_BINANCEUSDM_API_KEY", raising=False)
    monkeypatch.setattr(markets_mod, "_make_exchange", lambda exchange_id: _binanceusdm([]))
    result = CliRunner().invoke(
        app, ["data", "markets", "--exchange", "binanceusdm", "--cache", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "2 perpetuals, 0 with margin brackets" in out
    assert "perpetuals use the built-in margin brackets" in out


def test_brackets_without_cum_are_made_continuous_and_bad_ones_named():
    from trimtab.data.markets import tiers_from_ccxt

    # Unified tiers as exchanges without a raw "cum" give them (e.g. Bybit).
    rows = [
        {
            "minNotional": 0,
            "maxNotional": 2_000_000,
            "maintenanceMarginRate": 0.005,
            "maxLeverage": 100,
        },
        {
            "minNotional": 2_000_000,
            "maxNotional": 4_000_000,
            "maintenanceMarginRate": 0.01,
            "maxLeverage": 50,
        },
    ]
    low, high = tiers_from_ccxt("XUSDT-PERP", rows)
    # 2,000,000 * (0.01 - 0.005) = 10,000: both brackets give 10,000 at the edge.
    assert high.maintenance_amount == pytest.approx(10_000)
    assert 2e6 * low.maintenance_margin_rate == pytest.approx(
        2e6 * high.maintenance_margin_rate - high.maintenance_amount
    )
    rows[1]["maintenanceMarginRate"] = None
    with pytest.raises(DataError, match="XUSDT-PERP: margin bracket 2 has no usable maintenance"):
        tiers_from_ccxt("XUSDT-PERP", rows)


def test_unreadable_cached_brackets_are_named(tmp_path):
    import json

    from trimtab.data.markets import cached_margin_tiers

    doc = {"rules": {}, "margin_tiers": {"DOTUSDT-PERP": [[5000, 2.0, 0, 50]]}}
    markets_path(tmp_path, "binanceusdm").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"margin_tiers.DOTUSDT-PERP: unreadable brackets"):
        cached_margin_tiers("binanceusdm", tmp_path)
