"""A bar's market orders executed as arrays: the simulated broker's fast path.

``SimulatedBroker._fill_pending`` tries every open order of a bar one by one
(``_execute``: slippage, fee, the cash and volume caps, the lot, the exchange minimums,
the fill guard, the ledger). For the bar of a target replay (every order a market order
of one spot subaccount, at most one per symbol, good for the next bar only, quote-sized
buys) the same numbers can be computed for all orders at once: each order's quantity,
price and fee depend only on the bar, the holding at the open (sells come first and touch
each symbol once) and the plan's buy scale, which needs the cash after the sells.
``fill_bar`` computes them with NumPy, element by element with the same IEEE operations
in the same order as ``_execute`` (``+ - * /`` and ``sqrt`` are correctly rounded in both),
checks that no order of the bar takes a branch it does not reproduce (a buy clamped to
the cash left, a fill the ledger would refuse, a limit that could bind at the fill), and
only then books the fills, in the event path's order, with the ledger's own arithmetic.
When a check fails it changes nothing and returns False: the event path runs the bar.

The fill guard is skipped only where it provably allows every fill as asked
(``fill_guard.spot_fills_unbounded(subaccount)``: the limits cap nothing a spot book's
cash does not bound, the first exit of ``LimitGuard.check_fill``); its counters (the
day's turnover, each order's filled notional) are still kept, by ``on_fills``.

Units: quantities in base units, prices and cash in quote (USDT), fees in quote.
"""

from __future__ import annotations

import math
from math import isfinite
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trimtab.domain import Fill, Instrument, Liquidity, Order, OrderType, Rejection, Side
from trimtab.domain.account import Position
from trimtab.domain.orders import TimeInForce
from trimtab.execution.broker import ExecutionReport
from trimtab.execution.costs import BPS

if TYPE_CHECKING:
    from trimtab.execution.simulated import SimulatedBroker

__all__ = ["fill_bar"]

# The ledger's tolerance for a fill against cash or a holding (``domain.account._DUST``).
_DUST = 1e-12


