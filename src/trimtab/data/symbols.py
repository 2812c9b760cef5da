"""Symbol names: trimtab writes markets as one token, ``BTCUSDT`` (spot) or ``BTCUSDT-PERP``.

ccxt writes ``BTC/USDT`` for spot and ``BTC/USDT:USDT`` for a USDT-settled perpetual;
freqtrade file names write them ``BTC_USDT`` and ``BTC_USDT_USDT``.
"""

from __future__ import annotations

#: Quote currencies tried, in order, when splitting ``BTCUSDT`` into base and quote.
#: ``BUSD`` before ``USD`` so that ``ARBUSD`` (Arweave/BUSD in the shared data) is AR.
QUOTES = ("USDT", "BUSD", "USDC", "FDUSD", "TUSD", "USD", "BTC", "ETH", "BNB", "EUR")


def to_symbol(market: str) -> str:
    """``BTC/USDT`` -> ``BTCUSDT``; ``BTC/USDT:USDT`` -> ``BTCUSDT-PERP``; others unchanged.

    A dated future (``BTC/USDT:USDT-231229``) keeps its expiry: ``BTCUSDT-231229``.
    """
    if "/" not in market:
        return market
    pair, _, settle = market.partition(":")
    base, _, quote = pair.partition("/")
    if not settle:
        return f"{base}{quote}"
    _, _, expiry = settle.partition("-")
    return f"{base}{quote}-{expiry}" if expiry else f"{base}{quote}-PERP"


def base_asset(symbol: str) -> str | None:
    """``BTCUSDT`` -> ``BTC`` by stripping a known quote (see ``QUOTES``); None if none fits."""
    core = symbol.split("-", 1)[0]
    for quote in QUOTES:
        if core.endswith(quote) and len(core) > len(quote):
            return core[: -len(quote)]
    return None
