"""A simulated exchange that fills orders against historical bars.

Timing: an order submitted after the close of bar i is filled during bar i+1 (market
orders at its open plus slippage; limit orders when the bar trades through the limit).
Perpetuals: a position the bar opens beyond its liquidation price is liquidated at
the open before any order fills; funding events inside a bar are booked in time order
at the funding time's mark (given, from finer bars, or interpolated open to close in the
bar: ``trimtab.execution.funding``), then liquidations are checked against the bar's
range. Marks come from last-trade bars unless a mark is given, which the README states
as a limit of backtests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from trimtab.domain import (
    Account,
    Fill,
    Instrument,
    LedgerError,
    Liquidity,
    Order,
    OrderType,
    Rejection,
    Side,
    Subaccount,
    spot,
)
from trimtab.domain.orders import TimeInForce, next_order_id, set_next_order_id
from trimtab.execution.broker import ExecutionReport, FillGuard
from trimtab.execution.costs import CostModel
from trimtab.execution.funding import bar_fraction, interpolated_mark
from trimtab.execution.market import MarketArrays

# Per perpetual: rates (fractions per interval, UTC index), or a table of funding_rate
# and mark_price.
FundingRates = Mapping[str, pd.Series | pd.DataFrame]

# A remainder below this fraction of its order is float noise, not an order left over.
_REST_EPS = 1e-9
_UNSET: Any = object()


class _Outcome(NamedTuple):
    """One order's try in one bar: ``filled`` in the order's units (base, or quote for
    quote buys); ``final``: the rest does not wait; ``why`` the rest was not filled;
    ``rejected``: refused (else it expired); ``silent``: the rest is dropped unrecorded
    (cut for cash, under a lot, a sell capped at the holding: the fill's reason says so)."""

    filled: float
    final: bool
    why: str
    rejected: bool = False
    silent: bool = False


class SpotBook(Mapping[str, float]):
    """Marks of a spot subaccount at the moment of a fill in one bar, with its positions'
    values kept as an array, so that a fill guard values the book without a Python loop
    over positions (``FillGuard.check_fill`` takes it as ``marks``).

    As a mapping it is what the broker's marks have always been: every position at the
    bar's open (its last close without one), ``fill_symbol`` at ``fill_price``. Positions
    sit in slots in the ledger's order; a closed position's slot stays, valued 0.0, until
    the slots are compacted, so closing one costs no pass over the others. ``equity()`` is
    ``sub.equity(self)`` with the same float additions in the same order (a sequential
    sum, where adding a 0.0 changes nothing), so both give the same bits; ``others()``
    gives the other positions' values as the ledger lists them. The broker updates the
    book after each fill it books; a book holding a perpetual has none.
    """

    def __init__(
        self,
        symbols: list[str],
        marks: np.ndarray,
        quantities: np.ndarray,
        columns: np.ndarray | None = None,
        universe: tuple[str, ...] = (),
    ) -> None:
        """``columns`` are the positions' columns in ``universe`` (the market's symbols),
        for callers that keep per-column arrays (the guard's cluster numbers)."""
        self.index = {s: k for k, s in enumerate(symbols)}  # symbol -> slot, ledger order
        self._marks = np.array(marks, dtype=float)
        self._values = quantities * self._marks
        self._alive = np.ones(len(symbols), dtype=bool)
        self.universe = universe
        self._columns = (
            np.array(columns, dtype=np.int64)
            if columns is not None
            else np.full(len(symbols), -1, np.int64)
        )
        self._names = list(symbols)
        self._views()
        self.cash = 0.0
        self.fill_symbol = ""
        self.fill_price = math.nan

    def _views(self) -> None:
        # The used slots; the arrays beyond them are spare room for opens.
        n = len(self._names)
        self.marks, self.values = self._marks[:n], self._values[:n]
        self.alive, self.columns = self._alive[:n], self._columns[:n]

    @property
    def symbols(self) -> tuple[str, ...]:
        """The positions, in the ledger's order."""
        return tuple(self.index)

    def append(self, symbol: str, mark: float, quantity: float, column: int = -1) -> None:
        """A position opened: it goes last, as in the ledger's dict."""
        k = len(self._names)
        if k == len(self._marks):
            # Room for as many again: an open costs no copy of the arrays, amortised.
            grow = max(k, 8)
            self._marks = np.concatenate([self._marks, np.zeros(grow)])
            self._values = np.concatenate([self._values, np.zeros(grow)])
            self._alive = np.concatenate([self._alive, np.zeros(grow, dtype=bool)])
            self._columns = np.concatenate([self._columns, np.full(grow, -1, np.int64)])
        self.index[symbol] = k
        self._names.append(symbol)
        self._marks[k], self._values[k] = mark, quantity * mark
        self._alive[k], self._columns[k] = True, column
        self._views()

    def remove(self, symbol: str) -> None:
        """A position closed: the others keep their order, as in the ledger's dict."""
        k = self.index.pop(symbol)
        self.alive[k] = False
        self.values[k] = 0.0
        dead = len(self._names) - len(self.index)
        if dead > 16 and dead > len(self.index):
            keep = np.flatnonzero(self.alive)
            self._names = [self._names[k] for k in keep]
            self.index = {s: n for n, s in enumerate(self._names)}
            self._marks, self._values = self.marks[keep], self.values[keep]
            self._columns, self._alive = self.columns[keep], self.alive[keep]
            self._views()

    def at_fill(self, symbol: str, price: float, cash: float) -> SpotBook:
        self.fill_symbol, self.fill_price, self.cash = symbol, price, cash
        return self

    def __getitem__(self, symbol: str) -> float:
        if symbol == self.fill_symbol:
            return self.fill_price
        return float(self.marks[self.index[symbol]])

    def __iter__(self):
        yield from self.index
        if self.fill_symbol not in self.index:
            yield self.fill_symbol

    def __len__(self) -> int:
        return len(self.index) + (self.fill_symbol not in self.index)

    def equity(self, held: float) -> float:
        """Cash plus every position, the filling symbol's ``held`` quantity at the fill
        price (quote)."""
        k = self.index.get(self.fill_symbol)
        if k is None:
            values = self.values
        else:
            values = self.values.copy()
            values[k] = held * self.fill_price
        # Python's sum() adds left to right from 0; a cumulative sum does the same.
        return self.cash + (float(np.cumsum(values)[-1]) if len(values) else 0)

    def others(self) -> tuple[np.ndarray, np.ndarray]:
        """Values (quote) of the positions other than the filling symbol, in the ledger's
        order, and their slots (index ``columns`` with these)."""
        k = self.index.get(self.fill_symbol)
        mask = self.alive
        if k is not None:
            mask = mask.copy()
            mask[k] = False
        keep = np.flatnonzero(mask)
        return self.values[keep], keep


def _with_reason(fill: Fill, reason: str) -> Fill:
    """``fill`` with another reason: a copy of a fill already checked on construction."""
    new = object.__new__(Fill)
    new.__dict__.update(fill.__dict__, reason=reason)
    return new


def _truncate(inst: Instrument, quantity: float) -> float:
    """``quantity`` rounded down to the lot, never above it (not even by float noise)."""
    if not quantity > 0:
        return 0.0
    lots = inst.round_quantity(quantity)
    if lots > quantity and inst.lot_size:
        lots = max(round(lots - inst.lot_size, 12), 0.0)
    return lots


class SimulatedBroker:
    """Fills orders on ``market`` bars for ``account``, with ``costs``.

    ``instruments`` gives exchange rules per symbol; symbols without an entry trade as
    spot with ``default_instrument(symbol)``. ``funding`` maps a perpetual symbol to its
    funding rates per interval (fractions), indexed by UTC timestamp.
    """

    def _half_spread(self, i: int, j: int) -> float | None:
        """The estimated half-spread known before bar i opens (bps), or None for the
        model's fixed one."""
        h = self.market.half_spread_bps
        if self.costs.spread != "bars" or h is None or i == 0 or not np.isfinite(h[i - 1, j]):
            return None
        return max(float(h[i - 1, j]), self.costs.half_spread_bps)

    def __init__(
        self,
        account: Account,
        market: MarketArrays,
        costs: CostModel | None = None,
        instruments: Mapping[str, Instrument] | None = None,
        funding: FundingRates | None = None,
        default_instrument: Callable[[str], Instrument] | None = None,
        fill_guard: FillGuard | None = None,
        vector_fills: bool = False,
    ) -> None:
        """``vector_fills``: fill a bar's market orders as arrays where that gives the
        event path's result exactly (``trimtab.execution.vector_fill``); False runs every
        order through the event path."""
        self.account = account
        self.vector_fills = vector_fills
        self.fill_guard = fill_guard
        self.market = market
        self.costs = costs or CostModel()
        self._instruments = dict(instruments or {})
        self._default_instrument = default_instrument or (lambda s: spot(s, min_notional=5.0))
        self._pending: list[Order] = []
        self._books: dict[str, SpotBook | None] = {}
        self._ref_row: tuple[int, np.ndarray] = (-1, np.zeros(0))
        self._last_close: np.ndarray | None = None
        self._perps_traded = any(
            p.instrument.is_perpetual
            for sub in account.subaccounts.values()
            for p in sub.positions.values()
        )
        self._funding = self._index_funding(funding or {})

    # --- Broker protocol -------------------------------------------------------------
    def instrument(self, symbol: str) -> Instrument:
        inst = self._instruments.get(symbol)
        if inst is None:
            if symbol not in self.market.column:
                raise KeyError(f"unknown symbol {symbol}")
            inst = self._instruments[symbol] = self._default_instrument(symbol)
        return inst

    def submit(self, order: Order) -> Rejection | None:
        """Queue ``order`` for the next bar; a Rejection if it can never fill here."""
        if order.symbol not in self.market.column:
            return Rejection(order, self.market.index[0], f"unknown symbol {order.symbol}")
        if order.subaccount not in self.account.subaccounts:
            return Rejection(order, self.market.index[0], f"unknown subaccount {order.subaccount}")
        self._pending.append(order)
        return None

    @property
    def perpetuals_traded(self) -> bool:
        """Has a perpetual been held or traded in this broker's account (False: every
        fill so far was spot)?"""
        return self._perps_traded

    def accepts(self, orders: list[Order]) -> bool:
        """Would ``submit`` queue every one of ``orders`` (no rejection)?"""
        column, subs = self.market.column, self.account.subaccounts
        return all(o.symbol in column and o.subaccount in subs for o in orders)

    def submit_accepted(self, orders: list[Order]) -> None:
        """``submit`` of orders ``accepts`` passed, in order."""
        self._pending.extend(orders)

    def cancel(self, order_id: int) -> bool:
        before = len(self._pending)
        self._pending = [o for o in self._pending if o.id != order_id]
        return len(self._pending) < before

    def open_orders(self) -> list[Order]:
        """Orders (or their unfilled remainders) still waiting for a fill."""
        return list(self._pending)

    # --- simulation ------------------------------------------------------------------
    def on_bar(self, i: int) -> ExecutionReport:
        """Run bar i in the exchange's order: delistings; perpetuals the bar opens beyond
        their liquidation price, liquidated at the open before any order fills; pending
        orders; funding events in time order at their marks; liquidations on the range."""
        report = ExecutionReport()
        ts = self.market.timestamps[i]
        for j in self.market.delisted_at.get(i, ()):
            self._close_delisted(i, j, ts, report)
        if self._perp_positions_open():
            self._check_liquidations(i, ts, report, at_open=True)
        if self._pending:
            self._fill_pending(i, ts, report)
        if self._funding:
            self._book_funding(i, report)
        if self._perp_positions_open():
            self._check_liquidations(i, ts, report)
        return report

    def _perp_positions_open(self) -> bool:
        # Spot-only books are the common case; skip the per-position scan for them.
        if not self._perps_traded:
            return False
        return any(
            p.instrument.is_perpetual
            for sub in self.account.subaccounts.values()
            for p in sub.positions.values()
        )

    def _fill_pending(self, i: int, ts: pd.Timestamp, report: ExecutionReport) -> None:
        """Try every open order in bar i; remainders wait or expire with a record.

        Sells go first so that their proceeds fund the buys of the same plan. A plan (the
        orders of one decision in one subaccount) is a group: what its sells did not sell
        this bar, valued at this bar's price, is taken off its buys, so a buy never spends
        cash that a sell was meant to raise and did not (the cut part waits or expires).
        Only sales raise cash: a perpetual sell counts up to the long it closes (opening
        or adding to a short takes margin), and a perpetual buy is funded by margin, not
        by the plan's sales. Reduce-only orders go with the sells (they free margin and
        exposure before anything adds to it), then sells that open a perpetual, then buys.
        """
        m = self.market
        orders = sorted(self._pending, key=self._fill_rank)
        self._books: dict[str, SpotBook | None] = {}
        if self.vector_fills:
            from trimtab.execution.vector_fill import fill_bar  # imports this module

            if fill_bar(self, orders, i, ts, report):
                return
        still_open: list[Order] = []
        shortfall: dict[tuple[str, int | None], float] = {}
        buy_scale: dict[int, tuple[float, float]] | None = None
        column = m.column
        # The bar's row as Python floats: the same numbers, cheaper to read one by one.
        tradable = m.tradable[i].tolist()
        opens = m.open[i].tolist()
        volumes = m.quote_volume[i].tolist()
        for order in orders:
            buy = order.side is Side.BUY
            if buy and buy_scale is None and not order.reduce_only:
                # Once every sale has run (a reduce-only buy runs among them).
                buy_scale = self._quote_buy_scale(orders, i, shortfall)
            if order.expires_at is not None and self._expired_before(order, i):
                self._finish(order, 0.0, f"not filled by {order.expires_at}", i, ts, report)
                continue
            j = column[order.symbol]
            funded, cash_share = (
                (1.0, 1.0) if buy_scale is None else buy_scale.get(order.id, (1.0, 1.0))
            )
            inst = self._instruments.get(order.symbol)
            perp = inst is not None and inst.is_perpetual
            long_before = 0.0
            if perp and not buy:
                pos = self.account.subaccount(order.subaccount).positions.get(order.symbol)
                long_before = max(pos.quantity, 0.0) if pos is not None else 0.0
            if not tradable[j]:
                if not m.live[i, j]:
                    report.rejections.append(Rejection(order, ts, f"{order.symbol} is not listed"))
                    continue
                outcome = _Outcome(0.0, False, f"no bar for {order.symbol} at {ts}")
            else:
                try:
                    outcome = self._execute(
                        order, i, j, ts, report, funded, cash_share, opens[j], volumes[j]
                    )
                except LedgerError as exc:
                    outcome = _Outcome(0.0, True, str(exc), rejected=True)
            if not buy and order.quantity is not None:
                unsold = max(order.quantity - outcome.filled, 0.0)
                if perp:
                    # Only the part that would have closed a long raises cash.
                    unsold = min(unsold, max(long_before - outcome.filled, 0.0))
                if unsold > 0:
                    key = (order.subaccount, order.decision_id)
                    price = opens[j]
                    if not math.isfinite(price):
                        price = m.last_close(i, j)  # as _ref_price(i, j)
                    shortfall[key] = shortfall.get(key, 0.0) + unsold * price
            rest = self._finish(order, outcome.filled, outcome.why, i, ts, report, outcome)
            if rest is not None:
                still_open.append(rest)
        self._pending = still_open

    def _ref_price(self, i: int, j: int) -> float:
        """What a unit would have sold for in bar i: its open, or the last close."""
        price = self.market.open[i, j]
        return float(price) if math.isfinite(price) else self.market.last_close(i, j)

    def _expired_before(self, order: Order, i: int) -> bool:
        """A gtd order whose time ran out before bar i opened."""
        return order.expires_at is not None and self.market.timestamps[i] > order.expires_at

    def _expires_after(self, order: Order, i: int) -> bool:
        """Does ``order`` have no bar left after bar i to fill in?"""
        tif = order.time_in_force
        if tif is TimeInForce.NEXT_BAR:
            return True
        if i + 1 >= len(self.market.timestamps):
            return tif is TimeInForce.GTD
        return tif is TimeInForce.GTD and self.market.timestamps[i + 1] > order.expires_at

    def _finish(
        self,
        order: Order,
        filled: float,
        why: str,
        i: int,
        ts: pd.Timestamp,
        report: ExecutionReport,
        outcome: _Outcome | None = None,
    ) -> Order | None:
        """The remainder of ``order`` after ``filled`` (order units) if it waits; records
        its rejection or expiry otherwise."""
        amount = order.quantity if order.quantity is not None else order.quote_quantity
        assert amount is not None
        rest = amount - filled
        final = outcome is not None and outcome.final
        if rest <= amount * _REST_EPS:
            return None
        ends = final or self._expires_after(order, i)
        if ends and outcome is not None and outcome.silent:
            return None
        if math.isfinite(rest):  # and > 0: a copy needs no checks
            remainder = order.with_amount(rest)
        else:
            remainder = (
                replace(order, quantity=rest)
                if order.quantity is not None
                else replace(order, quote_quantity=rest)
            )
        if ends:
            rejected = outcome is not None and outcome.rejected
            kind = "rejected" if rejected else "expired"
            note = why if rejected or filled == 0 else f"partly filled; the rest: {why}"
            prefix = "" if rejected else f"{order.time_in_force} order expired: "
            report.rejections.append(Rejection(remainder, ts, prefix + note, kind=kind))
            return None
        return remainder

    def _quote_buy_scale(
        self, orders: list[Order], i: int, shortfall: Mapping[tuple[str, int | None], float]
    ) -> dict[int, tuple[float, float]]:
        """Per buy order (by id): the share its plan can fund now, and the share of that
        the subaccount's cash covers.

        First each plan's buys give up what its sells did not sell (``shortfall``, quote
        at this bar's prices), pro rata; then, per subaccount, quote-sized buys sized at
        the decision's close that exceed the cash actually there are scaled alike, which
        keeps the target proportions.
        """
        m = self.market
        plan_buys: dict[tuple[str, int | None], float] = {}
        for o in orders:
            if o.side is Side.BUY and not self._is_perp(o.symbol):
                key = (o.subaccount, o.decision_id)
                plan_buys[key] = plan_buys.get(key, 0.0) + self._buy_value(o, i)
        plan_share = {
            key: max(total - shortfall.get(key, 0.0), 0.0) / total if total > 0 else 1.0
            for key, total in plan_buys.items()
        }
        wanted: dict[str, float] = {}
        for o in orders:
            if (
                o.side is Side.BUY
                and o.quote_quantity is not None
                and m.tradable[i, m.column[o.symbol]]
            ):
                share = plan_share.get((o.subaccount, o.decision_id), 1.0)
                wanted[o.subaccount] = wanted.get(o.subaccount, 0.0) + o.quote_quantity * share
        cash_share = {}
        for name, total in wanted.items():
            cash = self.account.subaccount(name).cash
            if total > cash:
                cash_share[name] = max(cash, 0.0) / total
        return {
            o.id: (
                1.0
                if self._is_perp(o.symbol)
                else plan_share.get((o.subaccount, o.decision_id), 1.0),
                cash_share.get(o.subaccount, 1.0) if o.quote_quantity is not None else 1.0,
            )
            for o in orders
            if o.side is Side.BUY
        }

    def _fill_rank(self, order: Order) -> int:
        """The order's turn in a bar: 0 sales and reduce-only orders, 1 other perpetual
        sells (opening a short), 2 buys. A spot book's order is sells then buys."""
        if order.reduce_only:
            return 0
        if order.side is Side.BUY:
            return 2
        return 1 if self._is_perp(order.symbol) else 0

    def _is_perp(self, symbol: str) -> bool:
        inst = self._instruments.get(symbol)
        return inst is not None and inst.is_perpetual

    def _buy_value(self, order: Order, i: int) -> float:
        if order.quote_quantity is not None:
            return order.quote_quantity
        assert order.quantity is not None
        price = self._ref_price(i, self.market.column[order.symbol])
        return order.quantity * price if math.isfinite(price) else 0.0

    def _execute(
        self,
        order: Order,
        i: int,
        j: int,
        ts: pd.Timestamp,
        report: ExecutionReport,
        funded: float = 1.0,
        cash_share: float = 1.0,
        open_: float | None = None,
        volume: float | None = None,
    ) -> _Outcome:
        """Fill what can be filled of ``order`` in bar i.

        ``funded`` is the share of a buy its plan can fund now (the rest waits for its
        sells); ``cash_share`` the share of that the cash covers (the rest is dropped). The
        quantity is truncated to the lot (exits
        included: what is under a lot stays as dust), capped at ``max_volume_share`` of
        the bar's quote volume and at what the fill guard allows at the fill price.
        ``open_`` and ``volume`` are the bar's open and quote volume of column j when the
        caller has them at hand (read from the market otherwise).
        """
        m = self.market
        costs = self.costs
        symbol = order.symbol
        inst = self._instruments.get(symbol) or self.instrument(symbol)
        sub = self.account.subaccounts.get(order.subaccount) or self.account.subaccount(
            order.subaccount
        )
        if open_ is None:
            open_ = float(m.open[i, j])
        if volume is None:
            volume = float(m.quote_volume[i, j])
        buy = order.side is Side.BUY
        perp = inst.is_perpetual
        quote_qty = order.quote_quantity
        maker = False
        waits: list[str] = []  # why the rest is not filled now but may be later
        notes: list[str] = []
        cash_cut = cash_share < 1 - 1e-12
        if funded < 1 - 1e-12:
            waits.append("waiting for the sells that fund it")
        pos = sub.positions.get(symbol)
        held = pos.quantity if pos else 0.0
        if order.reduce_only and order.side.sign * held >= 0:
            return _Outcome(0.0, True, "reduce-only order would not reduce", rejected=True)
        # What the order asks for now, in quote (at the open) and in base.
        want_quote = (
            quote_qty * funded if quote_qty is not None else (order.quantity or 0.0) * open_
        )
        cap_quote = math.inf
        share = costs.max_volume_share
        if share is not None:
            cap_quote = share * volume if math.isfinite(volume) and volume > 0 else 0.0
            if cap_quote <= 0:
                return _Outcome(0.0, False, f"no volume in the bar at {ts}")
        if order.type is OrderType.LIMIT:
            assert order.limit_price is not None
            limit = order.limit_price
            # A resting limit fills only when the price trades through it (strictly
            # beyond): touching it says nothing about the queue ahead.
            # A post-only order rests on the book (it was refused if it would take): a
            # price gapping through it still fills it at its limit, as maker.
            marketable = (open_ < limit if buy else open_ > limit) and not order.post_only
            through = m.low[i, j] < limit if buy else m.high[i, j] > limit
            if not (marketable or through):
                return _Outcome(0.0, False, f"limit {limit:g} not traded through")
            price = open_ if marketable else limit
            maker = not marketable
        else:
            half = self._half_spread(i, j) if costs.spread == "bars" else None
            slip = costs.slippage(min(want_quote, cap_quote), volume, half)
            if not buy and slip >= 1:
                # The impact model would sell at a price <= 0: the bar has no such depth.
                return _Outcome(0.0, False, f"no liquidity: impact of {slip:.0%} or more")
            price = open_ * (1 + slip) if buy else open_ * (1 - slip)
        fee_rate = costs.fee_rate(maker)
        fee_in_base = costs.fee_currency == "received" and buy and not perp
        unit_cost = price if fee_in_base else price * (1 + fee_rate)  # quote per base unit
        if quote_qty is not None:
            # Spend quote_quantity in all: with quote fees, the fee comes out of it.
            spend = quote_qty * funded * cash_share
            if spend > sub.cash:
                spend, cash_cut = max(sub.cash, 0.0), True
            quantity = spend / unit_cost
        else:
            assert order.quantity is not None
            quantity = order.quantity
        if not buy and not perp:
            quantity = min(quantity, held)
        if order.reduce_only:
            quantity = min(quantity, abs(held))
        if buy and not perp and quote_qty is None:
            affordable = max(sub.cash, 0.0) / unit_cost
            if quantity > affordable:
                quantity, cash_cut = affordable, True
        if quantity * price > cap_quote:
            quantity = cap_quote / price
            waits.append(
                f"volume cap: at most {share:.0%} of the bar's quote volume ({cap_quote:,.2f})"
            )
        if cash_cut:
            notes.append("scaled to available cash")
        quantity = inst.round_quantity(max(quantity, 0.0))
        problem = inst.order_problem(quantity, price)
        if problem:
            exit_ = not buy and not perp and (order.quantity is not None and order.quantity >= held)
            if exit_ and held > 0:
                problem = f"{problem}: {held:g} {symbol} left as dust"
            if waits and not exit_:
                return _Outcome(0.0, False, f"{'; '.join(waits)} ({problem})")
            return _Outcome(0.0, True, f"{symbol}: {problem}", rejected=True)
        fill = self._make_fill(order, ts, inst, quantity, price, fee_rate, fee_in_base, maker)
        guard_cut = False
        guard = self.fill_guard
        if guard is not None:
            book = None if perp else self._book(sub, i)
            marks = (
                book.at_fill(symbol, price, sub.cash)
                if book is not None
                else self._marks(sub, i, symbol, price)
            )
            allowed, actions = guard.check_fill(fill, inst, sub, marks)
            if actions:
                report.guard.extend((order, a) for a in actions)
            if not allowed >= quantity:  # NaN allows nothing
                guard_cut = True
                quantity = _truncate(inst, allowed if allowed > 0 else 0.0)
                rules = ", ".join(dict.fromkeys(a.rule for a in actions)) or "fill guard"
                problem = inst.order_problem(quantity, price)
                if problem:
                    return _Outcome(
                        0.0, True, f"blocked at the fill by {rules} ({problem})", rejected=True
                    )
                notes.append(f"scaled at the fill by {rules}")
        if guard_cut:
            # Built once more, at the quantity the guard allowed and with the notes: the
            # first fill only showed the guard what was asked.
            fill = self._make_fill(
                order, ts, inst, quantity, price, fee_rate, fee_in_base, maker, notes
            )
        elif notes:
            fill = _with_reason(fill, "; ".join([order.reason, *notes]))
        sub.apply_fill(fill, inst)
        report.fills.append(fill)
        if guard is not None:
            guard.on_fill(fill)
            self._book_filled(sub, i, symbol)
        if perp:
            self._perps_traded = True
        filled = quantity * unit_cost if quote_qty is not None else quantity
        if guard_cut:
            return _Outcome(filled, True, f"cut at the fill by {rules}", rejected=True)
        if waits:
            return _Outcome(filled, False, "; ".join(waits))
        # Cut for cash, lot remainders, a sell capped at the holding: the rest is dropped.
        return _Outcome(filled, True, "", silent=True)

    def _make_fill(
        self,
        order: Order,
        ts: pd.Timestamp,
        inst: Instrument,
        quantity: float,
        price: float,
        fee_rate: float,
        fee_in_base: bool,
        maker: bool,
        notes: list[str] | None = None,
    ) -> Fill:
        return Fill(
            order.id,
            ts,
            order.symbol,
            order.side,
            quantity,
            price,
            quantity * fee_rate if fee_in_base else quantity * price * fee_rate,
            inst.base if fee_in_base else inst.quote,
            Liquidity.MAKER if maker else Liquidity.TAKER,
            order.subaccount,
            "; ".join([order.reason, *notes]) if notes else order.reason,
            order.leverage,
        )

    def _book(self, sub: Subaccount, i: int) -> SpotBook | None:
        """``sub``'s spot book at bar i's marks, built once per bar (None if it holds a
        perpetual: those are valued on margin, by the ledger)."""
        book = self._books.get(sub.name, _UNSET)
        if book is not _UNSET:
            return book  # type: ignore[return-value]
        book = None
        if not (
            self._perps_traded and any(p.instrument.is_perpetual for p in sub.positions.values())
        ):
            symbols = list(sub.positions)
            columns = np.array([self.market.column[s] for s in symbols], dtype=np.int64)
            qty = np.array([p.quantity for p in sub.positions.values()], dtype=float)
            marks = self._ref_prices(i)[columns]
            book = SpotBook(symbols, marks, qty, columns, self.market.symbols)
        self._books[sub.name] = book
        return book

    def _ref_prices(self, i: int) -> np.ndarray:
        """``_ref_price(i, j)`` of every column: the open, or the last close without one."""
        if self._ref_row[0] != i:
            m = self.market
            if self._last_close is None:
                # Each column's latest close at or before every bar (NaN before listing).
                close = m.close
                seen = np.where(np.isnan(close), 0, np.arange(len(close))[:, None])
                latest = np.maximum.accumulate(seen, axis=0)
                self._last_close = np.take_along_axis(close, latest, axis=0)
            row = m.open[i]
            self._ref_row = (i, np.where(np.isfinite(row), row, self._last_close[i]))
        return self._ref_row[1]

    def _book_filled(self, sub: Subaccount, i: int, symbol: str) -> None:
        """Keep ``sub``'s book in step with the fill of ``symbol`` just booked."""
        book = self._books.get(sub.name)
        if book is None:
            return
        pos = sub.positions.get(symbol)
        k = book.index.get(symbol)
        held, known = len(sub.positions), len(book.index)
        if pos is not None and pos.instrument.is_perpetual:
            del self._books[sub.name]  # valued by the ledger from now on
        elif k is not None and pos is not None and held == known:
            book.values[k] = pos.quantity * book.marks[k]
        elif k is not None and pos is None and held == known - 1:
            book.remove(symbol)
        elif k is None and pos is not None and held == known + 1:
            if next(reversed(sub.positions)) == symbol:
                j = self.market.column[symbol]
                book.append(symbol, self._ref_price(i, j), pos.quantity, j)
            else:
                del self._books[sub.name]
        else:
            del self._books[sub.name]  # rebuilt at the next fill

    def _marks(self, sub: Subaccount, i: int, symbol: str, price: float) -> dict[str, float]:
        """Prices at the moment of a fill in bar i: every position of ``sub`` at the bar's
        open (the last close if it has none), ``symbol`` at the fill ``price``."""
        marks = {s: self._ref_price(i, self.market.column[s]) for s in sub.positions}
        marks[symbol] = price
        return marks

    def _close_delisted(self, i: int, j: int, ts: pd.Timestamp, report: ExecutionReport) -> None:
        """Sell what is held of a delisted asset at its last close (taker fee, no impact).

        Forced: no limit can refuse it, but the fill guard counts it (daily turnover).
        """
        symbol = self.market.symbols[j]
        price = self.market.last_close(i, j)
        inst = self.instrument(symbol)
        for sub in self.account.subaccounts.values():
            qty = sub.quantity(symbol)
            if qty == 0 or math.isnan(price):
                continue
            if inst.is_perpetual:
                side = Side.SELL if qty > 0 else Side.BUY
            else:
                side = Side.SELL
            fee = abs(qty) * price * self.costs.fee_rate(False)
            fill = Fill(
                order_id=0,
                timestamp=ts,
                symbol=symbol,
                side=side,
                quantity=abs(qty),
                price=price,
                fee=fee,
                fee_currency=inst.quote,
                subaccount=sub.name,
                reason="delisted: closed at the last traded price",
            )
            sub.apply_fill(fill, inst)
            report.fills.append(fill)
            if self.fill_guard is not None:
                self.fill_guard.on_fill(fill)
        kept = [o for o in self._pending if o.symbol != symbol]
        for order in self._pending:
            if order.symbol == symbol:
                report.rejections.append(Rejection(order, ts, f"{symbol} delisted"))
        self._pending = kept

    # --- perpetuals --------------------------------------------------------------------
    def _index_funding(
        self, funding: FundingRates
    ) -> dict[int, list[tuple[pd.Timestamp, int, float, float]]]:
        """Funding events grouped by the bar that contains them, in time order:
        bar -> [(time, column, rate, mark)].

        A symbol's funding is a Series of rates (fractions per interval, UTC index) or a
        DataFrame with ``funding_rate`` and optionally ``mark_price``. The mark is that
        column where given, else interpolated in the bar (``trimtab.execution.funding``).
        """
        by_bar: dict[int, list[tuple[pd.Timestamp, int, float, float]]] = {}
        if not funding:
            return by_bar
        m = self.market
        # Compare in one time unit: pandas indexes may be in s, ms, us or ns.
        edge_ns = m.index.as_unit("ns").asi8
        for symbol, data in funding.items():
            if symbol not in m.column:
                continue
            j = m.column[symbol]
            if isinstance(data, pd.DataFrame):
                if "funding_rate" not in data.columns:
                    raise ValueError(
                        f"funding for {symbol}: a table needs a 'funding_rate' column (and "
                        f"optionally 'mark_price'), has {', '.join(map(str, data.columns))}"
                    )
                rates = data["funding_rate"].astype(float)
                given = (
                    data["mark_price"].astype(float)
                    if "mark_price" in data.columns
                    else pd.Series(np.nan, index=data.index)
                )
            else:
                rates = data.astype(float)
                given = pd.Series(np.nan, index=data.index)
            keep = rates.notna().to_numpy()
            rates, given = rates[keep], given[keep]
            stamps = pd.DatetimeIndex(rates.index).tz_convert("UTC")
            bar, frac = bar_fraction(stamps.as_unit("ns").asi8, edge_ns)
            k = np.clip(bar, 0, len(edge_ns) - 1)
            marks = given.to_numpy(float)
            own = interpolated_mark(m.open[k, j], m.close[k, j], frac)
            marks = np.where(np.isfinite(marks) & (marks > 0), marks, own)
            for t, b, rate, mark in zip(stamps, bar, rates.to_numpy(float), marks, strict=True):
                if b >= 0:
                    by_bar.setdefault(int(b), []).append((t, j, float(rate), float(mark)))
        for events in by_bar.values():
            events.sort(key=lambda e: (e[0], e[1]))
        return by_bar

    def _book_funding(self, i: int, report: ExecutionReport) -> None:
        """Book bar i's funding events in time order, each at its own mark. A payment that
        leaves a position under maintenance margin at that mark liquidates it there, as
        the exchange does at once; the payment itself never exceeds the margin."""
        for t, j, rate, mark in self._funding.get(i, ()):
            symbol = self.market.symbols[j]
            if not math.isfinite(mark) or mark <= 0:
                continue  # no bar and no mark: the event cannot be priced
            for sub in self.account.subaccounts.values():
                amount = sub.apply_funding(symbol, rate, mark)
                if amount:
                    report.funding.append((sub.name, symbol, amount))
                pos = sub.positions.get(symbol)
                if pos is not None and pos.quantity and pos.margin_ratio(mark) >= 1:
                    report.liquidations.append(sub.liquidate(symbol, mark, t))

    def _check_liquidations(
        self, i: int, ts: pd.Timestamp, report: ExecutionReport, at_open: bool = False
    ) -> None:
        """Liquidate isolated perpetuals whose liquidation price bar i reaches.

        ``at_open``: only positions the bar opens beyond (a gap), liquidated at the open
        before any order of the bar fills, the loss stopping at the margin. Otherwise the
        bar's range: a long whose low reaches its liquidation price is closed at that
        price (the exchange's mark crossing it), after the open's fills and the funding,
        since a market order fills at the open, before anything the bar trades through.
        """
        m = self.market
        for sub in self.account.subaccounts.values():
            for symbol, pos in list(sub.positions.items()):
                if not pos.instrument.is_perpetual:
                    continue
                liq = pos.liquidation_price()
                if liq is None:
                    continue
                j = m.column[symbol]
                if not m.tradable[i, j]:
                    continue
                open_ = m.open[i, j]
                if at_open:
                    beyond = open_ <= liq if pos.quantity > 0 else open_ >= liq
                    if beyond:
                        report.liquidations.append(sub.liquidate(symbol, open_, ts))
                    continue
                if pos.quantity > 0 and m.low[i, j] <= liq:
                    price = min(liq, open_)  # opened this bar beyond liq: at the open
                elif pos.quantity < 0 and m.high[i, j] >= liq:
                    price = max(liq, open_)
                else:
                    continue
                report.liquidations.append(sub.liquidate(symbol, price, ts))

    # --- saved state ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What the next bar needs besides the market (rebuilt from data) and the account
        (saved on its own): the open orders with their remaining amounts, in order,
        whether perpetuals were traded, and the id the next order will get."""
        return {
            "pending": [order_state(o) for o in self._pending],
            "perps_traded": self._perps_traded,
            "next_order_id": next_order_id(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take up saved open orders; the next order gets the saved id (``Order`` ids
        come from one process-wide counter, which this sets)."""
        self._pending = [order_from_state(o) for o in state["pending"]]
        self._perps_traded = bool(state["perps_traded"]) or self._perps_traded
        set_next_order_id(int(state["next_order_id"]))


def order_state(order: Order) -> dict[str, Any]:
    """An order as plain JSON: every field, the id included (``post_only`` only when
    set, so states saved before it existed read the same)."""
    out = {
        "id": order.id,
        "symbol": order.symbol,
        "side": str(order.side),
        "quantity": order.quantity,
        "quote_quantity": order.quote_quantity,
        "type": str(order.type),
        "limit_price": order.limit_price,
        "reduce_only": order.reduce_only,
        "subaccount": order.subaccount,
        "leverage": float(order.leverage),
        "reason": order.reason,
        "decision_id": order.decision_id,
        "time_in_force": str(order.time_in_force),
        "expires_at": None if order.expires_at is None else order.expires_at.isoformat(),
    }
    if order.post_only:
        out["post_only"] = True
    return out


def order_from_state(state: Mapping[str, Any]) -> Order:
    fields = dict(state)
    fields["side"] = Side(fields["side"])
    fields["type"] = OrderType(fields["type"])
    for name in ("quantity", "quote_quantity", "limit_price"):
        if fields[name] is not None:
            fields[name] = float(fields[name])
    if fields["expires_at"] is not None:
        fields["expires_at"] = pd.Timestamp(fields["expires_at"])
    return Order(**fields)
