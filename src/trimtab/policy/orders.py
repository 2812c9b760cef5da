"""From target weights to an order plan for one subaccount."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trimtab.domain import Instrument, Order, Side
from trimtab.domain.decisions import PortfolioState

# Weight changes smaller than this fraction of equity are float noise, not trades.
_NOISE = 1e-9


@dataclass(frozen=True)
class SkippedTrade:
    """A trade the plan wanted but could not send, and why."""

    symbol: str
    side: Side
    notional: float
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "side": str(self.side),
            "notional": self.notional,
            "reason": self.reason,
        }


def plan_orders(
    targets: np.ndarray,
    portfolio: PortfolioState,
    prices: np.ndarray,
    symbols: tuple[str, ...],
    instrument: Callable[[str], Instrument],
    *,
    reason: str,
    subaccount: str = "main",
    decision_id: int | None = None,
) -> tuple[list[Order], list[SkippedTrade]]:
    """Orders that move ``portfolio`` to ``targets`` (fractions of equity) at ``prices``.

    Sells are in base quantity (a zero target sells everything held); buys are in quote
    to spend, so that price moves before the fill change the quantity, not the cash
    needed. Trades below the lot size or the minimum notional are skipped, not sent,
    full exits included: a position too small to sell stays as dust.
    """
    equity = portfolio.equity
    orders: list[Order] = []
    skipped: list[SkippedTrade] = []
    current = portfolio.quantities * np.nan_to_num(prices)
    delta = targets * equity - current
    for j in np.flatnonzero(np.abs(delta) > _NOISE * max(equity, 1.0)):
        symbol = symbols[j]
        inst = instrument(symbol)
        price = prices[j]
        if delta[j] < 0:
            held = portfolio.quantities[j]
            if held <= 0:
                continue
            full_exit = targets[j] <= 0
            # A full exit sells every whole lot; what is left under a lot is dust.
            qty = inst.round_quantity(held if full_exit else min(-delta[j] / price, held))
            problem = inst.order_problem(qty, price)
            if problem:
                skipped.append(SkippedTrade(symbol, Side.SELL, -delta[j], problem))
                continue
            why = (
                f"{reason}: close position"
                if full_exit
                else f"{reason}: reduce to {targets[j]:.2%}"
            )
            orders.append(
                Order(
                    symbol,
                    Side.SELL,
                    quantity=qty,
                    reason=why,
                    subaccount=subaccount,
                    decision_id=decision_id,
                )
            )
        else:
            spend = delta[j]
            problem = inst.order_problem(inst.round_quantity(spend / price), price)
            if problem:
                skipped.append(SkippedTrade(symbol, Side.BUY, spend, problem))
                continue
            orders.append(
                Order(
                    symbol,
                    Side.BUY,
                    quote_quantity=spend,
                    reason=f"{reason}: raise to {targets[j]:.2%}",
                    subaccount=subaccount,
                    decision_id=decision_id,
                )
            )
    return orders, skipped
