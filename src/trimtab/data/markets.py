"""Exchange trading rules (lot size, minimum quantity, minimum notional) and perpetual
margin brackets through ccxt, cached as JSON so plans and backtests use them offline.

Cache file: ``markets-{exchange}.json`` in the download cache::

    {"exchange", "fetched",
     "rules": {"BTCUSDT": {"lot_size": 1e-05, "min_qty": 1e-05, "min_notional": 5.0}},
     "perp_rules": {"BTCUSDT-PERP": {...}},
     "margin_tiers": {"BTCUSDT-PERP": [[50000, 0.004, 0.0, 125], ...]},
     "margin_tiers_note": "why no brackets were fetched, when none were"}

``rules`` holds the active spot markets keyed by the concatenated symbol (``BTCUSDT``);
``perp_rules`` and ``margin_tiers`` the active linear perpetuals (``BTCUSDT-PERP``). A
bracket row is (notional cap in quote, maintenance rate as a fraction, the exchange's
cumulative deduction "cum" in quote, maximum leverage), from ccxt's unified leverage-tier
structure (``fetch_leverage_tiers``); "cum" comes from the exchange's raw bracket where it
gives one (Binance), else from continuity of the maintenance margin at each bracket edge.
Binance serves its brackets only to signed requests: set ``TRIMTAB_<EXCHANGE>_API_KEY``
and ``TRIMTAB_<EXCHANGE>_API_SECRET`` (a read-only key is enough; upper-case exchange id)
before ``trimtab data markets``. Symbols without cached brackets use the built-in
schedules (``trimtab.domain.instruments.default_margin_tiers``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trimtab.data.ccxt_source import _make_exchange
from trimtab.data.errors import DataError
from trimtab.data.symbols import to_symbol
from trimtab.domain.instruments import Instrument, MarginTier, perpetual

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


@dataclass(frozen=True)
class MarketRules:
    """What ``fetch_markets`` cached: spot and perpetual rules, and margin brackets.

    ``tiers_note`` says why no brackets were fetched (e.g. the exchange wants an API key),
    ``tiers_skipped`` names perpetuals whose brackets were unusable, and why.
    """

    exchange: str
    spot: dict[str, dict[str, float]]
    perps: dict[str, dict[str, float]]
    margin_tiers: dict[str, tuple[MarginTier, ...]]
    tiers_note: str | None = None
    tiers_skipped: dict[str, str] = field(default_factory=dict)


def tiers_from_ccxt(symbol: str, tiers: list[dict[str, Any]]) -> tuple[MarginTier, ...]:
    """Margin brackets from ccxt's unified leverage tiers of one market (notionals in
    quote). Raises DataError naming the symbol and bracket when one is unusable."""
    if not tiers:
        raise DataError(f"{symbol}: no margin brackets")
    rows = sorted(tiers, key=_floor)
    out: list[MarginTier] = []
    cum, prev_rate = 0.0, None
    for k, t in enumerate(rows, 1):
        cap = _number(t.get("maxNotional"))
        rate = _number(t.get("maintenanceMarginRate"))
        lev = _number(t.get("maxLeverage"))
        missing = [
            name
            for name, v in (
                ("maxNotional", cap),
                ("maintenanceMarginRate", rate),
                ("maxLeverage", lev),
            )
            if v is None
        ]
        if missing:
            raise DataError(f"{symbol}: margin bracket {k} has no usable {', '.join(missing)}")
        assert cap is not None and rate is not None and lev is not None
        if prev_rate is not None:
            # Continuity at the bracket's floor: floor * prev_rate - prev_cum = floor * rate - cum.
            cum += _floor(t) * (rate - prev_rate)
        info = t.get("info")
        given = info.get("cum") if isinstance(info, dict) else None
        if given is not None:
            try:
                cum = float(given)
            except (TypeError, ValueError):
                raise DataError(f"{symbol}: margin bracket {k} has cum {given!r}") from None
        try:
            out.append(MarginTier(cap, rate, cum, lev))
        except ValueError as exc:
            raise DataError(f"{symbol}: margin bracket {k}: {exc}") from None
        prev_rate = rate
    caps = [t.max_notional for t in out]
    if len(set(caps)) != len(caps):
        raise DataError(f"{symbol}: margin brackets repeat a notional cap")
    return tuple(out)


def _floor(tier: dict[str, Any]) -> float:
    try:
        x = float(tier.get("minNotional") or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return x if math.isfinite(x) else 0.0


def _credentials(exchange: Any, exchange_id: str) -> None:
    """API key and secret from ``TRIMTAB_<ID>_API_KEY`` / ``_API_SECRET``, if set."""
    prefix = f"TRIMTAB_{exchange_id.upper()}_"
    key, secret = os.environ.get(prefix + "API_KEY"), os.environ.get(prefix + "API_SECRET")
    if key and secret:
        exchange.apiKey, exchange.secret = key, secret


def _is_linear_perp(m: dict[str, Any]) -> bool:
    return bool(
        m.get("swap")
        and m.get("linear")
        and m.get("active", True) is not False
        and (m.get("settle") or m.get("quote")) == m.get("quote")
    )


def fetch_markets(exchange_id: str, cache_dir: str | Path) -> MarketRules:
    """Load the exchange's markets and perpetual margin brackets through ccxt and cache
    them (atomically). Brackets that cannot be fetched leave a note, not an error: the
    lot rules are still cached and perpetuals fall back to the built-in schedules."""
    exchange = _make_exchange(exchange_id)
    _credentials(exchange, exchange_id)
    try:
        markets = exchange.load_markets()
    except Exception as exc:  # ccxt raises many network and exchange error types
        raise DataError(
            f"{exchange_id}: could not load markets ({type(exc).__name__}: {exc})"
        ) from None
    mode = getattr(exchange, "precisionMode", _DECIMAL_PLACES)
    spot = {
        f"{m['base']}{m['quote']}".upper(): rules_from_market(m, mode)
        for m in markets.values()
        if m.get("spot") and m.get("active", True) is not False
    }
    perp_markets = {to_symbol(m["symbol"]): m for m in markets.values() if _is_linear_perp(m)}
    perps = {s: rules_from_market(m, mode) for s, m in perp_markets.items()}
    tiers: dict[str, tuple[MarginTier, ...]] = {}
    skipped: dict[str, str] = {}
    note = None
    if perp_markets:
        if not (getattr(exchange, "has", {}) or {}).get("fetchLeverageTiers"):
            note = f"{exchange_id}: ccxt cannot fetch margin brackets here"
        else:
            try:
                raw = exchange.fetch_leverage_tiers([m["symbol"] for m in perp_markets.values()])
            except Exception as exc:  # authentication, network, exchange errors alike
                note = (
                    f"{exchange_id}: no margin brackets ({type(exc).__name__}: {exc}); if the "
                    f"exchange wants a key, set TRIMTAB_{exchange_id.upper()}_API_KEY and "
                    f"TRIMTAB_{exchange_id.upper()}_API_SECRET (read-only) and fetch again"
                )
                raw = {}
            for market_symbol, rows in (raw or {}).items():
                symbol = to_symbol(market_symbol)
                if symbol not in perp_markets:
                    continue
                try:
                    tiers[symbol] = tiers_from_ccxt(symbol, list(rows or []))
                except DataError as exc:
                    skipped[symbol] = str(exc)
    path = markets_path(cache_dir, exchange_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "exchange": exchange_id,
        "fetched": datetime.now(UTC).isoformat(),
        "rules": spot,
        "perp_rules": perps,
        "margin_tiers": {
            s: [
                [t.max_notional, t.maintenance_margin_rate, t.maintenance_amount, t.max_leverage]
                for t in ts
            ]
            for s, ts in tiers.items()
        },
    }
    if note:
        doc["margin_tiers_note"] = note
    if skipped:
        doc["margin_tiers_skipped"] = skipped
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)  # atomic: never a half-written cache
    return MarketRules(exchange_id, spot, perps, tiers, note, skipped)


def fetch_market_rules(exchange_id: str, cache_dir: str | Path) -> dict[str, dict[str, float]]:
    """Load the exchange's markets through ccxt, cache them, return the spot rules."""
    return fetch_markets(exchange_id, cache_dir).spot


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


