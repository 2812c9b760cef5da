"""The paper exchange: the simulated exchange on replayed or live prices, with its own
SQLite database, playing the venue whose books a runner reconciles against.

Inside it is ``SimulatedBroker`` over ``MarketArrays`` (the same fees, spreads, impact,
lot rules, volume cap, partial fills, funding, liquidations and delistings as
backtests) and its own ``Account``: the exchange's balances. It has no trimtab guard: a
real exchange checks none of our limits.

Timing (UTC, bars stamped with their open): ``submit(order, cid, bar)`` is a decision
taken at the close of bar ``bar``; the order can fill from bar ``bar + 1``, when
``advance`` runs that bar. An order for a bar the exchange has not reached yet waits
outside the book until then; one for a bar it has already passed (``bar < last_bar``)
is rejected, as it would fill in the past.

Durability: every call that changes something commits one SQLite transaction (WAL,
``synchronous=FULL``) before it returns, so after a SIGKILL the file holds the state
after the last call that returned, and reopening restores it exactly: the same next
fills, to the bit. ``submit`` is idempotent by client order id and ``advance(i)`` by bar,
so a driver that crashed simply repeats its last calls. While open, the exchange holds
an exclusive lock on its file: a second one on the same file (any process) is refused.

Events (``events_since``), numbered from 1, are every change to the balances in the
order the exchange booked them, with what is needed to book it again:

- ``fill``: the exact ``Fill`` (``event.fill()``); a mirror books it with
  ``sub.apply_fill(event.fill(), exchange.instrument(symbol))``.
- ``funding``: ``symbol``, ``rate`` (fraction per interval), ``mark`` and ``amount``
  (USDT received, negative when paid): ``sub.apply_funding(symbol, rate, mark)``.
- ``liquidation``: ``symbol``, ``price``, ``timestamp`` (the liquidation's own time) and
  the result: ``sub.liquidate(symbol, price, timestamp)``.
- ``transfer``: ``source``, ``target``, ``amount`` (USDT): ``account.transfer(...)``.
- ``order``: an order's status changed other than by a fill (cancelled, expired,
  rejected at submission or at the fill): ``status``, ``reason``, ``filled_quantity``.

A mirror ledger that books them in seq order ends with exactly (``==``) the exchange's
balances. Floats are stored as JSON numbers (Python writes the shortest repr, which
reads back as the same float) or SQLite REALs (IEEE doubles): both exact. An event's
``bar`` is the bar being run (fills, funding, liquidations, expiries), else the
exchange's last bar (-1 before the first, stamped with bar 0's open).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from trimtab.domain import (
    Account,
    Fill,
    Instrument,
    LedgerError,
    Liquidation,
    Liquidity,
    Order,
    Side,
    Subaccount,
)
from trimtab.domain.account import instrument_state
from trimtab.domain.orders import next_order_id
from trimtab.execution.costs import CostModel
from trimtab.execution.market import MarketArrays
from trimtab.execution.simulated import (
    FundingRates,
    SimulatedBroker,
    order_from_state,
    order_state,
)

__all__ = ["ExchangeEvent", "ExchangeOrder", "PaperExchange", "PaperExchangeError"]

# Bumped when the file layout changes; a file of another format is refused, not guessed at.
FORMAT = 1
OPEN_STATUSES = ("open", "partially_filled")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE bars (bar INTEGER PRIMARY KEY, ns INTEGER NOT NULL);
CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE orders (
    client_order_id TEXT PRIMARY KEY,
    order_id INTEGER NOT NULL UNIQUE,
    subaccount TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    quantity REAL,
    quote_quantity REAL,
    status TEXT NOT NULL,
    filled_quantity REAL NOT NULL,
    filled_notional REAL NOT NULL,
    fee REAL NOT NULL,
    reason TEXT NOT NULL,
    bar INTEGER NOT NULL
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    bar INTEGER NOT NULL,
    ns INTEGER NOT NULL,
    subaccount TEXT,
    client_order_id TEXT,
    data TEXT NOT NULL
);
CREATE TABLE transfers (
    transfer_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    amount REAL NOT NULL,
    ok INTEGER NOT NULL,
    reason TEXT NOT NULL,
    bar INTEGER NOT NULL
);
"""
_TABLES = {"meta", "bars", "state", "orders", "events", "transfers"}
_ORDER_COLUMNS = (
    "client_order_id, order_id, subaccount, symbol, side, quantity, quote_quantity, status, "
    "filled_quantity, filled_notional, fee, reason, bar"
)


