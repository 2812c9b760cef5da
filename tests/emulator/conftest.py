"""Fixtures: an emulator on the hand-made market of ``helpers`` (state in a temporary
file), and a real ccxt client on it with its markets loaded."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import ccxt
import pytest

from tests.emulator import Account, BinanceEmulator
from tests.emulator.helpers import KEY, KEY2, RULES, SECRET, SECRET2, client, market


@pytest.fixture
def make_emu(tmp_path) -> Iterator[Callable[..., BinanceEmulator]]:
    """Build and start emulators (closed at the end); keyword args as the constructor."""
    made: list[BinanceEmulator] = []

    def make(**kw) -> BinanceEmulator:
        kw.setdefault("rules", RULES)
        kw.setdefault(
            "accounts",
            [
                Account(KEY, SECRET, "main", {"USDT": "10000", "BTC": "0.5"}, {"USDT": "5000"}),
                Account(KEY2, SECRET2, "second", {"USDT": "1000"}, {}),
            ],
        )
        kw.setdefault("clock", "2023-01-03 00:05")
        kw.setdefault("state_path", tmp_path / "emu-state.json")
        data = kw.pop("data", None)
        emu = BinanceEmulator(market() if data is None else data, **kw).start()
        made.append(emu)
        return emu

    yield make
    for e in made:
        e.close()


@pytest.fixture
def emu(make_emu) -> BinanceEmulator:
    return make_emu()


@pytest.fixture
def ex(emu) -> ccxt.binance:
    c = client(emu)
    c.load_markets()
    return c
