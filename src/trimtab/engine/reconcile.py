"""The reconciliation gate: the runner's books against the exchange's, before it trades.

A runner starts HALTED. It compares what its store and ledger say with what the exchange
says (balances, positions, open orders, orders it did not send) and goes ACTIVE only
when every difference is within tolerance; otherwise it stays HALTED (decisions are
recorded, nothing is sent), alerts, and shows the differences. The exchange's events the
runner has not booked yet (fills while it was down) are taken into account as they will
be booked: ``project`` books them on a copy of the ledger, and the next cycle books them
for real, in the same transaction as its checkpoint.

It never invents orders: an open order at the exchange whose client order id the store
does not know is *external*; its fills are held apart, unbooked, until a person adopts
the order (``trimtab adopt``), so a trade made by hand shows as a difference until then.

Money is USDT, quantities base units (signed: negative is short).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from trimtab.domain import Account, Instrument, LedgerError

__all__ = [
    "ACTIVE",
    "HALTED",
    "Difference",
    "Reconciliation",
    "Tolerance",
    "book_event",
    "book_in_order",
    "compare",
    "is_external",
]

ACTIVE, HALTED = "ACTIVE", "HALTED"


@dataclass(frozen=True)
class Tolerance:
    """How far the books may differ and still count as equal.

    ``cash``: USDT, absolute, per subaccount; ``cash_fraction``: of the larger of the two
    cash figures (whichever allows more); ``lots``: a position may differ by this many of
    its instrument's lot steps (0.5: less than half a lot, i.e. nothing a trade could
    have made); ``quantity``: absolute base units, for instruments without a lot step.
    """

    cash: float = 0.01
    cash_fraction: float = 1e-9
    lots: float = 0.5
    quantity: float = 1e-9

    def __post_init__(self) -> None:
        for name in ("cash", "cash_fraction", "lots", "quantity"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"reconcile tolerance {name} must be a number >= 0, got {v!r}")

    def cash_allowed(self, ours: float, theirs: float) -> float:
        return max(self.cash, self.cash_fraction * max(abs(ours), abs(theirs)))

    def quantity_allowed(self, instrument: Instrument | None) -> float:
        step = 0.0 if instrument is None else float(instrument.lot_size)
        return max(self.quantity, self.lots * step)


@dataclass(frozen=True)
class Difference:
    """One item the runner and the exchange see differently.

    ``item``: ``cash``, ``position``, ``open order`` or ``order status``; ``key`` the
    symbol or client order id; ``ours`` and ``theirs`` the two figures (None: absent on
    that side); ``allowed`` the tolerance (USDT or base units; None for an order);
    ``within`` whether it is within it.
    """

    subaccount: str
    item: str
    key: str
    ours: Any
    theirs: Any
    allowed: float | None
    within: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "subaccount": self.subaccount,
            "item": self.item,
            "key": self.key,
            "ours": self.ours,
            "theirs": self.theirs,
            "allowed": self.allowed,
            "within": self.within,
            "note": self.note,
        }

    def line(self) -> str:
        def fmt(v: Any) -> str:
            if v is None:
                return "none"
            return f"{v:,.8g}" if isinstance(v, float) else str(v)

        tol = "" if self.allowed is None else f" (tolerance {self.allowed:g})"
        note = f": {self.note}" if self.note else ""
        return (
            f"{self.subaccount} {self.item} {self.key}: ours {fmt(self.ours)}, "
            f"exchange {fmt(self.theirs)}{tol}{note}"
        )


@dataclass
class Reconciliation:
    """The outcome of one comparison.

    ``differences``: every item that differs at all (``within`` says whether it is
    tolerated); ``pending_events``: exchange events counted in (booked on a copy of the
    ledger, to be booked by the next cycle); ``external``: open orders at the exchange the
    runner did not send; ``held_fills``: fills of external orders, not booked until the
    order is adopted. ``state`` is ACTIVE when nothing differs beyond tolerance.
    """

    differences: list[Difference] = field(default_factory=list)
    pending_events: int = 0
    pending_fills: list[dict[str, Any]] = field(default_factory=list)
    external: list[dict[str, Any]] = field(default_factory=list)
    held_fills: list[dict[str, Any]] = field(default_factory=list)

    @property
    def beyond(self) -> list[Difference]:
        return [d for d in self.differences if not d.within]

    @property
    def state(self) -> str:
        return ACTIVE if not self.beyond else HALTED

    @property
    def ok(self) -> bool:
        return self.state == ACTIVE

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "differences": [d.to_dict() for d in self.differences],
            "pending_events": self.pending_events,
            "pending_fills": list(self.pending_fills),
            "external": list(self.external),
            "held_fills": list(self.held_fills),
        }

    def summary(self) -> str:
        """One line: the state and why."""
        if self.ok:
            extra = []
            if self.pending_events:
                extra.append(f"{self.pending_events} exchange event(s) to book")
            if self.external:
                extra.append(f"{len(self.external)} external order(s) marked")
            tail = f" ({'; '.join(extra)})" if extra else ""
            return f"ACTIVE: the books agree with the exchange{tail}"
        first = self.beyond[0].line()
        more = len(self.beyond) - 1
        return f"HALTED: {len(self.beyond)} difference(s) beyond tolerance: {first}" + (
            f" (and {more} more)" if more else ""
        )


def is_external(event: Any) -> bool:
    """A fill of an order the runner did not send (the venue marks it ``external``)."""
    return bool(getattr(event, "data", {}).get("external"))


def book_event(account: Account, event: Any, instrument: Callable[[str], Instrument]) -> Any | None:
    """Book one exchange event into ``account`` as the runner books it; returns the
    ``Fill`` of a fill event (None otherwise). External fills are not booked here."""
    if is_external(event):
        return None
    sub = account.subaccount(event.subaccount) if event.subaccount is not None else None
    kind = event.kind
    if kind == "fill":
        assert sub is not None
        fill = event.fill()
        sub.apply_fill(fill, instrument(fill.symbol))
        return fill
    if kind == "funding":
        assert sub is not None
        sub.apply_funding(
            event.data["symbol"], float(event.data["rate"]), float(event.data["mark"])
        )
    elif kind == "liquidation":
        assert sub is not None
        sub.liquidate(
            event.data["symbol"], float(event.data["price"]), pd.Timestamp(event.timestamp)
        )
    elif kind == "transfer":
        account.transfer(event.data["source"], event.data["target"], float(event.data["amount"]))
    return None


def book_in_order(
    account: Account,
    events: Iterable[Any],
    instrument: Callable[[str], Instrument],
    book: Callable[[Any], None] | None = None,
) -> list[Any]:
    """Book ``events`` (through ``book``, default ``book_event`` on ``account``) in seq
    order, except a fill the ledger refuses (a buy before the sell whose cash paid for it:
    a venue reports each market's trades apart, so one poll may list them out of order),
    which is booked again after the rest of the batch. The exchange made the trade, so
    the money was there; one still refused after the batch is a real difference and
    raises. Returns the events in the order booked."""
    do = book or (lambda ev: book_event(account, ev, instrument))
    done: list[Any] = []
    waiting: list[Any] = []
    for ev in events:
        try:
            do(ev)
        except LedgerError:
            if ev.kind != "fill":
                raise
            waiting.append(ev)
            continue
        done.append(ev)
        if waiting:
            left = []
            for w in waiting:
                try:
                    do(w)
                except LedgerError:
                    left.append(w)
                    continue
                done.append(w)
            waiting = left
    for w in waiting:
        do(w)  # refused again after the whole batch: raise
        done.append(w)
    return done


def project(
    account: Account, events: Iterable[Any], instrument: Callable[[str], Instrument]
) -> tuple[Account, int, list[dict[str, Any]], list[dict[str, Any]]]:
    """A copy of ``account`` with ``events`` booked; the number of events, the fills
    booked and the external fills held apart (as dicts)."""
    copy = Account()
    copy.restore(account.state())
    n = 0
    fills: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    ours = []
    for ev in events:
        n += 1
        if is_external(ev):
            held.append(_fill_summary(ev))
        else:
            ours.append(ev)
    for ev in book_in_order(copy, ours, instrument):
        if ev.kind == "fill":
            fills.append(_fill_summary(ev))
    return copy, n, fills, held


def _fill_summary(ev: Any) -> dict[str, Any]:
    d = ev.data
    return {
        "seq": ev.seq,
        "subaccount": ev.subaccount,
        "client_order_id": ev.client_order_id,
        "exchange_order_id": d.get("exchange_order_id"),
        "symbol": d.get("symbol"),
        "side": d.get("side"),
        "quantity": d.get("quantity"),
        "price": d.get("price"),
        "timestamp": str(ev.timestamp),
    }


def compare(
    ledger: Account,
    balances: Mapping[str, Mapping[str, Any]],
    *,
    store_orders: Mapping[str, Mapping[str, Any]],
    theirs_open: Mapping[str, Iterable[Any]],
    exchange_order: Callable[[str], Any | None],
    external: Mapping[str, Iterable[Any]] | None = None,
    instrument: Callable[[str], Instrument] | None = None,
    tolerance: Tolerance | None = None,
) -> Reconciliation:
    """Compare ``ledger`` (the runner's, with pending events booked) with the exchange.

    ``balances``: the exchange's ``{sub: {"cash": USDT, "positions": {symbol: qty}}}``;
    ``store_orders``: the store's orders by client order id (rows with ``subaccount``
    and ``status``); ``theirs_open``: the exchange's open orders per subaccount
    (``ExchangeOrder``); ``exchange_order``: looks one order up at the exchange by client
    order id; ``external``: open orders the venue itself reports as not sent by us. An
    open order at the exchange the store does not know is external, never a difference.
    """
    tol = tolerance or Tolerance()
    out = Reconciliation()
    for name, sub in ledger.subaccounts.items():
        theirs = balances.get(name)
        if theirs is None:
            out.differences.append(
                Difference(
                    name,
                    "account",
                    name,
                    "present",
                    None,
                    None,
                    False,
                    "the exchange has no such account",
                )
            )
            continue
        ours_cash, their_cash = float(sub.cash), float(theirs.get("cash", 0.0))
        gap = abs(ours_cash - their_cash)
        if gap > 0:
            allowed = tol.cash_allowed(ours_cash, their_cash)
            out.differences.append(
                Difference(name, "cash", "USDT", ours_cash, their_cash, allowed, gap <= allowed)
            )
        ours_pos = {s: float(p.quantity) for s, p in sub.positions.items() if p.quantity != 0}
        their_pos = {
            s: float(q) for s, q in dict(theirs.get("positions") or {}).items() if float(q) != 0
        }
        for symbol in sorted(set(ours_pos) | set(their_pos)):
            a, b = ours_pos.get(symbol, 0.0), their_pos.get(symbol, 0.0)
            if a == b:
                continue
            inst = None
            if instrument is not None:
                try:
                    inst = instrument(symbol)
                except KeyError:
                    inst = None
            allowed = tol.quantity_allowed(inst)
            out.differences.append(
                Difference(name, "position", symbol, a, b, allowed, abs(a - b) <= allowed)
            )
    open_there: dict[str, Any] = {}
    seen_external: set[str] = set()
    for name, orders in theirs_open.items():
        for o in orders:
            row = store_orders.get(o.client_order_id)
            if row is None:
                out.external.append(_external(name, o))
                seen_external.add(o.client_order_id)
                continue
            open_there[o.client_order_id] = o
            if row["status"] not in _OPEN:
                out.differences.append(
                    Difference(
                        name,
                        "order status",
                        o.client_order_id,
                        row["status"],
                        o.status,
                        None,
                        False,
                        "open at the exchange, closed in the store",
                    )
                )
    for cid, row in store_orders.items():
        if row["status"] not in _OPEN or cid in open_there:
            continue
        known = exchange_order(cid)
        name = str(row["subaccount"])
        if known is None:
            out.differences.append(
                Difference(
                    name,
                    "order status",
                    cid,
                    row["status"],
                    None,
                    None,
                    False,
                    "open in the store, unknown at the exchange",
                )
            )
        elif known.is_open:
            continue  # open on both sides (listed under another account)
        else:
            out.differences.append(
                Difference(
                    name,
                    "order status",
                    cid,
                    row["status"],
                    known.status,
                    None,
                    True,
                    f"{known.status} at the exchange: the store follows at the next cycle",
                )
            )
    for name, orders in dict(external or {}).items():
        for o in orders:
            if o.client_order_id not in seen_external:
                out.external.append(_external(name, o))
                seen_external.add(o.client_order_id)
    return out


_OPEN = ("sent", "partially_filled")


def _external(name: str, o: Any) -> dict[str, Any]:
    return {
        "subaccount": name,
        "client_order_id": o.client_order_id,
        "exchange_order_id": getattr(o, "exchange_order_id", None),
        "symbol": o.symbol,
        "side": o.side,
        "quantity": o.quantity,
        "status": o.status,
    }
