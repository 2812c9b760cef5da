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
    spot,
)
from trimtab.execution.broker import ExecutionReport
from trimtab.execution.costs import CostModel
from trimtab.execution.funding import bar_fraction, interpolated_mark
from trimtab.execution.market import MarketArrays

# Per perpetual: rates (fractions per interval, UTC index), or a table of funding_rate
# and mark_price.
FundingRates = Mapping[str, pd.Series | pd.DataFrame]


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
    ) -> None:
        self.account = account
        self.market = market
        self.costs = costs or CostModel()
        self._instruments = dict(instruments or {})
        self._default_instrument = default_instrument or (lambda s: spot(s, min_notional=5.0))
        self._pending: list[Order] = []
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
        if order.symbol not in self.market.column:
            return Rejection(order, self.market.index[0], f"unknown symbol {order.symbol}")
        if order.subaccount not in self.account.subaccounts:
            return Rejection(order, self.market.index[0], f"unknown subaccount {order.subaccount}")
        self._pending.append(order)
        return None

    def cancel(self, order_id: int) -> bool:
        before = len(self._pending)
        self._pending = [o for o in self._pending if o.id != order_id]
        return len(self._pending) < before

    def open_orders(self) -> list[Order]:
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
        # Sells first so that their proceeds fund the buys of the same rebalance.
        orders = sorted(self._pending, key=lambda o: o.side is Side.BUY)
        still_open: list[Order] = []
        buy_scale: dict[str, float] = {}
        sells_done = False
        for order in orders:
            if order.side is Side.BUY and not sells_done:
                sells_done = True
                buy_scale = self._quote_buy_scale(orders, i)
            j = self.market.column[order.symbol]
            if not self.market.tradable[i, j]:
                if self.market.live[i, j]:
                    still_open.append(order)  # a gap in the data: wait for the next bar
                else:
                    report.rejections.append(Rejection(order, ts, f"{order.symbol} is not listed"))
                continue
            try:
                filled = self._execute(
                    order, i, j, ts, report, buy_scale.get(order.subaccount, 1.0)
                )
            except LedgerError as exc:
                report.rejections.append(Rejection(order, ts, str(exc)))
                continue
            if not filled:
                still_open.append(order)
        self._pending = still_open

    def _quote_buy_scale(self, orders: list[Order], i: int) -> dict[str, float]:
        """Per subaccount, the factor that fits this bar's quote-sized buys into its cash.

        Buys sized at the decision's close can exceed the cash that the sells actually
        raised at the next open; scaling them all alike keeps the target proportions.
        """
        wanted: dict[str, float] = {}
        for o in orders:
            if (
                o.quote_quantity is not None
                and self.market.tradable[i, self.market.column[o.symbol]]
            ):
                wanted[o.subaccount] = wanted.get(o.subaccount, 0.0) + o.quote_quantity
        scale = {}
        for name, total in wanted.items():
            cash = self.account.subaccount(name).cash
            if total > cash:
                scale[name] = max(cash, 0.0) / total
        return scale

    def _execute(
        self,
        order: Order,
        i: int,
        j: int,
        ts: pd.Timestamp,
        report: ExecutionReport,
        buy_scale: float = 1.0,
    ) -> bool:
        """Try to fill ``order`` in bar i; False if a limit order did not trade."""
        m = self.market
        inst = self.instrument(order.symbol)
        sub = self.account.subaccount(order.subaccount)
        open_ = m.open[i, j]
        maker = False
        if order.type is OrderType.LIMIT:
            assert order.limit_price is not None
            limit = order.limit_price
            marketable = open_ <= limit if order.side is Side.BUY else open_ >= limit
            touched = m.low[i, j] <= limit if order.side is Side.BUY else m.high[i, j] >= limit
            if not touched:
                return False
            price = open_ if marketable else limit
            maker = not marketable
        else:
            notional_guess = (
                order.quote_quantity
                if order.quote_quantity is not None
                else (order.quantity or 0.0) * open_
            )
            slip = self.costs.slippage(
                notional_guess, m.quote_volume[i, j], self._half_spread(i, j)
            )
            price = open_ * (1 + slip) if order.side is Side.BUY else open_ * (1 - slip)
        fee_rate = self.costs.fee_rate(maker)
        fee_in_base = (
            self.costs.fee_currency == "received"
            and order.side is Side.BUY
            and not inst.is_perpetual
        )
        notes = []
        if order.quote_quantity is not None:
            # Spend quote_quantity in all: with quote fees, the fee comes out of it.
            spend = min(order.quote_quantity * buy_scale, sub.cash)
            if spend < order.quote_quantity * (1 - 1e-9):
                notes.append("scaled to available cash")
            quantity = spend / price if fee_in_base else spend / (price * (1 + fee_rate))
        else:
            assert order.quantity is not None
            quantity = order.quantity
        held = sub.quantity(order.symbol)
        if order.side is Side.SELL and not inst.is_perpetual:
            quantity = min(quantity, held)
        if order.reduce_only:
            if order.side.sign * held >= 0:
                report.rejections.append(Rejection(order, ts, "reduce-only order would not reduce"))
                return True
            quantity = min(quantity, abs(held))
        if order.side is Side.BUY and not inst.is_perpetual and order.quote_quantity is None:
            affordable = sub.cash / (price * (1 + (0.0 if fee_in_base else fee_rate)))
            if quantity > affordable:
                quantity = affordable
                notes.append("scaled to available cash")
        closes_all = order.side is Side.SELL and not inst.is_perpetual and quantity >= held > 0
        if not closes_all:
            quantity = inst.round_quantity(quantity)
        problem = inst.order_problem(quantity, price)
        if problem and not closes_all:
            report.rejections.append(Rejection(order, ts, f"{order.symbol}: {problem}"))
            return True
        fee = quantity * price * fee_rate
        fill = Fill(
            order_id=order.id,
            timestamp=ts,
            symbol=order.symbol,
            side=order.side,
            quantity=quantity,
            price=price,
            fee=quantity * fee_rate if fee_in_base else fee,
            fee_currency=inst.base if fee_in_base else inst.quote,
            liquidity=Liquidity.MAKER if maker else Liquidity.TAKER,
            subaccount=order.subaccount,
            reason="; ".join([order.reason, *notes]) if notes else order.reason,
            leverage=order.leverage,
        )
        sub.apply_fill(fill, inst)
        report.fills.append(fill)
        self._perps_traded |= inst.is_perpetual
        return True

    def _close_delisted(self, i: int, j: int, ts: pd.Timestamp, report: ExecutionReport) -> None:
        """Sell what is held of a delisted asset at its last close (taker fee, no impact)."""
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
