"""The ccxt venue's own journal: a SQLite file that a killed process reopens and goes on
from (WAL, ``synchronous=FULL``, an exclusive lock held while open, as the paper
exchange's file).

What it holds:

- ``orders``: every order the venue was asked to send, by trimtab's client order id
  (``cid``) and the id sent to the exchange (``venue_cid``, see ``client_ids``), with
  its *state*, the venue's knowledge of whether the exchange has it:

  ============  ==============================================================
  ``sending``   written before the request; the request may be in flight.
  ``unknown``   a request may have reached the exchange (timeout, network error,
                5xx, a kill); resolved by asking the exchange, never resent blindly.
  ``sent``      the exchange has it (``exchange_order_id`` known); ``status`` is
                the last status seen (open, partially_filled, filled, ...).
  ``rejected``  refused by the exchange, or by the venue before any request.
  ============  ==============================================================

  Allowed moves: sending -> sent | unknown | rejected; unknown -> sent | rejected |
  sending (a resend once the exchange has no trace, ``attempts`` + 1); sent -> sent.
  A reopened journal finds a ``sending`` order as it was left; the venue treats it as
  ``unknown``.
- ``trades``: the exchange's trade ids already turned into events (per subaccount and
  market), and ``cursors`` (the last trade id per subaccount and market, the last
  income time): polling twice books nothing twice.
- ``income``: funding payments (by the exchange's ``tranId``) already booked.
- ``events``: seq-numbered ``ExchangeEvent`` rows, as the paper exchange's.
- ``external``: orders seen at the exchange whose client order id this journal does
  not know (placed by hand or by another program): reported, never touched.
- ``settings``: per subaccount and symbol, the leverage and margin mode set.
- ``transfers``: capital moved between subaccounts through the master account, by
  trimtab's transfer id and the ``clientTranId`` sent (``sending`` before the request,
  then ``done`` or ``refused``, each answer kept so a repeat answers the same).
- ``meta``: format, creation time, the last bar run.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["Journal", "JournalError", "OrderRecord", "STATES"]

FORMAT = 1
STATES = ("sending", "unknown", "sent", "rejected")
_MOVES = {
    "sending": {"sent", "unknown", "rejected"},
    "unknown": {"sent", "rejected", "sending", "unknown"},
    "sent": {"sent"},
    "rejected": set(),
}

# Added after the first journals were written: created when missing (``_check``).
_TRANSFERS = """
CREATE TABLE IF NOT EXISTS transfers (
    transfer_id TEXT PRIMARY KEY,
    client_tran_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    asset TEXT NOT NULL,
    amount TEXT NOT NULL,
    from_type TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    exchange_id TEXT,
    note TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
"""

_SCHEMA = (
    """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE orders (
    cid TEXT PRIMARY KEY,
    venue_cid TEXT NOT NULL UNIQUE,
    subaccount TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    type TEXT NOT NULL,
    quantity REAL,
    quote_quantity REAL,
    limit_price REAL,
    reduce_only INTEGER NOT NULL,
    leverage REAL NOT NULL,
    time_in_force TEXT NOT NULL,
    reason TEXT NOT NULL,
    bar INTEGER NOT NULL,
    expires_ms INTEGER,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    sent_at_ms INTEGER,
    exchange_order_id TEXT,
    status TEXT NOT NULL,
    filled_quantity REAL NOT NULL,
    average_price REAL,
    fee REAL NOT NULL,
    note TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    seq INTEGER NOT NULL UNIQUE,
    post_only INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX orders_by_exchange_id ON orders (subaccount, symbol, exchange_order_id);
CREATE TABLE trades (
    subaccount TEXT NOT NULL,
    market TEXT NOT NULL,
    trade_id TEXT NOT NULL,
    exchange_order_id TEXT NOT NULL,
    event_seq INTEGER,
    PRIMARY KEY (subaccount, market, trade_id)
);
CREATE TABLE cursors (
    subaccount TEXT NOT NULL,
    key TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (subaccount, key)
);
CREATE TABLE income (
    subaccount TEXT NOT NULL,
    income_id TEXT NOT NULL,
    event_seq INTEGER,
    PRIMARY KEY (subaccount, income_id)
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
CREATE TABLE external (
    subaccount TEXT NOT NULL,
    market TEXT NOT NULL,
    exchange_order_id TEXT NOT NULL,
    client_order_id TEXT,
    data TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (subaccount, market, exchange_order_id)
);
CREATE TABLE settings (
    subaccount TEXT NOT NULL,
    symbol TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (subaccount, symbol, key)
);
"""
    + _TRANSFERS
)


_TABLES = {"meta", "orders", "trades", "cursors", "income", "events", "external", "settings"}


class JournalError(Exception):
    """The journal file cannot be used as asked, or a state move is not allowed."""


@dataclass
class OrderRecord:
    """One order of the journal (see the module docstring for ``state``).

    ``quantity`` base units or ``quote_quantity`` USDT as asked; ``status`` the
    ``ExchangeOrder`` status last seen ("" before the exchange answered);
    ``filled_quantity`` base units and ``average_price`` USDT per unit as the exchange
    last reported; ``fee`` the sum of the booked fills' fees in their currency; ``note``
    why it was rejected or expired; times in ms since the epoch (the venue's clock).
    """

    cid: str
    venue_cid: str
    subaccount: str
    symbol: str
    side: str
    type: str
    quantity: float | None
    quote_quantity: float | None
    limit_price: float | None
    reduce_only: bool
    leverage: float
    time_in_force: str
    reason: str
    bar: int
    expires_ms: int | None = None  # a gtd order's expiry
    state: str = "sending"
    attempts: int = 0
    sent_at_ms: int | None = None
    exchange_order_id: str | None = None
    status: str = ""
    filled_quantity: float = 0.0
    average_price: float | None = None
    fee: float = 0.0
    note: str = ""
    created_ms: int = 0
    seq: int = 0  # the order in which the venue took them
    post_only: bool = False  # a limit the venue must reject rather than fill as taker

    def row(self) -> tuple[Any, ...]:
        return tuple(
            int(v) if isinstance(v, bool) else v for v in (getattr(self, f) for f in _FIELDS)
        )


_FIELDS = tuple(f.name for f in fields(OrderRecord))
_COLUMNS = ", ".join(_FIELDS)


def _record(row: tuple[Any, ...]) -> OrderRecord:
    rec = OrderRecord(*row)
    rec.reduce_only = bool(rec.reduce_only)
    rec.post_only = bool(rec.post_only)
    return rec


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Journal:
    """The venue's SQLite journal at ``path`` (created with its folders if missing).

    Every public write runs in a transaction of its own unless called inside
    ``transaction()``, which commits them together (or none, on an exception).
    """

    def __init__(self, path: str | Path, *, now_ms: int) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = self._connect()
            tables = {
                r[0]
                for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if not tables:
                self._create(now_ms)
            elif not _TABLES <= tables:
                raise JournalError(
                    f"{self.path}: not a ccxt venue journal (it has tables "
                    f"{', '.join(sorted(tables))})"
                )
            else:
                self._check()
        except sqlite3.DatabaseError as exc:
            self.close()
            text = str(exc)
            if "locked" in text:
                why = "in use by another venue (the file is locked)"
            elif "not a database" in text:
                why = "not a SQLite database"
            else:
                why = f"SQLite error: {text}"
            raise JournalError(f"{self.path}: {why}") from None
        except OSError as exc:
            self.close()
            raise JournalError(f"{self.path}: cannot open: {exc.strerror or exc}") from None
        except BaseException:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=0.5)
        try:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(f"{self.path}: cannot use WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now, kept until close
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _create(self, now_ms: int) -> None:
        conn = self._c
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("format", str(FORMAT)), ("created_ms", str(int(now_ms))), ("last_bar", "null")],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check(self) -> None:
        check = self._c.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise JournalError(f"{self.path}: the journal is corrupt ({check})")
        fmt = self.meta("format")
        if fmt != str(FORMAT):
            raise JournalError(f"{self.path}: journal format {fmt}, this trimtab reads {FORMAT}")
        columns = {row[1] for row in self._c.execute("PRAGMA table_info(orders)")}
        if "post_only" not in columns:  # a journal written before post-only orders
            self._c.execute("ALTER TABLE orders ADD COLUMN post_only INTEGER NOT NULL DEFAULT 0")
        self._c.execute(_TRANSFERS)  # a journal written before transfers
        columns = {row[1] for row in self._c.execute("PRAGMA table_info(transfers)")}
        if "from_type" not in columns:  # written before the futures wallet was a source
            self._c.execute(
                "ALTER TABLE transfers ADD COLUMN from_type TEXT NOT NULL DEFAULT 'SPOT'"
            )

    @property
    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"{self.path}: the journal is closed")
        return self._conn

    def close(self) -> None:
        """Release the file (everything is committed). Idempotent."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit every write inside at once; roll all back on an exception."""
        conn = self._c
        if conn.in_transaction:  # nested: the outer one commits
            yield
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self.transaction():
            return self._c.execute(sql, args)

    # --- meta ----------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self._c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def created_ms(self) -> int:
        return int(self.meta("created_ms") or 0)

    @property
    def last_bar(self) -> int | None:
        value = json.loads(self.meta("last_bar") or "null")
        return None if value is None else int(value)

    def set_last_bar(self, bar: int) -> None:
        self.set_meta("last_bar", _dumps(int(bar)))

    # --- orders --------------------------------------------------------------------
    def add_order(self, rec: OrderRecord) -> OrderRecord:
        """Insert a new order (state ``sending`` or ``rejected``); its seq is set here."""
        if rec.state not in ("sending", "rejected"):
            raise JournalError(f"order {rec.cid}: a new order starts as sending or rejected")
        with self.transaction():
            top = self._c.execute("SELECT MAX(seq) FROM orders").fetchone()[0]
            rec.seq = 1 if top is None else int(top) + 1
            self._c.execute(
                f"INSERT INTO orders ({_COLUMNS}) VALUES ({', '.join('?' * len(_FIELDS))})",
                rec.row(),
            )
        return rec

    def update_order(self, rec: OrderRecord, *, state: str | None = None) -> OrderRecord:
        """Write ``rec`` back, moving it to ``state`` if given (checked against the
        allowed moves of the module docstring)."""
        old = self.order(rec.cid)
        if old is None:
            raise JournalError(f"order {rec.cid} is not in the journal")
        new_state = rec.state if state is None else state
        if new_state != old.state and new_state not in _MOVES[old.state]:
            raise JournalError(f"order {rec.cid}: cannot move from {old.state} to {new_state}")
        rec.state = new_state
        sets = ", ".join(f"{f} = ?" for f in _FIELDS if f != "cid")
        values = tuple(v for f, v in zip(_FIELDS, rec.row(), strict=True) if f != "cid")
        self._write(f"UPDATE orders SET {sets} WHERE cid = ?", (*values, rec.cid))
        return rec

    def order(self, cid: str) -> OrderRecord | None:
        row = self._c.execute(f"SELECT {_COLUMNS} FROM orders WHERE cid = ?", (cid,)).fetchone()
        return None if row is None else _record(row)

    def order_by_venue_cid(self, venue_cid: str) -> OrderRecord | None:
        row = self._c.execute(
            f"SELECT {_COLUMNS} FROM orders WHERE venue_cid = ?", (venue_cid,)
        ).fetchone()
        return None if row is None else _record(row)

    def order_by_exchange_id(
        self, subaccount: str, symbol: str, exchange_order_id: str
    ) -> OrderRecord | None:
        row = self._c.execute(
            f"SELECT {_COLUMNS} FROM orders WHERE subaccount = ? AND symbol = ? AND "
            "exchange_order_id = ?",
            (subaccount, symbol, str(exchange_order_id)),
        ).fetchone()
        return None if row is None else _record(row)

    def orders(
        self, subaccount: str | None = None, *, states: tuple[str, ...] = STATES
    ) -> list[OrderRecord]:
        """Orders in the order taken, optionally of one subaccount and some states."""
        marks = ", ".join("?" * len(states))
        sql = f"SELECT {_COLUMNS} FROM orders WHERE state IN ({marks})"
        args: tuple[Any, ...] = tuple(states)
        if subaccount is not None:
            sql += " AND subaccount = ?"
            args += (subaccount,)
        return [_record(r) for r in self._c.execute(sql + " ORDER BY seq", args)]

    # --- events --------------------------------------------------------------------
    def add_event(
        self,
        kind: str,
        bar: int,
        ns: int,
        subaccount: str | None,
        cid: str | None,
        data: dict[str, Any],
    ) -> int:
        """Append an event; returns its seq (from 1)."""
        cur = self._write(
            "INSERT INTO events (kind, bar, ns, subaccount, client_order_id, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (kind, int(bar), int(ns), subaccount, cid, _dumps(data)),
        )
        return int(cur.lastrowid or 0)

    def events_since(self, seq: int) -> list[tuple[Any, ...]]:
        return list(
            self._c.execute(
                "SELECT seq, kind, bar, ns, subaccount, client_order_id, data FROM events "
                "WHERE seq > ? ORDER BY seq",
                (int(seq),),
            )
        )

    # --- trades, income, cursors ---------------------------------------------------
    def trade_seen(self, subaccount: str, market: str, trade_id: str) -> bool:
        row = self._c.execute(
            "SELECT 1 FROM trades WHERE subaccount = ? AND market = ? AND trade_id = ?",
            (subaccount, market, str(trade_id)),
        ).fetchone()
        return row is not None

    def add_trade(
        self, subaccount: str, market: str, trade_id: str, exchange_order_id: str, seq: int | None
    ) -> None:
        self._write(
            "INSERT INTO trades VALUES (?, ?, ?, ?, ?)",
            (subaccount, market, str(trade_id), str(exchange_order_id), seq),
        )

    def income_seen(self, subaccount: str, income_id: str) -> bool:
        row = self._c.execute(
            "SELECT 1 FROM income WHERE subaccount = ? AND income_id = ?",
            (subaccount, str(income_id)),
        ).fetchone()
        return row is not None

    def add_income(self, subaccount: str, income_id: str, seq: int | None) -> None:
        self._write("INSERT INTO income VALUES (?, ?, ?)", (subaccount, str(income_id), seq))

    def cursor(self, subaccount: str, key: str) -> int | None:
        row = self._c.execute(
            "SELECT value FROM cursors WHERE subaccount = ? AND key = ?", (subaccount, key)
        ).fetchone()
        return None if row is None else int(row[0])

    def set_cursor(self, subaccount: str, key: str, value: int) -> None:
        self._write(
            "INSERT OR REPLACE INTO cursors VALUES (?, ?, ?)", (subaccount, key, int(value))
        )

    # --- external orders, settings -------------------------------------------------
    def note_external(
        self,
        subaccount: str,
        market: str,
        exchange_order_id: str,
        client_order_id: str | None,
        data: dict[str, Any],
        now_ms: int,
    ) -> bool:
        """Record a foreign order (latest data kept); True if it was not known before."""
        with self.transaction():
            known = self._c.execute(
                "SELECT 1 FROM external WHERE subaccount = ? AND market = ? AND "
                "exchange_order_id = ?",
                (subaccount, market, str(exchange_order_id)),
            ).fetchone()
            if known:
                self._c.execute(
                    "UPDATE external SET data = ? WHERE subaccount = ? AND market = ? AND "
                    "exchange_order_id = ?",
                    (_dumps(data), subaccount, market, str(exchange_order_id)),
                )
            else:
                self._c.execute(
                    "INSERT INTO external VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        subaccount,
                        market,
                        str(exchange_order_id),
                        client_order_id,
                        _dumps(data),
                        now_ms,
                    ),
                )
        return not known

    def externals(self, subaccount: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT subaccount, market, exchange_order_id, client_order_id, data, first_seen_ms FROM external"
        args: tuple[Any, ...] = ()
        if subaccount is not None:
            sql += " WHERE subaccount = ?"
            args = (subaccount,)
        return [
            {
                "subaccount": s,
                "market": m,
                "exchange_order_id": e,
                "client_order_id": c,
                "data": json.loads(d),
                "first_seen_ms": t,
            }
            for s, m, e, c, d, t in self._c.execute(sql + " ORDER BY first_seen_ms", args)
        ]

    def setting(self, subaccount: str, symbol: str, key: str) -> str | None:
        row = self._c.execute(
            "SELECT value FROM settings WHERE subaccount = ? AND symbol = ? AND key = ?",
            (subaccount, symbol, key),
        ).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, subaccount: str, symbol: str, key: str, value: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO settings VALUES (?, ?, ?, ?)", (subaccount, symbol, key, value)
        )

    # --- transfers -----------------------------------------------------------------
    def transfer(self, transfer_id: str) -> dict[str, Any] | None:
        """The journal's row of ``transfer_id`` (amount as the decimal text sent)."""
        cur = self._c.execute("SELECT * FROM transfers WHERE transfer_id = ?", (transfer_id,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def add_transfer(
        self,
        transfer_id: str,
        client_tran_id: str,
        source: str,
        target: str,
        asset: str,
        amount: str,
        now_ms: int,
        from_type: str = "SPOT",
    ) -> None:
        """Write a transfer as ``sending`` (before its first request); ``from_type`` is
        the source's wallet (``SPOT`` or ``USDT_FUTURE``)."""
        self._write(
            "INSERT INTO transfers (transfer_id, client_tran_id, source, target, asset, "
            "amount, from_type, state, attempts, exchange_id, note, created_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'sending', 0, NULL, '', ?)",
            (transfer_id, client_tran_id, source, target, asset, amount, from_type, int(now_ms)),
        )

    def update_transfer(
        self,
        transfer_id: str,
        *,
        state: str,
        attempts: int | None = None,
        exchange_id: str | None = None,
        note: str = "",
    ) -> None:
        """Move a transfer to ``state`` (sending, done or refused)."""
        if state not in ("sending", "done", "refused"):
            raise JournalError(f"transfer {transfer_id}: no state {state!r}")
        row = self.transfer(transfer_id)
        if row is None:
            raise JournalError(f"transfer {transfer_id}: not in the journal")
        if row["state"] != "sending":
            raise JournalError(f"transfer {transfer_id} is {row['state']}: it cannot change")
        self._write(
            "UPDATE transfers SET state = ?, attempts = ?, exchange_id = ?, note = ? "
            "WHERE transfer_id = ?",
            (
                state,
                row["attempts"] if attempts is None else int(attempts),
                exchange_id,
                note,
                transfer_id,
            ),
        )
