"""Test helpers for the emulator (importable by other tests): a small hand-made daily
market (prices chosen so that fills, fees and balances can be worked by hand), symbol
rules for it, and a real ccxt client aimed at an emulator."""

from __future__ import annotations

import ccxt
import pandas as pd

from tests.emulator import BinanceEmulator, SymbolRules, point_ccxt_at

KEY, SECRET = "test-key-main", "test-secret-main"
KEY2, SECRET2 = "test-key-second", "test-secret-second"
DAY_MS = 86_400_000

#: Daily bars from 2023-01-01: BTC opens 20000, 20100, ... (+100 a day), high open+500,
#: low open-500, close open+100; ETH opens 1500, 1510, ... high +50, low -50.
START = pd.Timestamp("2023-01-01", tz="UTC")


def market(days: int = 20) -> pd.DataFrame:
    rows = []
    for i, t in enumerate(pd.date_range(START, periods=days, freq="1D")):
        b = 20000 + 100 * i
        rows.append(
            dict(
                timestamp=t,
                symbol="BTCUSDT",
                open=b,
                high=b + 500,
                low=b - 500,
                close=b + 100,
                volume=10.0 + i,
            )
        )
        e = 1500 + 10 * i
        rows.append(
            dict(
                timestamp=t,
                symbol="ETHUSDT",
                open=e,
                high=e + 50,
                low=e - 50,
                close=e + 10,
                volume=100.0 + i,
            )
        )
    return pd.DataFrame(rows)


RULES = {
    "BTCUSDT": SymbolRules.make("0.01", "0.00001", min_notional=5, futures_min_notional=100),
    "ETHUSDT": SymbolRules.make("0.01", "0.0001", min_notional=5, futures_min_notional=20),
}


def ms(ts: str) -> int:
    return int(pd.Timestamp(ts, tz="UTC").value // 1_000_000)


def client(emu: BinanceEmulator, key: str = KEY, secret: str = SECRET, **config) -> ccxt.binance:
    """A real ccxt binance client aimed at ``emu``."""
    ex = ccxt.binance(
        {"apiKey": key, "secret": secret, "enableRateLimit": False, "timeout": 5000, **config}
    )
    return point_ccxt_at(ex, emu.url)
