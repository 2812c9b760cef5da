"""Smaller surfaces: server time, transfers between the spot and futures wallets (ccxt's
``transfer``), deposits from outside, funding on hourly bars with a rate function."""

from __future__ import annotations

import time
from decimal import Decimal as D

import ccxt
import pandas as pd
import pytest

from tests.emulator import Account, BinanceEmulator
from tests.emulator.helpers import KEY, RULES, SECRET, client, ms


def test_time_is_wall_time_and_the_clock_is_separate(emu, ex):
    # /time answers the wall clock (signatures are checked against it), not the market
    # clock, which stays where the test put it
    now = ex.fetch_time()
    assert abs(now - time.time() * 1000) < 86_400_000
    assert emu.clock_ms == ms("2023-01-03 00:05") < now - 365 * 86_400_000


def test_transfer_between_spot_and_futures(emu, ex):
    ex.transfer("USDT", 1000, "spot", "swap")
    assert emu.balances("main")["USDT"]["free"] == D("9000")
    assert emu.futures_wallet("main")["USDT"] == D("6000")
    ex.transfer("USDT", 250.5, "swap", "spot")
    assert emu.balances("main")["USDT"]["free"] == D("9250.5")
    income = ex.fapiPrivateGetIncome({"incomeType": "TRANSFER"})
    assert [i["income"] for i in income] == ["1000", "-250.5"]
    with pytest.raises(ccxt.InsufficientFunds):
        ex.transfer("USDT", 100000, "spot", "swap")


def test_deposit_from_outside(emu, ex):
    emu.deposit("main", "ETH", "2.5")
    emu.deposit("main", "USDT", "-100", wallet="futures")
    assert ex.fetch_balance()["ETH"]["free"] == 2.5
    assert ex.fetch_balance({"type": "future"})["USDT"]["total"] == 4900
    with pytest.raises(ValueError, match="has not"):
        emu.deposit("main", "BTC", "-1")


def test_funding_on_hourly_bars_with_a_rate_function(tmp_path):
    rows = [
        dict(timestamp=t, symbol="BTCUSDT", open=20000 + 10 * h, high=20000 + 10 * h + 5,
             low=20000 + 10 * h - 5, close=20000 + 10 * h + 10, volume=1.0)
        for h, t in enumerate(pd.date_range("2023-01-01", periods=48, freq="1h", tz="UTC"))
    ]  # fmt: skip

    def rate(symbol: str, when: int) -> float:
        return 0.0001 if pd.Timestamp(when, unit="ms").hour == 8 else -0.0002

    emu = BinanceEmulator(
        pd.DataFrame(rows),
        rules=RULES,
        funding_rates=rate,
        accounts=[Account(KEY, SECRET, "main", {}, {"USDT": "1000"})],
        clock="2023-01-01 01:00",
    )
    with emu:
        ex = client(emu)
        ex.load_markets()
        assert [b[0] for b in ex.fetch_ohlcv("BTC/USDT:USDT", "1h")][-2:] == [
            ms("2023-01-01 00:00"),
            ms("2023-01-01 01:00"),
        ]
        ex.create_order("BTC/USDT:USDT", "market", "buy", 0.1, params={"clientOrderId": "h-1"})
        assert emu.futures_wallet("main")["USDT"] == D(1000) - D("20010") * D("0.1") * D("0.0005")
        emu.set_clock("2023-01-01 17:30")
        got = [(h["timestamp"], h["amount"]) for h in ex.fetch_funding_history("BTC/USDT:USDT")]
        assert got == [
            (ms("2023-01-01 08:00"), -0.2008),  # -0.1 * 20080 (08:00 open) * 0.0001
            (ms("2023-01-01 16:00"), 0.4032),  # -0.1 * 20160 * -0.0002: a long receives
        ]
        assert ex.fetch_funding_rate("BTC/USDT:USDT")["fundingRate"] == -0.0002


def test_no_orders_after_the_data_ends(emu, ex):
    emu.set_clock("2023-01-20 23:59")  # inside the last bar (01-20)
    ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "end-1"})
    emu.set_clock("2023-01-21 00:00")
    with pytest.raises(ccxt.MarketClosed):
        ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "end-2"})
    assert ex.fetch_ticker("BTC/USDT")["last"] == 22000  # the last close stays the price
    fresh = client(emu)
    assert fresh.load_markets()["BTC/USDT"]["active"] is False
