"""Plain domain types: instruments, orders, fills, positions, subaccounts, accounts."""

from trimtab.domain.account import Account, LedgerError, Liquidation, Position, Subaccount
from trimtab.domain.instruments import (
    Instrument,
    InstrumentKind,
    MarginTier,
    perpetual,
    split_symbol,
    spot,
)
from trimtab.domain.orders import Fill, Liquidity, Order, OrderType, Rejection, Side

__all__ = [
    "Account",
    "Fill",
    "Instrument",
    "InstrumentKind",
    "LedgerError",
    "Liquidation",
    "Liquidity",
    "MarginTier",
    "Order",
    "OrderType",
    "Position",
    "Rejection",
    "Side",
    "Subaccount",
    "perpetual",
    "split_symbol",
    "spot",
]