def fill_bar(
    broker: SimulatedBroker,
    orders: list[Order],
    i: int,
    ts: pd.Timestamp,
    report: ExecutionReport,
) -> bool:
    """Fill ``orders`` (the bar's open orders in the broker's fill order: sells, then
    buys) in bar ``i`` as ``_fill_pending`` would, into ``report``; False, with nothing
    changed, when the bar is not one this path reproduces exactly."""
    from trimtab.execution.simulated import _REST_EPS, _Outcome

    costs = broker.costs
    if costs.fee_currency != "quote" or broker._perps_traded or not orders:
        return False
    name = orders[0].subaccount
    sub = broker.account.subaccounts.get(name)
    if sub is None:
        return False
    guard = broker.fill_guard
    if guard is not None:
        unbounded = getattr(guard, "spot_fills_unbounded", None)
        if unbounded is None or not hasattr(guard, "on_fills") or not unbounded(name):
            return False
    m = broker.market
    column = m.column
    n = len(orders)
    market, next_bar, buy_side = OrderType.MARKET, TimeInForce.NEXT_BAR, Side.BUY
    if any(
        o.type is not market
        or o.reduce_only
        or o.time_in_force is not next_bar
        or o.subaccount != name
        for o in orders
    ):
        return False
    cols_l = [column[o.symbol] for o in orders]
    if len(set(cols_l)) != n:  # one order per symbol: each sell sees the open's holding
        return False
    buy_l = [o.side is buy_side for o in orders]
    n_sell = buy_l.index(True) if True in buy_l else n
    if not all(buy_l[n_sell:]):  # a sell after a buy: not the broker's order
        return False
    amount_l = [o.quantity for o in orders[:n_sell]] + [o.quote_quantity for o in orders[n_sell:]]
    if None in amount_l:
        return False
    every = _instruments(broker)
    insts = [every[j] for j in cols_l]
    if any(inst.is_perpetual for inst in insts):
        return False
    positions = sub.positions
    held_l = [positions[o.symbol].quantity if o.symbol in positions else 0.0 for o in orders]
    # The bar's numbers of the orders' columns, as Python floats (one NumPy gather each):
    # a bar has a few orders, and a float's arithmetic is a NumPy call's without its
    # fixed cost (the same IEEE operations, ``sqrt`` correctly rounded in both).
    cols = np.array(cols_l, dtype=np.int64)
    tradable = m.tradable[i, cols].tolist()
    opens = m.open[i, cols].tolist()
    volume = m.quote_volume[i, cols].tolist()
    share = costs.max_volume_share
    spread_bps = costs.half_spread_bps
    half = [spread_bps] * n
    h = m.half_spread_bps
    if costs.spread == "bars" and h is not None and i > 0:
        half = [max(x, spread_bps) if isfinite(x) else spread_bps for x in h[i - 1, cols].tolist()]
    impact_1pct = costs.impact_bps_at_1pct
    fee_rate = costs.fee_rate(False)
    inf = math.inf
    # Each order's cap (quote) and whether _execute prices it (``reached``).
    cap = [inf] * n
    reached = list(tradable)
    if share is not None:
        for k in range(n):
            v = volume[k]
            c = share * v if isfinite(v) and v > 0 else 0.0
            cap[k] = c
            reached[k] = tradable[k] and c > 0

    def slippage(want: float, k: int) -> float:
        # CostModel.slippage at min(want, cap) of order k.
        impact = 0.0
        if impact_1pct:
            notional = want if share is None else min(want, cap[k])
            vol = volume[k]
            part = notional / vol if isfinite(vol) and vol > 0 else 1.0
            if notional > 0:
                impact = impact_1pct * math.sqrt(part / 0.01)
        return (half[k] + impact) * BPS

    def lot_and_minimums(qty: float, price: float, k: int) -> tuple[float, bool]:
        # inst.round_quantity(max(q, 0)), then order_problem's tests.
        qty = max(qty, 0.0)
        inst = insts[k]
        if inst.lot_size > 0 and qty > 0:
            qty = inst.round_quantity(qty)
        problem = qty <= 0 or qty * price < inst.min_notional or qty < inst.min_qty
        return qty, problem

    def capped_lot(qty: float, price: float, k: int) -> tuple[float, bool, bool]:
        # The volume cap, then the lot and the minimums: (quantity, capped, problem).
        capped = share is not None and qty * price > cap[k]
        if capped:
            qty = cap[k] / price
        qty, problem = lot_and_minimums(qty, price, k)
        return qty, capped, problem

    # --- sells: each from the holding at the open -------------------------------------
    # What each order filled, and why the rest of it did not (None: all of it filled).
    outcomes: list[_Outcome | None] = [None] * n
    filled = [0.0] * n
    listed = [True] * n  # False: rejected as not listed, no outcome
    shortfall: dict[int | None, float] = {}
    cap_note = "volume cap: at most {share:.0%} of the bar's quote volume ({cap:,.2f})"
    sell_rows: list[tuple[int, float, float, float, float]] = []
    cash = sub.cash  # after the sells, as the ledger adds them
    for k in range(n_sell):
        o = orders[k]
        a = amount_l[k]
        if reached[k]:
            price_open = opens[k]
            slip = slippage(a * price_open, k)
            price = price_open * (1 - slip)
            q, capped, problem = capped_lot(min(a, held_l[k]), price, k)
            no_liquidity = slip >= 1
            if not no_liquidity and not problem:
                # A fill's price must be a finite number > 0 (``Fill``'s check, the fill
                # guard's); its quantity is then finite, > 0 and at most the holding (the
                # lesser of the order and the holding, truncated down), so the ledger
                # takes it and its fee is finite and >= 0.
                if not (price > 0 and price < inf):
                    return False
                notional = q * price
                fee = notional * fee_rate
                sell_rows.append((k, q, price, notional, fee))
                cash += notional - fee
                filled[k] = q
                if capped:
                    outcomes[k] = _Outcome(q, False, cap_note.format(share=share, cap=cap[k]))
                elif a - q > a * _REST_EPS:
                    outcomes[k] = _Outcome(q, True, "", silent=True)
                elif not a > q:
                    continue  # all of it sold: no shortfall, nothing left
            elif no_liquidity:
                why = f"no liquidity: impact of {slip:.0%} or more"
                outcomes[k] = _Outcome(0.0, False, why)
            else:
                held = held_l[k]
                problem_text = insts[k].order_problem(q, price)
                exit_ = o.quantity >= held
                if exit_ and held > 0:
                    problem_text = f"{problem_text}: {held:g} {o.symbol} left as dust"
                if capped and not exit_:
                    why = f"{cap_note.format(share=share, cap=cap[k])} ({problem_text})"
                    outcomes[k] = _Outcome(0.0, False, why)
                else:
                    why = f"{o.symbol}: {problem_text}"
                    outcomes[k] = _Outcome(0.0, True, why, rejected=True)
        elif not tradable[k] and not m.live[i, cols_l[k]]:
            listed[k] = False
            continue
        elif not tradable[k]:
            outcomes[k] = _Outcome(0.0, False, f"no bar for {o.symbol} at {ts}")
        else:
            outcomes[k] = _Outcome(0.0, False, f"no volume in the bar at {ts}")
        unsold = max(a - filled[k], 0.0)
        if unsold > 0:
            price = opens[k]
            if not isfinite(price):
                price = m.last_close(i, cols_l[k])
            shortfall[o.decision_id] = shortfall.get(o.decision_id, 0.0) + unsold * price

    # --- buys: the plan's share of its sells, then the cash (``_quote_buy_scale``) -------
    buy_rows: list[tuple[int, float, float, float, float, float, str]] = []
    if n_sell < n:
        decisions = {o.decision_id for o in orders[n_sell:]}
        if len(decisions) != 1:
            return False
        (key,) = decisions
        # Sums in order, one addition at a time (np.cumsum's, not a pairwise sum).
        total = amount_l[n_sell]
        for a in amount_l[n_sell + 1 :]:
            total += a
        funded = max(total - shortfall.get(key, 0.0), 0.0) / total if total > 0 else 1.0
        cash_share = 1.0
        wanted = None
        for k in range(n_sell, n):
            if tradable[k]:
                x = amount_l[k] * funded
                wanted = x if wanted is None else wanted + x
        if wanted is not None and wanted > cash:
            cash_share = max(cash, 0.0) / wanted
        cash_cut = cash_share < 1 - 1e-12
        fund_wait = funded < 1 - 1e-12
        # Each buy in turn against the cash left then: one asking more is clamped to it
        # (recomputed here as _execute does); a fill the ledger would refuse is not
        # reproduced (the event path runs the bar).
        left = cash
        for k in range(n_sell, n):
            o = orders[k]
            waits = ["waiting for the sells that fund it"] if fund_wait else []
            if not reached[k]:
                if not tradable[k]:
                    if not m.live[i, cols_l[k]]:
                        listed[k] = False
                        continue
                    outcomes[k] = _Outcome(0.0, False, f"no bar for {o.symbol} at {ts}")
                else:
                    outcomes[k] = _Outcome(0.0, False, f"no volume in the bar at {ts}")
                continue
            a = amount_l[k]
            price = opens[k] * (1 + slippage(a * funded, k))
            # A fill's price must be a finite number > 0 (``Fill``'s check, the fill guard's).
            if not (price > 0 and price < inf):
                return False
            unit_cost = price * (1 + fee_rate)
            spend = a * funded * cash_share
            q, capped, problem = capped_lot(spend / unit_cost, price, k)
            ok, cut = not problem, cash_cut
            if spend > left:
                cut = True
                q = max(left, 0.0) / unit_cost
                capped = q * price > cap[k]
                if capped:
                    q = cap[k] / price
                q = insts[k].round_quantity(max(q, 0.0))
                ok = insts[k].order_problem(q, price) is None
            if capped:
                waits.append(cap_note.format(share=share, cap=cap[k]))
            if not ok:
                problem_text = insts[k].order_problem(q, price)
                if waits:
                    outcomes[k] = _Outcome(0.0, False, f"{'; '.join(waits)} ({problem_text})")
                else:
                    why = f"{o.symbol}: {problem_text}"
                    outcomes[k] = _Outcome(0.0, True, why, rejected=True)
                continue
            notional = q * price
            fee = notional * fee_rate
            cost = notional + fee
            if cost > left * (1 + _DUST) + _DUST:
                return False
            # Subaccount._apply_spot_fill's cash, which stops at zero.
            left = max(left - cost, 0.0) if cost > left else left - cost
            reason = f"{o.reason}; scaled to available cash" if cut else o.reason
            buy_rows.append((k, q, price, notional, fee, cost, reason))
            got = q * unit_cost
            filled[k] = got
            if waits:
                outcomes[k] = _Outcome(got, False, "; ".join(waits))
            elif a - got > a * _REST_EPS:
                outcomes[k] = _Outcome(got, True, "", silent=True)

    # --- booked: fills in order, then the guard's counters, then what did not fill -------
    fills = report.fills
    quote_fees = sub.fees_by_currency
    filled_ids: list[int] = []
    notionals: list[float] = []
    # Subaccount._apply_spot_fill with fees in quote, its sums kept in locals meanwhile
    # (the same additions in the same order).
    cash, realized, fees_paid = sub.cash, sub.realized_pnl, sub.fees_paid
    taker, new, set_dict = Liquidity.TAKER, object.__new__, object.__setattr__
    for k, q, price, notional, fee in sell_rows:
        o, inst = orders[k], insts[k]
        symbol = o.symbol
        fill = new(Fill)
        set_dict(fill, "__dict__", _fill_fields(o, ts, q, price, fee, inst.quote, o.reason, taker))
        pos = positions[symbol]
        disposed = min(q, pos.quantity)
        pnl = disposed * (price - pos.entry_price)
        pos.realized_pnl += pnl
        realized += pnl
        rest = pos.quantity - disposed
        if rest <= q * _DUST:
            rest = 0.0
        pos.quantity = rest
        if rest == 0.0:
            pos.entry_price = 0.0
        cash += notional - fee
        fees_paid += fee
        quote_fees[inst.quote] = quote_fees.get(inst.quote, 0.0) + fee
        if rest == 0 and pos.margin == 0:
            del positions[symbol]
        fills.append(fill)
        filled_ids.append(o.id)
        notionals.append(notional)
    for k, q, price, notional, fee, cost, reason in buy_rows:
        o, inst = orders[k], insts[k]
        symbol = o.symbol
        fill = new(Fill)
        set_dict(fill, "__dict__", _fill_fields(o, ts, q, price, fee, inst.quote, reason, taker))
        pos = positions.get(symbol)
        if pos is None:
            pos = positions[symbol] = Position(instrument=inst)
        held_before = pos.quantity
        new_qty = held_before + q
        pos.entry_price = (held_before * pos.entry_price + q * price) / new_qty
        pos.quantity = new_qty
        cash = max(cash - cost, 0.0) if cost > cash else cash - cost
        fees_paid += fee
        quote_fees[inst.quote] = quote_fees.get(inst.quote, 0.0) + fee
        fills.append(fill)
        filled_ids.append(o.id)
        notionals.append(notional)
    sub.cash, sub.realized_pnl, sub.fees_paid = cash, realized, fees_paid
    if guard is not None and filled_ids:
        guard.on_fills(name, ts, filled_ids, notionals)
    still_open: list[Order] = []
    for k, o in enumerate(orders):
        if not listed[k]:
            report.rejections.append(Rejection(o, ts, f"{o.symbol} is not listed"))
            continue
        outcome = outcomes[k]
        if outcome is None:
            continue
        rest_order = broker._finish(o, filled[k], outcome.why, i, ts, report, outcome)
        if rest_order is not None:
            still_open.append(rest_order)
    broker._books = {}
    broker._pending = still_open
    return True


def _instruments(broker: SimulatedBroker) -> list[Instrument]:
    """The broker's instrument of each market column, built once (instruments are
    immutable, and the broker keeps each symbol's once it is asked)."""
    insts = getattr(broker, "_vector_instruments", None)
    if insts is None:
        insts = broker._vector_instruments = [broker.instrument(s) for s in broker.market.symbols]
    return insts


def _fill_fields(
    o: Order,
    ts: pd.Timestamp,
    quantity: float,
    price: float,
    fee: float,
    quote: str,
    reason: str,
    liquidity: Liquidity,
) -> dict:
    """The fields of a taker fill of ``o`` as ``SimulatedBroker._make_fill`` builds it;
    its checks (quantity and price finite and > 0, fee finite and >= 0) were made on the
    arrays."""
    return {
        "order_id": o.id,
        "timestamp": ts,
        "symbol": o.symbol,
        "side": o.side,
        "quantity": quantity,
        "price": price,
        "fee": fee,
        "fee_currency": quote,
        "liquidity": liquidity,
        "subaccount": o.subaccount,
        "reason": reason,
        "leverage": o.leverage,
    }
