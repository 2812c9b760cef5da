"""A local Binance REST emulator for tests (see ``tests.emulator.binance``), and
``point_ccxt_at`` to aim a real ccxt ``binance`` client at it.

A client needs, besides its keys::

    ex = ccxt.binance({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False})
    point_ccxt_at(ex, emu.url)

``point_ccxt_at`` sets:

- every ``urls['api']`` entry (spot ``public``/``private``/``v1``, ``fapiPublic*``,
  ``fapiPrivate*``, ``fapiData``, and ``sapi*``, ``dapi*``, ``eapi*``, ``papi*`` so that
  nothing can reach the internet) to the emulator's URL plus the entry's own path
  (``/api/v3``, ``/fapi/v1``...);
- ``options['fetchMarkets'] = {'types': ['spot', 'linear']}``: load_markets calls only
  ``/api/v3/exchangeInfo`` and ``/fapi/v1/exchangeInfo`` (no inverse ``dapi``);
- ``options['fetchCurrencies'] = False``: no ``sapi/capital/config/getall`` call (the
  currencies are derived from the markets);
- ``options['fetchMargins'] = False``: no ``sapi/margin/allPairs`` calls;
- ``options['fetchOpenOrders']['warnWithoutSymbol'] = False``: open orders of every
  symbol in one call (ccxt refuses it otherwise);
- ccxt picks its per-market error tables (spot vs linear) by the URL's host
  (``https://api.binance.com/...`` vs ``https://fapi...``); for the emulator's URL it
  would fall back to the common table only (e.g. futures ``-2019 Margin is
  insufficient`` would be a bare ExchangeError). With ``errors_by_url=True`` (the
  default) the instance's ``get_exceptions_by_url`` also classifies the emulator's
  ``/api/`` and ``/sapi/`` paths as spot (as binance.com's ``api.`` host) and ``/fapi/``
  paths as linear, so ccxt raises exactly the classes it raises against binance.com.
  Nothing else in ccxt is touched.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tests.emulator.binance import FAULT_KINDS, Account, ApiError, BinanceEmulator, SymbolRules

__all__ = [
    "FAULT_KINDS",
    "Account",
    "ApiError",
    "BinanceEmulator",
    "SymbolRules",
    "ccxt_options",
    "point_ccxt_at",
]


def ccxt_options() -> dict[str, Any]:
    """The ccxt ``options`` a binance client needs against the emulator (merged by
    ``point_ccxt_at``; shown here so a caller can pass them at construction too)."""
    return {
        "fetchMarkets": {"types": ["spot", "linear"]},
        "fetchCurrencies": False,
        "fetchMargins": False,
        "fetchOpenOrders": {"warnWithoutSymbol": False},
    }


def point_ccxt_at(exchange: Any, url: str, *, errors_by_url: bool = True) -> Any:
    """Aim a ccxt ``binance`` instance at the emulator at ``url`` (``emu.url``); returns
    the instance. See the module docstring for what is set and why."""
    base = url.rstrip("/")
    api = exchange.urls["api"]
    for name, old in list(api.items()):
        if isinstance(old, str):
            api[name] = base + urlsplit(old).path
    exchange.urls["api"] = api
    for key, value in ccxt_options().items():
        if isinstance(value, dict) and isinstance(exchange.options.get(key), dict):
            exchange.options[key] = {**exchange.options[key], **value}
        else:
            exchange.options[key] = value
    if errors_by_url:
        original = exchange.get_exceptions_by_url

        def get_exceptions_by_url(u: Any, exact_or_broad: str) -> dict:
            kind = None
            if isinstance(u, str) and u.startswith((base + "/api/", base + "/sapi/")):
                kind = "spot"
            elif isinstance(u, str) and u.startswith(base + "/fapi/"):
                kind = "linear"
            if kind is None:
                return original(u, exact_or_broad)
            tables = exchange.safe_dict(exchange.exceptions, kind, {})
            return exchange.safe_dict(tables, exact_or_broad, {})

        exchange.get_exceptions_by_url = get_exceptions_by_url
    return exchange