class PaperExchangeError(Exception):
    """The paper exchange's file cannot be used as asked (names the file and why)."""


@dataclass(frozen=True)
class ExchangeOrder:
    """An order as the exchange knows it, by the runner's ``client_order_id``.

    ``quantity`` (base) or ``quote_quantity`` (USDT) as submitted; ``filled_quantity``
    in base units; ``average_price`` in USDT per unit (None before a fill); ``fee`` the
    sum of its fills' fees, in their fee currency (USDT, or the base asset received on a
    spot buy with ``fee_currency="received"``); ``reason`` why it was rejected or expired
    (else ""); ``bar`` the decision bar it was submitted for.
    """

    client_order_id: str
    subaccount: str
    symbol: str
    side: str
    quantity: float | None
    quote_quantity: float | None
    status: str
    filled_quantity: float
    average_price: float | None
    fee: float
    reason: str
    bar: int
    exchange_order_id: str

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class ExchangeEvent:
    """One change the exchange booked (see the module docstring for ``kind``/``data``)."""

    seq: int
    kind: str
    bar: int
    timestamp: pd.Timestamp
    subaccount: str | None
    client_order_id: str | None
    data: dict[str, Any]

    def fill(self) -> Fill:
        """The exact ``Fill`` of a ``fill`` event."""
        if self.kind != "fill":
            raise ValueError(f"event {self.seq} is a {self.kind} event, not a fill")
        d = self.data
        return Fill(
            order_id=int(d["order_id"]),
            timestamp=pd.Timestamp(d["timestamp"]),
            symbol=str(d["symbol"]),
            side=Side(d["side"]),
            quantity=float(d["quantity"]),
            price=float(d["price"]),
            fee=float(d["fee"]),
            fee_currency=str(d["fee_currency"]),
            liquidity=Liquidity(d["liquidity"]),
            subaccount=str(d["subaccount"]),
            reason=str(d["reason"]),
            leverage=float(d["leverage"]),
        )


class _Ledger(Subaccount):
    """A subaccount that notes each booking the broker makes on it, in call order, into
    the exchange's shared ``notes`` list: the events come from the ledger's own calls,
    so a mirror that repeats them repeats exactly what happened."""

    notes: list[tuple[Any, ...]]  # set by the exchange; not a dataclass field

    def apply_fill(self, fill: Fill, instrument: Instrument) -> None:
        super().apply_fill(fill, instrument)
        self.notes.append(("fill", self.name, fill))

    def apply_funding(self, symbol: str, rate: float, mark: float) -> float:
        amount = super().apply_funding(symbol, rate, mark)
        if amount != 0:  # a zero payment changes nothing in the ledger
            self.notes.append(("funding", self.name, symbol, rate, mark, amount))
        return amount

    def liquidate(self, symbol: str, price: float, timestamp: pd.Timestamp) -> Liquidation:
        event = super().liquidate(symbol, price, timestamp)
        self.notes.append(("liquidation", self.name, event))
        return event


@dataclass
class _OrderRow:
    client_order_id: str
    order_id: int
    subaccount: str
    symbol: str
    side: str
    quantity: float | None
    quote_quantity: float | None
    status: str
    filled_quantity: float = 0.0
    filled_notional: float = 0.0
    fee: float = 0.0
    reason: str = ""
    bar: int = 0

    def public(self) -> ExchangeOrder:
        filled = self.filled_quantity
        return ExchangeOrder(
            client_order_id=self.client_order_id,
            subaccount=self.subaccount,
            symbol=self.symbol,
            side=self.side,
            quantity=self.quantity,
            quote_quantity=self.quote_quantity,
            status=self.status,
            filled_quantity=filled,
            average_price=self.filled_notional / filled if filled > 0 else None,
            fee=self.fee,
            reason=self.reason,
            bar=self.bar,
            exchange_order_id=f"P{self.order_id:06d}",
        )

    def row(self) -> tuple[Any, ...]:
        return (
            self.client_order_id,
            self.order_id,
            self.subaccount,
            self.symbol,
            self.side,
            self.quantity,
            self.quote_quantity,
            self.status,
            self.filled_quantity,
            self.filled_notional,
            self.fee,
            self.reason,
            self.bar,
        )


