"""What ccxt returns, in trimtab's terms: pure functions, no network.

- Symbols: trimtab writes ``BTCUSDT`` (spot) and ``BTCUSDT-PERP`` (USDT-M perpetual);
  ccxt ``BTC/USDT`` and ``BTC/USDT:USDT``. ``symbol_table`` maps one to the other from
  ccxt's loaded markets (by the exchange's market id, so nothing is guessed).
- Trades: ``fill_data`` turns a ccxt trade (``fetch_my_trades``) into the data of a
  ``fill`` event as ``trimtab.execution.paper.ExchangeEvent.fill`` reads it: base
  quantity (contracts times contract size), price, and the fee exactly as the exchange
  charged it (cost and currency: on a Binance spot buy the base asset received).
- Orders: ``order_status`` maps ccxt's unified status and fill to the statuses of
  ``ExchangeOrder`` (open, partially_filled, filled, cancelled, expired, rejected).
- Rules: ``instrument_from_market`` reads lot step, minimum quantity, minimum notional
  and tick from a ccxt market (``precisionMode`` TICK_SIZE, as Binance's is), and
  ``margin_tiers`` a perpetual's brackets from ``fetch_leverage_tiers``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from trimtab.domain import Instrument
from trimtab.domain.instruments import InstrumentKind, MarginTier

__all__ = [
    "VenueDataError",
    "fill_data",
    "instrument_from_market",
    "margin_tiers",
    "order_status",
    "symbol_table",
]

PERP_SUFFIX = "-PERP"


class VenueDataError(ValueError):
    """Something the exchange returned that trimtab cannot read (names what and where)."""


def symbol_table(markets: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """trimtab symbol -> ccxt symbol for the spot and USDT-margined perpetual markets of
    ``markets`` (ccxt's ``exchange.markets``); inverse and dated markets are left out."""
    out: dict[str, str] = {}
    for ccxt_symbol, m in markets.items():
        market_id = str(m.get("id") or "")
        if not market_id:
            continue
        if m.get("spot"):
            out[market_id] = ccxt_symbol
        elif m.get("swap") and m.get("linear") and m.get("settle") == m.get("quote"):
            out[market_id + PERP_SUFFIX] = ccxt_symbol
    return out


def _number(value: Any, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise VenueDataError(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(x):
        raise VenueDataError(f"{what} is not finite: {value!r}")
    return x


def instrument_from_market(
    symbol: str, market: Mapping[str, Any], tiers: tuple[MarginTier, ...] = ()
) -> Instrument:
    """trimtab's ``Instrument`` for the ccxt ``market`` of trimtab ``symbol``.

    Lot step and tick from ``precision`` (step sizes: ccxt's TICK_SIZE mode), minimum
    quantity from ``limits.amount.min``, minimum notional from ``limits.cost.min``; base
    units are contracts times ``contractSize``. Perpetuals take ``tiers`` (else trimtab's
    default brackets for the base).
    """
    precision = market.get("precision") or {}
    limits = market.get("limits") or {}

    def step(value: Any, what: str) -> float:
        if value is None:
            return 0.0
        return _number(value, f"{symbol}: {what}")

    def minimum(group: str) -> float:
        value = (limits.get(group) or {}).get("min")
        return 0.0 if value is None else _number(value, f"{symbol}: limits.{group}.min")

    contract_size = market.get("contractSize")
    size = 1.0 if contract_size is None else _number(contract_size, f"{symbol}: contractSize")
    perp = bool(market.get("swap"))
    lot = step(precision.get("amount"), "amount precision") * (size if perp else 1.0)
    rules = {
        "lot_size": lot,
        "tick_size": step(precision.get("price"), "price precision"),
        "min_qty": minimum("amount") * (size if perp else 1.0),
        "min_notional": minimum("cost"),
    }
    base, quote = str(market.get("base") or ""), str(market.get("quote") or "")
    if not base or not quote:
        raise VenueDataError(f"{symbol}: the market names no base or quote")
    if perp:
        return Instrument(
            symbol=symbol,
            base=base,
            quote=quote,
            kind=InstrumentKind.LINEAR_PERPETUAL,
            contract_size=1.0,  # trimtab quantities are base units already
            margin_tiers=tuple(tiers),
            **rules,
        )
    return Instrument(symbol=symbol, base=base, quote=quote, **rules)


def margin_tiers(rows: list[Mapping[str, Any]], symbol: str) -> tuple[MarginTier, ...]:
    """trimtab's brackets from ccxt's leverage tiers of one market (``maxNotional``,
    ``maintenanceMarginRate``, ``maxLeverage`` and Binance's ``cum`` in ``info``)."""
    out = []
    for row in sorted(rows, key=lambda r: _number(r.get("maxNotional"), f"{symbol}: maxNotional")):
        info = row.get("info") or {}
        cum = info.get("cum", 0.0)
        out.append(
            MarginTier(
                max_notional=_number(row.get("maxNotional"), f"{symbol}: maxNotional"),
                maintenance_margin_rate=_number(
                    row.get("maintenanceMarginRate"), f"{symbol}: maintenanceMarginRate"
                ),
                maintenance_amount=_number(cum if cum is not None else 0.0, f"{symbol}: cum"),
                max_leverage=_number(row.get("maxLeverage"), f"{symbol}: maxLeverage"),
            )
        )
    return tuple(out)


def order_status(ccxt_status: str | None, filled: float, amount: float | None) -> str:
    """An ``ExchangeOrder`` status from ccxt's unified ``status`` and fill.

    ``open`` with a fill is ``partially_filled``; ``closed`` is ``filled``; an order the
    exchange ended after a part fill (Binance EXPIRED market remainder) is ``filled``
    for what it got, as the paper exchange reports it; ``canceled`` is ``cancelled``.
    A state trimtab has no name for (``canceling``: Binance PENDING_CANCEL, or none) is
    taken as still open, so that it is asked about again rather than taken as ended.
    """
    s = (ccxt_status or "").lower()
    if s == "closed":
        return "filled"
    if s in ("canceled", "cancelled"):
        return "cancelled"
    if s == "expired":
        return "filled" if filled > 0 else "expired"
    if s == "rejected":
        return "rejected"
    return "partially_filled" if filled > 0 else "open"


def fill_data(
    trade: Mapping[str, Any],
    *,
    symbol: str,
    subaccount: str,
    contract_size: float = 1.0,
    reason: str = "",
    leverage: float = 1.0,
) -> dict[str, Any]:
    """A ``fill`` event's data (the keys ``ExchangeEvent.fill`` reads, plus ``trade_id``
    and ``exchange_order_id``) from one ccxt trade of trimtab ``symbol``.

    The fee is the exchange's: ``fee.cost`` in ``fee.currency`` (a trade without a fee
    has fee 0 in the quote). ``order_id`` is the exchange's order id (Binance's are
    integers).
    """
    where = f"trade {trade.get('id')!r} of {symbol}"
    side = str(trade.get("side") or "").lower()
    if side not in ("buy", "sell"):
        raise VenueDataError(f"{where}: side {trade.get('side')!r}")
    amount = _number(trade.get("amount"), f"{where}: amount")
    price = _number(trade.get("price"), f"{where}: price")
    ts = trade.get("timestamp")
    if ts is None:
        raise VenueDataError(f"{where}: no timestamp")
    fee = trade.get("fee") or {}
    cost = fee.get("cost")
    currency = fee.get("currency")
    if cost is None:
        cost, currency = 0.0, currency or trade.get("symbol", "/").split("/")[-1].split(":")[0]
    order = trade.get("order")
    try:
        order_id = int(order)
    except (TypeError, ValueError):
        raise VenueDataError(f"{where}: exchange order id {order!r} is not an integer") from None
    liquidity = "maker" if str(trade.get("takerOrMaker") or "") == "maker" else "taker"
    return {
        "order_id": order_id,
        "timestamp": pd.Timestamp(int(ts), unit="ms", tz="UTC").isoformat(),
        "symbol": symbol,
        "side": side,
        "quantity": amount * contract_size,
        "price": price,
        "fee": _number(cost, f"{where}: fee"),
        "fee_currency": str(currency),
        "liquidity": liquidity,
        "subaccount": subaccount,
        "reason": reason,
        "leverage": float(leverage),
        "trade_id": str(trade.get("id")),
        "exchange_order_id": str(order),
    }
