"""From target weights to an order plan for one subaccount.

Spot columns are long-only: a sell never goes below what is held. Perpetual columns
(``instrument(symbol).is_perpetual``) take signed targets: a negative target opens or
adds to a short, a rise toward zero buys it back (``reduce_only``), a change of sign
goes through zero in one order (the ledger books the close and the opening part).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trimtab.domain import Instrument, Order, Side
from trimtab.domain.decisions import PortfolioState
from trimtab.domain.quotes import QuoteError, quote_problem

# Weight changes smaller than this fraction of equity are float noise, not trades.
_NOISE = 1e-9


@dataclass(frozen=True)
class SkippedTrade:
    """A trade the plan wanted but could not send, and why.

    ``notional`` is in quote at the decision price. ``dust`` marks what a full exit
    leaves behind because it cannot be sold (``quantity`` base units, below the lot or
    a minimum); the plan sends the sellable part, if any, as an order of its own.
    """

    symbol: str
    side: Side
    notional: float
    reason: str
    dust: bool = False
    quantity: float | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "symbol": self.symbol,
            "side": str(self.side),
            "notional": self.notional,
            "reason": self.reason,
        }
        if self.quantity is not None:
            out["quantity"] = self.quantity
        if self.dust:
            out["dust"] = True
        return out


_QUOTE_PROBLEMS: dict[tuple[str, str, str], str | None] = {}


def _quote_problem(symbol: str, quote: str, account_quote: str) -> str | None:
    """``quote_problem``, remembered: a plan asks it of every order."""
    key = (symbol, quote, account_quote)
    try:
        return _QUOTE_PROBLEMS[key]
    except KeyError:
        problem = _QUOTE_PROBLEMS[key] = quote_problem(symbol, quote, account_quote)
        return problem


def _zero_missing(prices: np.ndarray) -> np.ndarray:
    """``np.nan_to_num(prices)``, without its overhead when only NaN is there."""
    out = np.array(prices, dtype=float)
    out[np.isnan(out)] = 0.0
    if not np.isfinite(out).all():
        out = np.nan_to_num(out)
    return out


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
    account_quote: str = "USDT",
    leverage: float = 1.0,
) -> tuple[list[Order], list[SkippedTrade]]:
    """Orders that move ``portfolio`` to ``targets`` (fractions of equity) at ``prices``.

    Sells are in base quantity; buys are in quote to spend, so that price moves before
    the fill change the quantity, not the cash needed. Quantities are truncated to the
    lot, never rounded up. Trades below the lot size or the exchange minimums are
    skipped, not sent. A zero target sells every whole lot held, if that meets the
    minimums; what stays (under one lot, or all of a holding too small to sell) is
    reported as dust (``SkippedTrade.dust``), never sent.

    Perpetual columns are traded in base quantity in both directions (``_perp_order``):
    a sell opens or adds to a short at ``leverage`` (isolated margin = notional /
    leverage, the ``Order``'s leverage); a buy that only reduces a short is
    ``reduce_only`` and a zero target buys back (or sells) all of the position.

    ``prices`` are in ``account_quote``, the subaccount's cash: a symbol quoted in a
    currency not at par with it (``ADABTC`` in USDT) raises ``QuoteError``.
    """
    equity = portfolio.equity
    orders: list[Order] = []
    skipped: list[SkippedTrade] = []
    current = portfolio.quantities * _zero_missing(prices)
    delta = targets * equity - current
    traded = (np.abs(delta) > _NOISE * max(equity, 1.0)).nonzero()[0].tolist()
    if not traded:
        return orders, skipped
    # Python floats (the same doubles) for the per-order arithmetic: NumPy scalars cost
    # several times more per operation.
    quantities = portfolio.quantities.tolist()
    price_list = np.asarray(prices, dtype=float).tolist()
    delta_list = delta.tolist()
    target_list = np.asarray(targets, dtype=float).tolist()
    for j in traded:
        symbol = symbols[j]
        inst = instrument(symbol)
        if problem := _quote_problem(symbol, inst.quote, account_quote):
            raise QuoteError(f"plan for subaccount {subaccount!r}: {problem}")
        price = price_list[j]
        change = delta_list[j]
        if inst.is_perpetual:
            order = _perp_order(
                inst,
                target_list[j],
                quantities[j],
                price,
                equity,
                skipped,
                reason=reason,
                subaccount=subaccount,
                decision_id=decision_id,
                leverage=leverage,
            )
            if order is not None:
                orders.append(order)
            continue
        if change < 0:
            held = quantities[j]
            if held <= 0:
                continue
            target = target_list[j]
            full_exit = target <= 0
            qty = inst.round_quantity(held if full_exit else min(-change / price, held))
            problem = inst.order_problem(qty, price)
            if full_exit:
                # The exchange takes whole lots at or above its minimums; the rest stays.
                left = held if problem else held - qty
                if left > held * _NOISE:
                    why = problem or f"{left:.10g} left under one lot of {inst.lot_size:g} (dust)"
                    skipped.append(
                        SkippedTrade(symbol, Side.SELL, left * price, why, dust=True, quantity=left)
                    )
                if problem:
                    continue
            elif problem:
                skipped.append(SkippedTrade(symbol, Side.SELL, -change, problem))
                continue
            why = f"{reason}: close position" if full_exit else f"{reason}: reduce to {target:.2%}"
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
            spend = change
            problem = inst.order_problem(inst.round_quantity(spend / price), price)
            if problem:
                skipped.append(SkippedTrade(symbol, Side.BUY, spend, problem))
                continue
            orders.append(
                Order(
                    symbol,
                    Side.BUY,
                    quote_quantity=spend,
                    reason=f"{reason}: raise to {target_list[j]:.2%}",
                    subaccount=subaccount,
                    decision_id=decision_id,
                )
            )
    return orders, skipped


def _perp_order(
    inst: Instrument,
    target: float,
    held: float,
    price: float,
    equity: float,
    skipped: list[SkippedTrade],
    *,
    reason: str,
    subaccount: str,
    decision_id: int | None,
    leverage: float,
) -> Order | None:
    """The order moving a perpetual from ``held`` (signed base units) to ``target``
    (signed fraction of ``equity``) at ``price``, or None (recorded in ``skipped`` when
    the exchange's minimums refuse it)."""
    if not (math.isfinite(price) and price > 0):
        return None  # no price, no quantity: the asset is not trading
    symbol = inst.symbol
    want = target * equity / price if target else 0.0
    change = want - held
    side = Side.BUY if change > 0 else Side.SELL
    # Toward zero without crossing it: the order can only reduce the position.
    reducing = held != 0 and (change > 0) == (held < 0) and abs(change) <= abs(held) + 1e-12
    qty = abs(held) if reducing and not target else inst.round_quantity(abs(change))
    problem = inst.order_problem(qty, price)
    if problem:
        skipped.append(SkippedTrade(symbol, side, abs(change) * price, problem))
        return None
    why = f"{reason}: close {symbol}" if not target else f"{reason}: {target:+.2%}"
    return Order(
        symbol,
        side,
        quantity=qty,
        reduce_only=reducing,
        subaccount=subaccount,
        leverage=leverage,
        reason=why,
        decision_id=decision_id,
    )
