"""Symbol names: trimtab writes markets as one token, ``BTCUSDT`` (spot) or ``BTCUSDT-PERP``.

ccxt writes ``BTC/USDT`` for spot and ``BTC/USDT:USDT`` for a USDT-settled perpetual;
freqtrade file names write them ``BTC_USDT`` and ``BTC_USDT_USDT``.
"""

from __future__ import annotations

import re

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


#: What a trimtab symbol may hold: upper-case letters and digits, with ``-`` or ``.``
#: between parts (``BTCUSDT``, ``1000SHIBUSDT``, ``BTCUSDT-PERP``, ``BTCUSDT-231229``).
#: Anything else (``[``, ``]``, spaces, quotes, a stray ``/``) is refused: such names
#: end up in file names, markup and reports, where they are unsafe or mean something else.
SYMBOL_RE = re.compile(r"^[A-Z0-9]+(?:[-.][A-Z0-9]+)*$")
_CCXT_RE = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+(?::[A-Z0-9]+(?:-[A-Z0-9]+)?)?$")


def normalize_symbol(raw: str) -> tuple[str | None, str | None]:
    """Read a symbol as written in a data file: ``(symbol, note)``.

    Surrounding spaces are stripped; lower case is read as upper case (exchanges ignore
    case: ``btcusdt`` is ``BTCUSDT``) and the ccxt form is converted (``BTC/USDT`` ->
    ``BTCUSDT``, ``btc/usdt:usdt`` -> ``BTCUSDT-PERP``), each with a ``note`` saying so.
    A name that still does not match ``SYMBOL_RE`` gives ``(None, why)``.
    """
    text = raw.strip()
    upper = text.upper()
    converted = to_symbol(upper) if _CCXT_RE.match(upper) else upper
    if not SYMBOL_RE.match(converted):
        bad = sorted(
            {ch for ch in converted if not (ch.isascii() and (ch.isalnum() or ch in "-."))}
        )
        shown = "".join(bad) if bad else ""
        why = (
            f"symbol {raw!r} has characters trimtab does not allow ({shown!r}); "
            if shown
            else f"symbol {raw!r} is not a valid name; "
        )
        return None, why + "use letters, digits and '-' or '.', e.g. BTCUSDT or BTCUSDT-PERP"
    notes = []
    if text != raw:
        notes.append("surrounding spaces removed")
    if upper != text:
        notes.append("lower case read as upper case")
    if converted != upper:
        notes.append("ccxt form converted")
    return converted, (
        f"symbol {raw!r} read as {converted} ({', '.join(notes)})" if notes else None
    )