@dataclass
class _Batch:
    """What one call changed, written in one transaction."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    orders: dict[str, _OrderRow] = field(default_factory=dict)
    transfers: list[tuple[Any, ...]] = field(default_factory=list)
    bars: list[tuple[int, int]] = field(default_factory=list)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class PaperExchange:
    """A simulated exchange with its own SQLite file at ``path``.

    A new file (parent folders too) funds each subaccount with ``balances`` (USDT); an
    existing one is restored exactly, and ``balances`` must then name the same
    subaccounts (their amounts are not used again). ``market`` may be longer than when
    the file was made (live data grows at its end), not different in the bars saved.
    ``costs`` and ``instruments`` must be the ones the file was made with; ``funding``
    maps a perpetual to its rates (``SimulatedBroker``'s ``FundingRates``).
    """

    def __init__(
        self,
        path: str | Path,
        market: MarketArrays,
        *,
        balances: Mapping[str, float],
        costs: CostModel | None = None,
        instruments: Mapping[str, Instrument] | None = None,
        funding: FundingRates | None = None,
    ) -> None:
        self.path = Path(path)
        self._costs = costs or CostModel()
        self._instruments = dict(instruments or {})
        self._funding = funding
        self._market = market
        self._conn: sqlite3.Connection | None = None
        self._broken: str | None = None
        self._notes: list[tuple[Any, ...]] = []
        self._orders: dict[str, _OrderRow] = {}
        self._by_id: dict[int, str] = {}
        self._held: list[tuple[int, Order]] = []  # (decision bar, order) not yet in the book
        self._transfers: dict[str, bool] = {}
        self._last_bar: int | None = None
        self._next_seq = 1
        self._next_id = 1
        self._n_saved_bars = 0
        names = self._check_balances(balances)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = self._connect()
            tables = {
                r[0]
                for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            # No table: a new file, or a creation killed before its commit (the tables may
            # sit in the WAL beside a bare main file: that is the same as existing).
            if not tables:
                self._account = self._new_account(balances)
                self._broker = self._make_broker(market)
                self._create(names)
            elif not _TABLES <= tables:
                raise PaperExchangeError(
                    f"{self.path}: not a paper exchange database (it has tables "
                    f"{', '.join(sorted(tables))})"
                )
            else:
                self._restore(names)
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise PaperExchangeError(
                f"{self.path}: {self._sqlite_problem(exc)} (a paper exchange needs its own "
                "intact SQLite file)"
            ) from None
        except OSError as exc:
            self._close_quietly()
            raise PaperExchangeError(f"{self.path}: cannot open: {exc.strerror or exc}") from None
        except BaseException:
            self._close_quietly()
            raise

    # --- opening -------------------------------------------------------------------
    def _check_balances(self, balances: Mapping[str, float]) -> list[str]:
        names = list(balances)
        if not names:
            raise PaperExchangeError(f"{self.path}: balances name no subaccount")
        for name, amount in balances.items():
            if not (isinstance(name, str) and name):
                raise PaperExchangeError(f"{self.path}: subaccount names must be text: {name!r}")
            if not (math.isfinite(amount) and amount >= 0):
                raise PaperExchangeError(
                    f"{self.path}: balance of {name} must be a finite amount >= 0 USDT, "
                    f"got {amount}"
                )
        return names

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=0.5)
        try:
            # Exclusive before WAL: no shared-memory index, and the lock taken below is
            # held until close, so no second exchange can write the same books.
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise PaperExchangeError(f"{self.path}: cannot use WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _sqlite_problem(self, exc: sqlite3.DatabaseError) -> str:
        text = str(exc)
        if "locked" in text:
            return "in use by another paper exchange (the file is locked)"
        if "not a database" in text:
            return "not a SQLite database"
        if "malformed" in text or "corrupt" in text:
            return f"the database is corrupt ({text})"
        return f"SQLite error: {text}"

    def _close_quietly(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _new_account(self, balances: Mapping[str, float]) -> Account:
        account = Account()
        for name, cash in balances.items():
            sub = self._ledger(Subaccount(name=name).state())
            if cash:
                sub.deposit(float(cash))
            account.subaccounts[name] = sub
        return account

    def _ledger(self, state: Mapping[str, Any]) -> _Ledger:
        sub = _Ledger.from_state(state)
        sub.notes = self._notes
        return sub

    def _make_broker(self, market: MarketArrays) -> SimulatedBroker:
        return SimulatedBroker(
            self._account,
            market,
            self._costs,
            instruments=self._instruments,
            funding=self._funding,
            fill_guard=None,
        )

    def _settings(self) -> dict[str, str]:
        return {
            "costs": _dumps(asdict(self._costs)),
            "instruments": _dumps(
                {s: instrument_state(i) for s, i in sorted(self._instruments.items())}
            ),
        }

    def _create(self, names: list[str]) -> None:
        conn = self._conn
        assert conn is not None
        stamps = self._market.index.as_unit("ns").asi8
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            meta = {"format": str(FORMAT), "subaccounts": _dumps(names), **self._settings()}
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            conn.executemany(
                "INSERT INTO bars VALUES (?, ?)", [(k, int(ns)) for k, ns in enumerate(stamps)]
            )
            conn.executemany("INSERT INTO state VALUES (?, ?)", self._state_rows())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._n_saved_bars = len(stamps)

    def _restore(self, names: list[str]) -> None:
        conn = self._conn
        assert conn is not None
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise PaperExchangeError(f"{self.path}: the database is corrupt ({check})")
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        try:
            fmt = int(meta["format"])
            saved_names = json.loads(meta["subaccounts"])
            state = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM state")}
            account_state = state["account"]
            broker_state = state["broker"]
            held = state["held"]
            last_bar = state["last_bar"]
        except (KeyError, ValueError, TypeError) as exc:
            raise PaperExchangeError(
                f"{self.path}: damaged paper exchange state (missing or unreadable {exc})"
            ) from None
        if fmt != FORMAT:
            raise PaperExchangeError(
                f"{self.path}: paper exchange file format {fmt}, this trimtab reads {FORMAT}"
            )
        if sorted(saved_names) != sorted(names):
            raise PaperExchangeError(
                f"{self.path}: this paper exchange holds subaccounts {', '.join(saved_names)}, "
                f"not {', '.join(names)}"
            )
        for key, value in self._settings().items():
            if json.loads(meta.get(key, "null")) != json.loads(value):
                raise PaperExchangeError(
                    f"{self.path}: the {key} differ from those the exchange was made with "
                    f"(saved {meta.get(key)}, given {value})"
                )
        self._last_bar = None if last_bar is None else int(last_bar)
        saved = [ns for _, ns in conn.execute("SELECT bar, ns FROM bars ORDER BY bar")]
        self._n_saved_bars = len(saved)
        self._check_market(self._market)
        self._account = Account()
        for s in account_state["subaccounts"]:
            sub = self._ledger(s)
            self._account.subaccounts[sub.name] = sub
        self._broker = self._make_broker(self._market)
        # restore() also sets the process-wide Order id counter: keep the runner's.
        self._broker.restore({**broker_state, "next_order_id": next_order_id()})
        self._held = [(int(bar), order_from_state(o)) for bar, o in held]
        for row in conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders ORDER BY order_id"):
            order = _OrderRow(*row)
            self._orders[order.client_order_id] = order
            self._by_id[order.order_id] = order.client_order_id
            self._next_id = order.order_id + 1
        self._transfers = {
            t: bool(ok) for t, ok in conn.execute("SELECT transfer_id, ok FROM transfers")
        }
        top = conn.execute("SELECT MAX(seq) FROM events").fetchone()[0]
        self._next_seq = 1 if top is None else int(top) + 1
        batch = self._extend_bars(self._market)
        if batch.bars:
            self._commit(batch)

    def _check_market(self, market: MarketArrays) -> None:
        """``market`` agrees with every saved bar time and covers the bars run."""
        assert self._conn is not None
        stamps = market.index.as_unit("ns").asi8
        needed = 0 if self._last_bar is None else self._last_bar + 1
        if len(stamps) < needed:
            raise PaperExchangeError(
                f"{self.path}: the market has {len(stamps)} bars, the exchange has already "
                f"run {needed}"
            )
        n = min(len(stamps), self._n_saved_bars)
        saved = [
            ns
            for (ns,) in self._conn.execute("SELECT ns FROM bars WHERE bar < ? ORDER BY bar", (n,))
        ]
        for k, ns in enumerate(saved):
            if int(stamps[k]) != ns:
                raise PaperExchangeError(
                    f"{self.path}: the market's bar {k} opens at {pd.Timestamp(int(stamps[k]), tz='UTC')}, "
                    f"the exchange's at {pd.Timestamp(ns, tz='UTC')}: not the market this "
                    "exchange was run on"
                )

    def _extend_bars(self, market: MarketArrays) -> _Batch:
        batch = _Batch()
        stamps = market.index.as_unit("ns").asi8
        batch.bars = [(k, int(stamps[k])) for k in range(self._n_saved_bars, len(stamps))]
        return batch

    # --- the exchange --------------------------------------------------------------
    @property
    def last_bar(self) -> int | None:
        """The last bar run (None before the first)."""
        return self._last_bar

    @property
    def market(self) -> MarketArrays:
        return self._market

    def instrument(self, symbol: str) -> Instrument:
        """Exchange rules for ``symbol`` (KeyError for a symbol not in the market)."""
        return self._broker.instrument(symbol)

    def submit(self, order: Order, client_order_id: str, bar: int) -> ExchangeOrder:
        """Take ``order``, decided at the close of bar ``bar`` (it can fill from bar+1).

        Idempotent by ``client_order_id``: a known id returns its order unchanged and
        creates nothing. An order the exchange cannot take (unknown symbol or
        subaccount, a bar already passed) is recorded as ``rejected`` with the reason.
        Committed before it returns.
        """
        self._usable()
        cid = str(client_order_id)
        if not cid:
            raise ValueError("client_order_id must not be empty")
        known = self._orders.get(cid)
        if known is not None:
            return known.public()
        bar = int(bar)
        oid = self._next_id
        # The exchange's own numbering, so the runner's Order ids never clash with it.
        internal = replace(order, id=oid)
        reason = ""
        if bar < 0:
            reason = f"decision bar {bar} is not a bar"
        elif self._last_bar is not None and bar < self._last_bar:
            reason = (
                f"decision bar {bar} is before the exchange's last bar {self._last_bar}: "
                "the order would fill in the past"
            )
        elif order.symbol not in self._market.column:
            reason = f"unknown symbol {order.symbol}"
        elif order.subaccount not in self._account.subaccounts:
            reason = (
                f"unknown subaccount {order.subaccount!r}; the exchange has "
                f"{', '.join(self._account.subaccounts)}"
            )
        elif order.post_only and self._would_cross(order, bar):
            reason = self._would_cross(order, bar)
        elif self._last_bar is not None and bar == self._last_bar:
            rejection = self._broker.submit(internal)
            if rejection is not None:
                reason = rejection.reason
        else:
            self._held.append((bar, internal))
        row = _OrderRow(
            client_order_id=cid,
            order_id=oid,
            subaccount=order.subaccount,
            symbol=order.symbol,
            side=str(order.side),
            quantity=None if order.quantity is None else float(order.quantity),
            quote_quantity=None if order.quote_quantity is None else float(order.quote_quantity),
            status="rejected" if reason else "open",
            reason=reason,
            bar=bar,
        )
        self._next_id += 1
        self._orders[cid] = row
        self._by_id[oid] = cid
        batch = _Batch(orders={cid: row})
        if reason:
            self._order_event(batch, row, *self._clock())
        self._commit(batch)
        return row.public()

    def _would_cross(self, order: Order, bar: int) -> str:
        """Why a post-only limit would take liquidity at acceptance (the close of bar
        ``bar``, the touch at its half-spread either side), or "" if it would rest."""
        market, j = self._market, self._market.column[order.symbol]
        if bar >= len(market.timestamps) or not math.isfinite(market.close[bar, j]):
            return ""
        close = float(market.close[bar, j])
        half = self._costs.half_spread_bps
        h = market.half_spread_bps
        if self._costs.spread == "bars" and h is not None and math.isfinite(h[bar, j]):
            half = max(float(h[bar, j]), half)
        limit = float(order.limit_price or 0.0)
        if order.side is Side.BUY and limit >= close * (1 + half * 1e-4):
            touch = f"the ask {close * (1 + half * 1e-4):.10g}"
        elif order.side is Side.SELL and limit <= close * (1 - half * 1e-4):
            touch = f"the bid {close * (1 - half * 1e-4):.10g}"
        else:
            return ""
        return f"post-only {order.side} limit {limit:.10g} would cross {touch} at acceptance"

    def cancel(self, client_order_id: str) -> ExchangeOrder | None:
        """Cancel an open order (committed); any other order is returned as it is, an
        unknown id gives None."""
        self._usable()
        row = self._orders.get(str(client_order_id))
        if row is None:
            return None
        if row.status not in OPEN_STATUSES:
            return row.public()
        held = [(b, o) for b, o in self._held if o.id != row.order_id]
        if len(held) < len(self._held):
            self._held = held
        else:
            self._broker.cancel(row.order_id)
        row.status, row.reason = "cancelled", "cancelled"
        batch = _Batch(orders={row.client_order_id: row})
        self._order_event(batch, row, *self._clock())
        self._commit(batch)
        return row.public()

    def order(self, client_order_id: str) -> ExchangeOrder | None:
        row = self._orders.get(str(client_order_id))
        return None if row is None else row.public()

    def orders(self, subaccount: str | None = None) -> list[ExchangeOrder]:
        """Every order, in the order the exchange took them."""
        return [
            r.public()
            for r in self._orders.values()
            if subaccount is None or r.subaccount == subaccount
        ]

    def open_orders(self, subaccount: str | None = None) -> list[ExchangeOrder]:
        """Orders still waiting (open or partially filled), in the order taken."""
        return [o for o in self.orders(subaccount) if o.is_open]

    def advance(self, i: int) -> None:
        """Run bar ``i`` once: fills of open orders, funding, liquidations, delistings;
        then commit it all in one transaction. ``i <= last_bar`` does nothing (a repeat
        after a crash); bars between ``last_bar`` and ``i`` are run first, in order."""
        self._usable()
        i = int(i)
        start = 0 if self._last_bar is None else self._last_bar + 1
        if i < start:
            return
        n = len(self._market.timestamps)
        if i >= n:
            raise PaperExchangeError(
                f"{self.path}: no bar {i} in the market ({n} bars, the last opening "
                f"{self._market.timestamps[-1]})"
            )
        batch = _Batch()
        try:
            for k in range(start, i + 1):
                self._run_bar(k, batch)
        except BaseException as exc:
            self._broken = f"bar {self._last_bar} failed: {exc}"
            raise
        self._commit(batch)

    def _run_bar(self, k: int, batch: _Batch) -> None:
        ts = self._market.timestamps[k]
        waiting = []
        for bar, order in self._held:
            if bar < k:
                rejection = self._broker.submit(order)
                if rejection is not None:  # checked at submission; kept for safety
                    row = self._row(order.id)
                    row.status, row.reason = "rejected", rejection.reason
                    self._order_event(batch, row, k, ts)
            else:
                waiting.append((bar, order))
        self._held = waiting
        before = {o.id for o in self._broker.open_orders()}
        self._notes.clear()
        report = self._broker.on_bar(k)
        for note in self._notes:
            self._note_event(note, k, ts, batch)
        self._notes.clear()
        ended = set()
        for rejection in report.rejections:
            row = self._row(rejection.order.id)
            ended.add(row.order_id)
            row.status, row.reason = rejection.kind, rejection.reason
            self._order_event(batch, row, k, ts)
        still = {o.id for o in self._broker.open_orders()}
        for oid in before - ended:
            row = self._row(oid)
            if oid in still:
                row.status = "partially_filled" if row.filled_quantity > 0 else "open"
            elif row.filled_quantity > 0:
                # What the broker drops after a fill (cut to cash, a lot remainder, a sell
                # capped at the holding) ends the order: filled, for what it got.
                row.status = "filled"
            else:
                row.status, row.reason = "expired", "not filled"
                self._order_event(batch, row, k, ts)
            batch.orders[row.client_order_id] = row
        self._last_bar = k

    def _row(self, order_id: int) -> _OrderRow:
        return self._orders[self._by_id[order_id]]

    def _note_event(self, note: tuple[Any, ...], k: int, ts: pd.Timestamp, batch: _Batch) -> None:
        kind, sub = note[0], note[1]
        cid = None
        if kind == "fill":
            fill: Fill = note[2]
            data = {
                "order_id": fill.order_id,
                "timestamp": pd.Timestamp(fill.timestamp).isoformat(),
                "symbol": fill.symbol,
                "side": str(fill.side),
                "quantity": float(fill.quantity),
                "price": float(fill.price),
                "fee": float(fill.fee),
                "fee_currency": fill.fee_currency,
                "liquidity": str(fill.liquidity),
                "subaccount": fill.subaccount,
                "reason": fill.reason,
                "leverage": float(fill.leverage),
            }
            cid = self._by_id.get(fill.order_id)  # None for a delisting's forced close
            if cid is not None:
                row = self._orders[cid]
                row.filled_quantity += float(fill.quantity)
                row.filled_notional += float(fill.quantity) * float(fill.price)
                row.fee += float(fill.fee)
                batch.orders[cid] = row
        elif kind == "funding":
            _, _, symbol, rate, mark, amount = note
            data = {
                "symbol": symbol,
                "rate": float(rate),
                "mark": float(mark),
                "amount": float(amount),
            }
        else:
            liq = note[2]
            data = {
                "symbol": liq.symbol,
                "price": float(liq.price),
                "timestamp": pd.Timestamp(liq.timestamp).isoformat(),
                "quantity": float(liq.quantity),
                "realized_pnl": float(liq.realized_pnl),
                "margin_forfeited": float(liq.margin_forfeited),
            }
        self._event(batch, kind, k, ts, sub, cid, data)

    def _order_event(self, batch: _Batch, row: _OrderRow, bar: int, ts: pd.Timestamp) -> None:
        data = {"status": row.status, "reason": row.reason, "filled_quantity": row.filled_quantity}
        self._event(batch, "order", bar, ts, row.subaccount, row.client_order_id, data)
        batch.orders[row.client_order_id] = row

    def _event(
        self,
        batch: _Batch,
        kind: str,
        bar: int,
        ts: pd.Timestamp,
        sub: str | None,
        cid: str | None,
        data: dict[str, Any],
    ) -> None:
        ns = int(pd.Timestamp(ts).as_unit("ns").value)
        batch.events.append((self._next_seq, kind, bar, ns, sub, cid, _dumps(data)))
        self._next_seq += 1

    def _clock(self) -> tuple[int, pd.Timestamp]:
        """(last bar, its open) for changes between bars; (-1, bar 0's open) before any."""
        if self._last_bar is None:
            return -1, self._market.timestamps[0]
        return self._last_bar, self._market.timestamps[self._last_bar]

    def transfer(self, source: str, target: str, amount: float, transfer_id: str) -> bool:
        """Move ``amount`` USDT of cash between subaccounts, once per ``transfer_id``.

        True when it is booked (now, or by an earlier call with this id), False when it
        was refused (unknown subaccount, not enough cash): a refusal is kept under its
        id too, so repeating a call always gives the same answer. Committed.
        """
        self._usable()
        tid = str(transfer_id)
        if not tid:
            raise ValueError("transfer_id must not be empty")
        if tid in self._transfers:
            return self._transfers[tid]
        reason = ""
        try:
            if source == target:
                raise LedgerError(f"a transfer from {source} to itself")
            self._account.subaccount(target)
            self._account.transfer(source, target, float(amount))
        except LedgerError as exc:
            reason = str(exc)
        bar, ts = self._clock()
        batch = _Batch(transfers=[(tid, source, target, float(amount), not reason, reason, bar)])
        if not reason:
            data = {"source": source, "target": target, "amount": float(amount), "id": tid}
            self._event(batch, "transfer", bar, ts, source, None, data)
        self._transfers[tid] = not reason
        self._commit(batch)
        return not reason

    def extend_market(self, market: MarketArrays, *, funding: FundingRates | None = None) -> None:
        """Go on with a longer ``market`` (live bars arrived): the same bars as before
        plus new ones at the end; ``funding`` replaces the rates if given."""
        self._usable()
        self._check_market(market)
        state = self._broker.state()
        if funding is not None:
            self._funding = funding
        broker = self._make_broker(market)
        broker.restore({**state, "next_order_id": next_order_id()})
        batch = self._extend_bars(market)
        self._market, self._broker = market, broker
        self._commit(batch)

    def events_since(self, seq: int) -> list[ExchangeEvent]:
        """Events with a seq above ``seq``, in seq order (seqs start at 1)."""
        self._usable()
        assert self._conn is not None
        rows = self._conn.execute(
            "SELECT seq, kind, bar, ns, subaccount, client_order_id, data FROM events "
            "WHERE seq > ? ORDER BY seq",
            (int(seq),),
        )
        return [
            ExchangeEvent(s, k, b, pd.Timestamp(ns, tz="UTC"), sub, cid, json.loads(d))
            for s, k, b, ns, sub, cid, d in rows
        ]

    def balances(self) -> dict[str, dict[str, Any]]:
        """Per subaccount: ``cash`` (USDT) and ``positions`` (symbol -> signed base units)."""
        return {
            name: {
                "cash": float(sub.cash),
                "positions": {s: float(p.quantity) for s, p in sub.positions.items()},
            }
            for name, sub in self._account.subaccounts.items()
        }

    def account_state(self) -> dict[str, Any]:
        """The exchange's ledger (``Account.state()``)."""
        return self._account.state()

    def close(self) -> None:
        """Release the file (everything was committed already). Idempotent."""
        self._close_quietly()

    def __enter__(self) -> PaperExchange:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- persistence ---------------------------------------------------------------
    def _usable(self) -> None:
        if self._conn is None:
            raise PaperExchangeError(f"{self.path}: the paper exchange is closed")
        if self._broken:
            raise PaperExchangeError(
                f"{self.path}: the paper exchange stopped ({self._broken}); reopen it to "
                "go on from its last committed state"
            )

    def _state_rows(self) -> list[tuple[str, str]]:
        broker = self._broker.state()
        return [
            ("account", _dumps(self._account.state())),
            (
                "broker",
                _dumps({"pending": broker["pending"], "perps_traded": broker["perps_traded"]}),
            ),
            ("held", _dumps([[bar, order_state(o)] for bar, o in self._held])),
            ("last_bar", _dumps(self._last_bar)),
        ]

    def _commit(self, batch: _Batch) -> None:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", batch.events)
            conn.executemany(
                f"INSERT OR REPLACE INTO orders ({_ORDER_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [r.row() for r in batch.orders.values()],
            )
            conn.executemany("INSERT INTO transfers VALUES (?, ?, ?, ?, ?, ?, ?)", batch.transfers)
            conn.executemany("INSERT OR REPLACE INTO bars VALUES (?, ?)", batch.bars)
            conn.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)", self._state_rows())
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the connection is given up on either way
            # Memory is ahead of the file now: stop, so nothing is reported that a
            # reopen would not find.
            self._broken = f"could not save: {exc}"
            raise PaperExchangeError(f"{self.path}: could not save: {exc}") from None
        self._n_saved_bars = max(self._n_saved_bars, batch.bars[-1][0] + 1 if batch.bars else 0)