def _read_cache(exchange_id: str, cache_dir: str | Path) -> tuple[Path, dict[str, Any] | None]:
    path = markets_path(cache_dir, exchange_id)
    if not path.exists():
        return path, None
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: unreadable market rules ({exc}); fetch them again") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: unreadable market rules (not an object); fetch them again")
    return path, doc


def cached_margin_tiers(
    exchange_id: str, cache_dir: str | Path
) -> dict[str, tuple[MarginTier, ...]]:
    """The cached margin brackets of an exchange's perpetuals (``BTCUSDT-PERP``), or {}."""
    path, doc = _read_cache(exchange_id, cache_dir)
    if doc is None:
        return {}
    out = {}
    for symbol, rows in (doc.get("margin_tiers") or {}).items():
        try:
            out[str(symbol)] = tuple(MarginTier(*map(float, row)) for row in rows)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{path}: margin_tiers.{symbol}: unreadable brackets ({exc}); fetch them again"
            ) from None
    return out


def cached_perpetuals(exchange_id: str, cache_dir: str | Path) -> dict[str, Instrument]:
    """Perpetual instruments (``BTCUSDT-PERP``) with the cached lot rules and margin
    brackets; a perpetual without cached brackets gets the built-in schedule."""
    path, doc = _read_cache(exchange_id, cache_dir)
    if doc is None:
        return {}
    tiers = cached_margin_tiers(exchange_id, cache_dir)
    out = {}
    for symbol, rules in (doc.get("perp_rules") or {}).items():
        try:
            out[symbol] = perpetual(symbol, margin_tiers=tiers.get(symbol, ()), **rules)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: perp_rules.{symbol}: {exc}; fetch them again") from None
    return out
