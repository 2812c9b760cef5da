"""What an exchange account holds, from ccxt's answers: pure functions, no network.

``spot_assets`` and ``futures_wallets`` read ``fetch_balance`` (spot, and the USDT-M
futures wallet: Binance's ``walletBalance``, realised, not ccxt's margin-balance total),
``futures_cash`` the futures USDT outside isolated margin (what trimtab's ledger counts
as cash: a position's margin is on the position), ``perp_positions`` ``fetch_positions``
(signed base quantity, entry, leverage, liquidation price, margin mode, isolated margin,
mark). Units: assets in their own units, prices and margins in USDT.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = [
    "AssetBalance",
    "PerpPosition",
    "VenueSnapshot",
    "futures_cash",
    "futures_wallets",
    "number",
    "perp_positions",
    "spot_assets",
]


@dataclass(frozen=True)
class AssetBalance:
    """One asset of an account: ``free`` + ``used`` (in orders) = ``total``, in units of
    the asset."""

    asset: str
    free: float
    used: float
    total: float


@dataclass(frozen=True)
class PerpPosition:
    """A perpetual position at the exchange: ``quantity`` signed base units,
    ``entry_price`` and ``mark`` USDT, ``liquidation_price`` USDT (None if none),
    ``margin`` the isolated margin USDT, ``unrealized_pnl`` USDT."""

    symbol: str
    quantity: float
    entry_price: float
    leverage: float | None
    liquidation_price: float | None
    margin_mode: str | None
    margin: float | None
    mark: float | None
    unrealized_pnl: float | None


@dataclass(frozen=True)
class VenueSnapshot:
    """What one account holds, read from the exchange at ``taken_at`` (UTC): every spot
    asset, every futures wallet asset (wallet balances: realised, without the positions'
    unrealised PnL), every open perpetual position and the marks (last price, USDT; the
    mark price for perpetuals) of the symbols held."""

    subaccount: str
    taken_at: pd.Timestamp
    spot: dict[str, AssetBalance] = field(default_factory=dict)
    futures: dict[str, AssetBalance] = field(default_factory=dict)
    positions: list[PerpPosition] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    #: The futures wallet's USDT outside isolated margin (what trimtab's ledger counts
    #: as cash; the margin is on the positions). 0 when the futures wallet was not read.
    futures_cash: float = 0.0


def number(value: Any) -> float | None:
    """A finite float from ccxt's value, else None."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def spot_assets(raw: Mapping[str, Any]) -> dict[str, AssetBalance]:
    """Every asset with a balance in a ccxt ``fetch_balance`` answer."""
    out = {}
    totals = raw.get("total") or {}
    free = raw.get("free") or {}
    used = raw.get("used") or {}
    for asset, total in totals.items():
        t = number(total)
        if t is None or t == 0:
            continue
        out[asset] = AssetBalance(
            asset, number(free.get(asset)) or 0.0, number(used.get(asset)) or 0.0, t
        )
    return out


def futures_wallets(raw: Mapping[str, Any]) -> dict[str, AssetBalance]:
    """The futures wallet: ``total`` Binance's ``walletBalance`` (realised: without
    unrealised PnL; ccxt's own total is the margin balance, with it), ``free`` its
    ``availableBalance``, ``used`` the rest."""
    out = spot_assets(raw)
    for row in (raw.get("info") or {}).get("assets") or []:
        asset = str(row.get("asset"))
        total = number(row.get("walletBalance"))
        if total is None or total == 0:
            out.pop(asset, None)
            continue
        free = number(row.get("availableBalance"))
        free = total if free is None else min(free, total)
        out[asset] = AssetBalance(asset, free, total - free, total)
    return out


def futures_cash(raw: Mapping[str, Any], wallets: Mapping[str, AssetBalance]) -> float:
    """The futures wallet's USDT outside isolated margin: Binance's USDT
    ``walletBalance`` less every position's ``isolatedWallet``."""
    info = raw.get("info") or {}
    wallet = None
    for row in info.get("assets") or []:
        if row.get("asset") == "USDT":
            wallet = number(row.get("walletBalance"))
    if wallet is None:
        usdt = wallets.get("USDT")
        return usdt.total if usdt else 0.0
    isolated = sum(number(p.get("isolatedWallet")) or 0.0 for p in info.get("positions") or [])
    return wallet - isolated


def perp_positions(
    rows: list[Mapping[str, Any]],
    name_of: Callable[[str], str | None],
    contract_size: Callable[[str], float],
    leverage_set: Callable[[str], float | None],
) -> list[PerpPosition]:
    """Open positions from ccxt's ``fetch_positions`` rows, by trimtab symbol
    (``name_of`` maps ccxt's; rows of other markets are left out). The leverage is the
    exchange's, else ``leverage_set(name)`` (what the venue set)."""
    out = []
    for p in rows:
        name = name_of(str(p.get("symbol")))
        contracts = number(p.get("contracts")) or 0.0
        if name is None or contracts == 0:
            continue
        sign = -1.0 if str(p.get("side")) == "short" else 1.0
        info = p.get("info") or {}
        lev = number(p.get("leverage"))
        if lev is None:
            lev = number(info.get("leverage")) or leverage_set(name)
        margin = number(info.get("isolatedWallet"))
        if margin is None:
            margin = number(p.get("collateral"))
        out.append(
            PerpPosition(
                symbol=name,
                quantity=sign * contracts * contract_size(name),
                entry_price=number(p.get("entryPrice")) or 0.0,
                leverage=lev,
                liquidation_price=number(p.get("liquidationPrice")) or None,
                margin_mode=p.get("marginMode") or info.get("marginType"),
                margin=margin,
                mark=number(p.get("markPrice")),
                unrealized_pnl=number(p.get("unrealizedPnl")),
            )
        )
    return out
