"""Position valuation: what a position adds to a subaccount's equity at a mark (quote).

One rule for the ledger (``Position.value``), the review and the rebalance plan:

- spot: ``quantity * mark``;
- perpetual: ``margin + unrealized PnL``, where unrealized PnL is
  ``quantity * (mark - entry_price)`` (quantity signed, < 0 short). Past its liquidation
  price an isolated position is worth nothing, not less: only its margin can be lost
  (``floor=0``); a cross position can also lose the subaccount's free cash behind it
  (``floor=-free_cash``). The ledger liquidates before that point, so it needs no floor
  (``floor=None``).

Exposure is a different number: ``quantity * mark`` for both kinds (``notional``).
"""

from __future__ import annotations

__all__ = ["notional", "perp_equity", "position_value", "unrealized_pnl"]


def unrealized_pnl(quantity: float, mark: float, entry_price: float) -> float:
    """``quantity * (mark - entry_price)``, quote; 0 for a flat position."""
    return quantity * (mark - entry_price) if quantity else 0.0


def notional(quantity: float, mark: float) -> float:
    """Signed exposure at ``mark``, quote (spot and perpetuals alike)."""
    return quantity * mark


def perp_equity(margin: float, pnl: float, *, floor: float | None = 0.0) -> float:
    """A perpetual's equity: ``margin + pnl``, never below ``floor`` (None: no floor)."""
    value = margin + pnl
    return value if floor is None else max(value, floor)


def position_value(
    quantity: float,
    mark: float,
    *,
    perpetual: bool,
    entry_price: float = 0.0,
    margin: float = 0.0,
    floor: float | None = 0.0,
) -> float:
    """What the position adds to equity at ``mark`` (see the module docstring)."""
    if perpetual:
        return perp_equity(margin, unrealized_pnl(quantity, mark, entry_price), floor=floor)
    return quantity * mark
