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
from typing import TYPE_CHECKING, NamedTuple

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
    rules = _rules(broker)
    cols = np.array(cols_l, dtype=np.int64)
    if rules.any_perpetual and rules.perpetual[cols].any():
        return False
    insts = [rules.instruments[j] for j in cols_l]
    lots, min_qty, min_notional = rules.lot[cols], rules.min_qty[cols], rules.min_notional[cols]
    positions = sub.positions
    held_l = [positions[o.symbol].quantity if o.symbol in positions else 0.0 for o in orders]
    amount, held = np.array(amount_l, dtype=float), np.array(held_l, dtype=float)
    tradable = m.tradable[i, cols]
    opens = m.open[i, cols]
    volume = m.quote_volume[i, cols]
    share = costs.max_volume_share
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if share is None:
            # No cap: min(want, inf) is want, and nothing is ever above it.
            cap = np.full(n, math.inf)
            no_volume = np.zeros(n, dtype=bool)
            reached = tradable
        else:
            cap = np.where(np.isfinite(volume) & (volume > 0), share * volume, 0.0)
            no_volume = ~(cap > 0)
            reached = tradable & ~no_volume  # the orders _execute prices
        half: float | np.ndarray = costs.half_spread_bps
        h = m.half_spread_bps
        if costs.spread == "bars" and h is not None and i > 0:
            row = h[i - 1, cols]
            half = np.where(np.isfinite(row), np.maximum(row, costs.half_spread_bps), half)
        fee_rate = costs.fee_rate(False)

        def slippage(want: np.ndarray, at: slice) -> np.ndarray:
            # CostModel.slippage at min(want, cap), element by element, for orders ``at``.
            impact: float | np.ndarray = 0.0
            spread = half[at] if isinstance(half, np.ndarray) else half
            if costs.impact_bps_at_1pct:
                notional = want if share is None else np.minimum(want, cap[at])
                vol = volume[at]
                part = np.where(np.isfinite(vol) & (vol > 0), notional / vol, 1.0)
                impact = np.where(
                    notional > 0, costs.impact_bps_at_1pct * np.sqrt(part / 0.01), 0.0
                )
            slip = (spread + impact) * BPS
            return slip if isinstance(slip, np.ndarray) else np.full(want.shape, slip)

        def lot_and_minimums(qty: np.ndarray, price: np.ndarray, at: slice) -> np.ndarray:
            # inst.round_quantity(max(q, 0)) in place, then order_problem's tests.
            qty = np.maximum(qty, 0.0)
            if rules.any_lot:
                for k in np.flatnonzero(reached[at] & (lots[at] > 0) & (qty > 0)).tolist():
                    qty[k] = insts[at.start + k].round_quantity(float(qty[k]))
            problem = (qty <= 0) | (qty * price < min_notional[at])
            if rules.any_min_qty:
                problem |= qty < min_qty[at]
            return qty, problem

        # --- sells: each from the holding at the open -------------------------------------
        s = slice(0, n_sell)
        s_slip = slippage(amount[s] * opens[s], s)
        s_price = opens[s] * (1 - s_slip)
        s_qty = np.minimum(amount[s], held[s])
        s_capped = np.zeros(n_sell, dtype=bool)
        if share is not None:
            s_capped = s_qty * s_price > cap[s]
            s_qty = np.where(s_capped, cap[s] / s_price, s_qty)
        s_qty, s_problem = lot_and_minimums(s_qty, s_price, s)
        no_liquidity = s_slip >= 1
        s_fills = reached[s] & ~no_liquidity & ~s_problem
        s_notional = s_qty * s_price
        s_fee = s_notional * fee_rate
        # A fill's price must be a finite number > 0 (``Fill``'s check, the fill guard's);
        # its quantity is then finite, > 0 and at most the holding (the lesser of the
        # order and the holding, truncated down), so the ledger takes it and its fee is
        # finite and >= 0.
        if (s_fills & ~((s_price > 0) & (s_price < math.inf))).any():
            return False

    # What each sell filled, and why the rest of it did not (None: all of it filled).
    outcomes: list[_Outcome | None] = [None] * n
    filled = np.zeros(n)
    listed = np.ones(n, dtype=bool)  # False: rejected as not listed, no outcome
    shortfall: dict[int | None, float] = {}
    cap_note = "volume cap: at most {share:.0%} of the bar's quote volume ({cap:,.2f})"
    s_fills_l, s_qty_l, s_capped_l = s_fills.tolist(), s_qty.tolist(), s_capped.tolist()
    for k in range(n_sell):
        o = orders[k]
        a = amount_l[k]
        if s_fills_l[k]:
            q = s_qty_l[k]
            filled[k] = q
            if s_capped_l[k]:
                outcomes[k] = _Outcome(q, False, cap_note.format(share=share, cap=cap[k]))
            elif a - q > a * _REST_EPS:
                outcomes[k] = _Outcome(q, True, "", silent=True)
            elif not a > q:
                continue  # all of it sold: no shortfall, nothing left
        else:
            if not tradable[k] and not m.live[i, cols[k]]:
                listed[k] = False
                continue
            if not tradable[k]:
                outcomes[k] = _Outcome(0.0, False, f"no bar for {o.symbol} at {ts}")
            elif no_volume[k]:
                outcomes[k] = _Outcome(0.0, False, f"no volume in the bar at {ts}")
            elif no_liquidity[k]:
                why = f"no liquidity: impact of {float(s_slip[k]):.0%} or more"
                outcomes[k] = _Outcome(0.0, False, why)
            else:
                h = float(held[k])
                problem = insts[k].order_problem(float(s_qty[k]), float(s_price[k]))
                exit_ = o.quantity >= h
                if exit_ and h > 0:
                    problem = f"{problem}: {h:g} {o.symbol} left as dust"
                if s_capped[k] and not exit_:
                    why = f"{cap_note.format(share=share, cap=cap[k])} ({problem})"
                    outcomes[k] = _Outcome(0.0, False, why)
                else:
                    outcomes[k] = _Outcome(0.0, True, f"{o.symbol}: {problem}", rejected=True)
        unsold = max(a - float(filled[k]), 0.0)
        if unsold > 0:
            price = float(opens[k])
            if not math.isfinite(price):
                price = m.last_close(i, int(cols[k]))
            shortfall[o.decision_id] = shortfall.get(o.decision_id, 0.0) + unsold * price
    # The cash after the sells, as the ledger adds them.
    cash = sub.cash
    s_cash = (s_notional - s_fee).tolist()
    for k in np.flatnonzero(s_fills).tolist():
        cash += s_cash[k]

    # --- buys: the plan's share of its sells, then the cash (``_quote_buy_scale``) -------
    b = slice(n_sell, n)
    buy_rows: list[tuple[int, float, float, float, float, float, str]] = []
    if n_sell < n:
        decisions = {o.decision_id for o in orders[b]}
        if len(decisions) != 1:
            return False
        (key,) = decisions
        total = float(np.cumsum(amount[b])[-1])
        funded = max(total - shortfall.get(key, 0.0), 0.0) / total if total > 0 else 1.0
        listed_buys = tradable[b]
        cash_share = 1.0
        if listed_buys.any():
            wanted = float(np.cumsum(amount[b][listed_buys] * funded)[-1])
            if wanted > cash:
                cash_share = max(cash, 0.0) / wanted
        cash_cut = cash_share < 1 - 1e-12
        fund_wait = funded < 1 - 1e-12
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            b_slip = slippage(amount[b] * funded, b)
            b_price = opens[b] * (1 + b_slip)
            unit_cost = b_price * (1 + fee_rate)
            spend = amount[b] * funded * cash_share
            b_qty = spend / unit_cost
            b_capped = np.zeros(n - n_sell, dtype=bool)
            if share is not None:
                b_capped = b_qty * b_price > cap[b]
                b_qty = np.where(b_capped, cap[b] / b_price, b_qty)
            b_qty, b_problem = lot_and_minimums(b_qty, b_price, b)
        b_reached = reached[b]
        b_fills = b_reached & ~b_problem
        # A fill's price must be a finite number > 0 (``Fill``'s check, the fill guard's).
        if (b_reached & ~((b_price > 0) & (b_price < math.inf))).any():
            return False
        # Each buy in turn against the cash left then: one asking more is clamped to it
        # (recomputed here as _execute does); a fill the ledger would refuse is not
        # reproduced (the event path runs the bar).
        left = cash
        qty_l, price_l, unit_l = b_qty.tolist(), b_price.tolist(), unit_cost.tolist()
        spend_l, cap_l, capped_l = spend.tolist(), cap[b].tolist(), b_capped.tolist()
        fills_l, reached_l = b_fills.tolist(), b_reached.tolist()
        for kb in range(n - n_sell):
            k = n_sell + kb
            o = orders[k]
            waits = ["waiting for the sells that fund it"] if fund_wait else []
            if not reached_l[kb]:
                if not tradable[k]:
                    if not m.live[i, cols[k]]:
                        listed[k] = False
                        continue
                    outcomes[k] = _Outcome(0.0, False, f"no bar for {o.symbol} at {ts}")
                else:
                    outcomes[k] = _Outcome(0.0, False, f"no volume in the bar at {ts}")
                continue
            q, price, capped, ok, cut = qty_l[kb], price_l[kb], capped_l[kb], fills_l[kb], cash_cut
            if spend_l[kb] > left:
                cut = True
                q = max(left, 0.0) / unit_l[kb]
                capped = q * price > cap_l[kb]
                if capped:
                    q = cap_l[kb] / price
                q = insts[k].round_quantity(max(q, 0.0))
                ok = insts[k].order_problem(q, price) is None
            if capped:
                waits.append(cap_note.format(share=share, cap=cap_l[kb]))
            if not ok:
                problem = insts[k].order_problem(q, price)
                if waits:
                    outcomes[k] = _Outcome(0.0, False, f"{'; '.join(waits)} ({problem})")
                else:
                    outcomes[k] = _Outcome(0.0, True, f"{o.symbol}: {problem}", rejected=True)
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
            got = q * unit_l[kb]
            filled[k] = got
            if waits:
                outcomes[k] = _Outcome(got, False, "; ".join(waits))
            elif amount[k] - got > amount[k] * _REST_EPS:
                outcomes[k] = _Outcome(got, True, "", silent=True)

    # --- booked: fills in order, then the guard's counters, then what did not fill -------
    fills = report.fills
    quote_fees = sub.fees_by_currency
    filled_ids: list[int] = []
    notionals: list[float] = []
    sell_rows = zip(
        np.flatnonzero(s_fills).tolist(),
        s_qty[s_fills].tolist(),
        s_price[s_fills].tolist(),
        s_notional[s_fills].tolist(),
        s_fee[s_fills].tolist(),
        strict=True,
    )
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
        rest_order = broker._finish(o, float(filled[k]), outcome.why, i, ts, report, outcome)
        if rest_order is not None:
            still_open.append(rest_order)
    broker._books = {}
    broker._pending = still_open
    return True


class _Rules(NamedTuple):
    """Each market column's exchange rules as arrays (``broker.instrument``'s)."""

    instruments: list[Instrument]
    lot: np.ndarray
    min_qty: np.ndarray
    min_notional: np.ndarray
    perpetual: np.ndarray
    any_lot: bool
    any_perpetual: bool
    any_min_qty: bool


def _rules(broker: SimulatedBroker) -> _Rules:
    """The broker's rules per column, built once (instruments are immutable, and the
    broker keeps each symbol's once it is asked)."""
    rules = getattr(broker, "_vector_rules", None)
    if rules is None:
        insts = [broker.instrument(s) for s in broker.market.symbols]
        rules = _Rules(
            insts,
            np.array([x.lot_size for x in insts], dtype=float),
            np.array([x.min_qty for x in insts], dtype=float),
            np.array([x.min_notional for x in insts], dtype=float),
            np.array([x.is_perpetual for x in insts], dtype=bool),
            any(x.lot_size > 0 for x in insts),
            any(x.is_perpetual for x in insts),
            any(x.min_qty > 0 for x in insts),
        )
        broker._vector_rules = rules
    return rules


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
