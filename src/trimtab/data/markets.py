"""Exchange trading rules (lot size, minimum quantity, minimum notional) through ccxt,
cached as JSON so plans use them offline.

Cache file: ``markets-{exchange}.json`` in the download cache, ``{"exchange", "fetched",
"rules": {"BTCUSDT": {"lot_size": 1e-05, "min_qty": 1e-05, "min_notional": 5.0}}}``.
Only active spot markets are kept, keyed by the concatenated symbol (``BTCUSDT``).
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trimtab.data.ccxt_source import _make_exchange
from trimtab.data.errors import DataError

# ccxt's precision modes (ccxt.DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE).
_DECIMAL_PLACES, _SIGNIFICANT_DIGITS, _TICK_SIZE = 2, 3, 4


def markets_path(cache_dir: str | Path, exchange_id: str) -> Path:
    return Path(cache_dir).expanduser() / f"markets-{exchange_id}.json"


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def rules_from_market(market: dict[str, Any], precision_mode: int) -> dict[str, float]:
    """Lot size, minimum quantity and minimum notional (quote) of one ccxt market."""
    rules: dict[str, float] = {}
    amount = _number((market.get("precision") or {}).get("amount"))
    if amount is not None:
        if precision_mode == _TICK_SIZE:
            rules["lot_size"] = amount
        elif precision_mode == _DECIMAL_PLACES:
            rules["lot_size"] = 10.0 ** -round(amount)
    limits = market.get("limits") or {}
    min_qty = _number((limits.get("amount") or {}).get("min"))
    min_cost = _number((limits.get("cost") or {}).get("min"))
    if min_qty is not None:
        rules["min_qty"] = min_qty
    if min_cost is not None:
        rules["min_notional"] = min_cost
    return rules


def fetch_market_rules(exchange_id: str, cache_dir: str | Path) -> dict[str, dict[str, float]]:
    """Load the exchange's markets through ccxt and cache the spot rules."""
    exchange = _make_exchange(exchange_id)
    try:
        markets = exchange.load_markets()
    except Exception as exc:  # ccxt raises many network and exchange error types
        raise DataError(
            f"{exchange_id}: could not load markets ({type(exc).__name__}: {exc})"
        ) from None
    mode = getattr(exchange, "precisionMode", _DECIMAL_PLACES)
    rules = {
        f"{m['base']}{m['quote']}".upper(): rules_from_market(m, mode)
        for m in markets.values()
        if m.get("spot") and m.get("active", True) is not False
    }
    path = markets_path(cache_dir, exchange_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"exchange": exchange_id, "fetched": datetime.now(UTC).isoformat(), "rules": rules}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)  # atomic: never a half-written cache
    return rules


def cached_market_rules(exchange_id: str, cache_dir: str | Path) -> dict[str, dict[str, float]]:
    """The cached rules of an exchange, or {} when none were fetched."""
    path = markets_path(cache_dir, exchange_id)
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
        return {str(k): dict(v) for k, v in doc["rules"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: unreadable market rules ({exc}); fetch them again") from None
