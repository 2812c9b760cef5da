"""Valuation, covariance and symbol rules have one home each (issue 10): the review, the
rebalance plan, the ledger, the guard and the data readers give the same answers
because they call the same functions."""

from __future__ import annotations

import numpy as np
import pytest

from trimtab.data import symbols as data_symbols
from trimtab.domain import Position, perpetual, spot
from trimtab.domain.quotes import (
    QUOTES,
    asset_of,
    base_asset,
    split_symbol,
    spot_symbol,
    symbol_key,
)
from trimtab.domain.valuation import perp_equity, position_value, unrealized_pnl
from trimtab.guard.limits import normalize_symbol
from trimtab.risk.covariance import sample_covariance


def test_position_value_is_the_ledgers_above_liquidation():
    pos = Position(perpetual("ETHUSDT"), quantity=-2.0, entry_price=1800.0, margin=400.0)
    for mark in (1700.0, 1800.0, 1900.0):
        assert position_value(
            -2.0, mark, perpetual=True, entry_price=1800.0, margin=400.0
        ) == pytest.approx(pos.value(mark))
    assert position_value(3.0, 25.0, perpetual=False) == Position(spot("SOLUSDT"), 3.0).value(25.0)


def test_an_isolated_perp_past_liquidation_is_worth_nothing_a_cross_one_its_cash_too():
    # long 10 at 100 with 50 margin, marked at 80: PnL -200
    assert unrealized_pnl(10.0, 80.0, 100.0) == -200.0
    assert perp_equity(50.0, -200.0) == 0.0  # isolated: only the margin is lost
    assert perp_equity(50.0, -200.0, floor=-100.0) == -100.0  # cross: 100 of free cash too
    assert perp_equity(50.0, -200.0, floor=None) == -150.0  # the ledger's (no floor)


def test_sample_covariance_is_numpys():
    rng = np.random.default_rng(3)
    r = rng.normal(0, 0.02, (60, 4))
    np.testing.assert_allclose(sample_covariance(r), np.cov(r, rowvar=False), rtol=0, atol=0)
    assert sample_covariance(r[:, :1]).shape == (1, 1)
    assert not sample_covariance(r[:2]).any()  # under three bars: no estimate


def test_one_table_of_quotes():
    assert data_symbols.QUOTES is QUOTES
    assert split_symbol("ARBUSD") == ("AR", "BUSD")  # BUSD before USD
    assert split_symbol("ADABTC") == ("ADA", "BTC")
    assert base_asset("BTCUSDT-PERP") == data_symbols.base_asset("BTCUSDT-PERP") == "BTC"
    assert asset_of("DOGEUSDT") == "DOGE" and asset_of("DOGE") == "DOGE"
    assert normalize_symbol(" btc/usdt ") == symbol_key("BTC/USDT") == "BTCUSDT"
    assert data_symbols.normalize_symbol("btc/usdt:usdt") == (
        "BTCUSDT-PERP",
        "symbol 'btc/usdt:usdt' read as BTCUSDT-PERP (lower case read as upper case, "
        "ccxt form converted)",
    )
    for name in ("btc/usdt", "BTC_USDT", "BTCUSDT-PERP", "BTC/USDT:USDT", " btc usdt"):
        assert spot_symbol(name) == "BTCUSDT", name
