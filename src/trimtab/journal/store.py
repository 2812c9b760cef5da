"""The store: runs, decisions, orders, fills, balances, transfers and component state
in a database (SQLAlchemy 2), so that a run killed at any instant resumes where it was;
for the runner also proposals, human commands, alerts with their outbox, reviews and a
heartbeat.

SQLite by default (a file, in WAL mode: readers never block the writer), PostgreSQL when
a team shares state. ``Store.open(url)`` creates the schema or upgrades it to the newest
migration (Alembic; the version lives in ``trimtab_schema_version``)::

    store = Store.open("sqlite:///runs/x.db")    # or a plain path: "runs/x.db"
    # store = Store.open("postgresql+psycopg://user:password@host:5432/db")
    info = store.start_run("demo-1", kind="backtest", spec={...})   # RunInfo
    store.rewind("demo-1")            # drop what a killed process wrote after its checkpoint
    cp = store.checkpoint("demo-1")   # (bar, timestamp) of the last completed bar, or None
    state = store.load_state("demo-1", "account")                   # dict or None
    with store.transaction("demo-1", bar=i, timestamp=ts) as tx:    # one atomic unit
        tx.add_decisions(records, subaccount="main")
        ids = tx.add_orders(orders)         # client order ids, written before sending
        tx.update_order_status(ids[0], "filled", filled_quantity=0.5)
        tx.add_fills(fills)                 # Fill objects (matched to orders by id) or dicts
        tx.add_balances([{"subaccount": "main", "equity": eq, "cash": cash}])
        tx.add_transfers([...]); tx.add_breaker_changes([...]); tx.add_overrides([...])
        tx.save_state("account", account.state())
        tx.set_checkpoint()                 # this bar is complete
    store.decisions("demo-1")  # also orders, fills, balances, transfers, breaker_changes,
                               # overrides: lists of dicts in the order written
    store.order(client_order_id)  # one order, or None
    store.finish_run("demo-1", summary={...})   # status "finished" (or status="failed")
    store.run("demo-1"); store.runs(); store.delete_run("demo-1"); store.load_states(run)

The runner's records (``trimtab run``; the CLI writes commands from another process)::

    with store.transaction("paper", bar=i, timestamp=ts) as tx:
        pid = tx.add_proposal({"subaccount": "core", "decision_id": 12, "timestamp": ts,
                               "expires_at": ts + pd.Timedelta("4h"), "legs": [...],
                               "reasons": [...], "source": "approve-mode", "summary": "..."})
        tx.update_proposal(pid, status="approved", legs=[{"leg": 0, "status": "approved"}],
                           decided_by="ana", decided_at=now, note="ok")
        tx.add_proposal({"kind": "transfer", "subaccount": "core", "timestamp": ts,
                         "transfer": {"source": "core", "target": "trend", "amount": 500.0,
                                      "transfer_id": "paper:t3:0"}, ...})   # no legs
        tx.update_transfer("paper:t3:0", "approved", expect=("proposed",))
        tx.finish_command(command_id, "applied", "paused core")   # or "refused"
        aid = tx.add_alert({"rule": "drawdown", "key": "drawdown:core", "severity": "warning",
                            "title": "...", "message": "...", "numbers": {...}}, ["ops"])
        tx.add_review("account", ts, {...})      # upsert by (run, subaccount, bar)
        tx.save_state("status", {...})           # what ``trimtab status`` shows
    store.proposals("paper", status="pending"); store.proposal("paper", pid)
    cid = store.add_command("paper", "pause", subaccount="core", actor="ana", reason="news")
    store.pending_commands("paper"); store.commands("paper", status="applied")
    store.last_alert("paper", "drawdown:core"); store.alerts("paper"); store.outbox("paper")
    for d in store.due_deliveries(pd.Timestamp.now(tz="UTC")):     # every run's
        store.mark_delivery(d["delivery_id"], ok=False, error="timeout", next_attempt_at=later)
    store.latest_reviews("paper")            # subaccount -> newest review
    store.save_heartbeat("paper", {"pid": 123, "status": "running"}); store.heartbeat("paper")

Resuming a run (what a backtest loop does at start): ``start_run`` (same spec, or a
StoreError), ``rewind``, ``checkpoint``; if there is one, restore every component from
``load_state`` and continue at bar ``checkpoint + 1``, writing each bar in one
``transaction`` that ends with ``set_checkpoint``.

Conventions:

* Everything written inside one ``transaction`` commits together or not at all: a bar's
  records, every component's state and the checkpoint belong in the same one.
* Rows written in a transaction carry its ``bar``. ``rewind(run_id)`` deletes the rows of
  bars after the checkpoint (or all of them without one), so a resumed run can write
  those bars again without duplicates. Decisions (run, subaccount, decision id), balances
  (run, subaccount, bar), component state (run, component) and the checkpoint are also
  upserts by key; orders are insert-or-keep by client order id (an order that exists may
  have been sent: a live runner asks the exchange, it never sends it again), which is
  why a live runner rewinds with ``keep_orders=True``.
* Client order ids are deterministic: ``client_order_id(run, subaccount, decision, leg)``
  (at most 36 characters of ``[A-Za-z0-9_-]``, Binance's ``newClientOrderId`` rule).
* Money, quantities and prices are exact decimals (``trimtab.journal.models``); they
  read back as ``Decimal`` (``floats=True`` gives floats: a float written comes back
  bit-exact). Timestamps are UTC ``pd.Timestamp``; ``created_at``/``updated_at`` are the
  wall clock, ``timestamp`` is the run's clock.
* Rewinding removes proposals (with their legs) and reviews like the other bar rows;
  commands, alerts, outbox rows and the heartbeat are never removed by a rewind (a human
  act is never lost, an alert sent stays sent); ``delete_run`` removes all of them.
  Proposal, command, alert and delivery ids come from the database (never reused, safe
  across processes), not from the cached sequence numbers below.
* Errors are ``StoreError`` naming the run or key, with any password in a URL masked.
* One writer of bars per run at a time (sequence numbers are cached per store);
  SQLite's busy timeout lets other processes read meanwhile and write rows of their own
  in short transactions (``add_command``, ``save_heartbeat``, ``mark_delivery``). On
  SQLite a bar's transaction takes a few ms (``bench/bench_store.py``); on PostgreSQL
  each commit waits for the server's fsync.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from trimtab import __version__
from trimtab.journal import models as m
from trimtab.journal.models import dumps, to_utc

#: Order statuses, as exchanges report them (``new``: written, not yet sent).
ORDER_STATUSES = (
    "new",
    "sent",
    "partially_filled",
    "filled",
    "cancelled",
    "expired",
    "rejected",
)
RUN_STATUSES = ("running", "finished", "failed")
#: A proposal's (and a leg's) statuses: ``approved`` = all or some legs approved, not yet
#: sent (a transfer: not yet made); ``refused`` = approved legs (or a transfer) the guard
#: refused at its re-check; ``made`` = an approved transfer made on the exchange.
PROPOSAL_STATUSES = ("pending", "approved", "sent", "rejected", "expired", "refused", "made")
PROPOSAL_SOURCES = ("approve-mode", "auto-envelope")
#: What a proposal asks for: an order plan (its legs) or one transfer between subaccounts.
PROPOSAL_KINDS = ("orders", "transfer")
#: The keys of a transfer proposal's ``transfer`` document that it must have.
_TRANSFER_KEYS = ("source", "target", "amount", "transfer_id")
#: Human commands, and the ``args`` each needs (others may be given too).
COMMAND_KINDS = (
    "pause",
    "resume",
    "close",
    "limits",
    "mode",
    "approve",
    "reject",
    "adopt",
    "reconcile",
    "accept",
)
COMMAND_STATUSES = ("pending", "applied", "refused")
ALERT_SEVERITIES = ("info", "warning", "critical")
DELIVERY_STATUSES = ("pending", "delivered", "failed")
#: The longest client order id Binance accepts (``newClientOrderId``).
MAX_CLIENT_ORDER_ID = 36

_MIGRATIONS = Path(__file__).with_name("migrations")
# One process upgrading a PostgreSQL schema at a time (an advisory lock's key).
_PG_MIGRATION_LOCK = 7_447_826_001
_SAFE = re.compile(r"[^A-Za-z0-9_]")
# A URL in a delivery error (apprise URLs hold tokens): kept as its scheme only.
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://\S*")
_MAX_ERROR = 2000
_LEG_NUMBERS = ("quantity", "quote_quantity", "planned_price", "band_low", "band_high", "notional")
_LEG_FIELDS = ("leg", "symbol", "side", *_LEG_NUMBERS, "reason", "status", "client_order_id")


class StoreError(Exception):
    """A store that cannot be opened or written, or a request it cannot serve; the
    message names the store (password masked), the run or the key."""


def mask_url(url: str | URL) -> str:
    """``url`` with its password replaced by ``***`` (safe to print)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: hide whatever follows a "user:" before an "@"
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", str(url))


def client_order_id(run_id: str, subaccount: str, decision_id: int | None, leg: int) -> str:
    """The deterministic client order id of leg ``leg`` of decision ``decision_id``.

    ``tt-<8 hex of the run id>-<subaccount>-<decision>-<leg>``, at most 36 characters of
    ``[A-Za-z0-9_-]``. A subaccount name that is not plain ``[A-Za-z0-9_]`` or too long is
    shortened and given 4 hex of its own hash, so distinct names stay distinct. An order
    without a decision has decision ``x``.
    """
    run = hashlib.blake2b(run_id.encode(), digest_size=4).hexdigest()
    decision = "x" if decision_id is None else str(int(decision_id))
    tail = f"-{decision}-{int(leg)}"
    room = MAX_CLIENT_ORDER_ID - len("tt-") - len(run) - 1 - len(tail)
    sub = subaccount
    if _SAFE.search(sub) or len(sub) > room:
        digest = hashlib.blake2b(subaccount.encode(), digest_size=2).hexdigest()
        sub = f"{_SAFE.sub('', subaccount)[: max(room - 5, 0)]}_{digest}"
    out = f"tt-{run}-{sub}{tail}"
    if len(out) > MAX_CLIENT_ORDER_ID:  # huge decision numbers: all of it hashed
        key = f"{run_id}\0{subaccount}\0{decision}\0{leg}".encode()
        out = "tt-" + hashlib.blake2b(key, digest_size=16).hexdigest()[:33]
    return out


def spec_digest(spec: Mapping[str, Any]) -> str:
    """A digest of a run's spec that ignores key order."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=m._json_default)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class RunInfo:
    """A run as the store knows it. ``created`` is True when ``start_run`` made it now;
    ``checkpoint`` is (bar, timestamp) of its last completed bar, or None."""

    run_id: str
    kind: str
    spec: dict[str, Any]
    status: str
    created_at: pd.Timestamp
    updated_at: pd.Timestamp
    trimtab_version: str
    summary: dict[str, Any] | None
    checkpoint: tuple[int, pd.Timestamp | None] | None
    created: bool = False


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _normalise_url(url: str | Path) -> URL:
    text = str(url)
    if "://" not in text:  # a plain path is a SQLite file
        return URL.create("sqlite", database=text)
    parsed = make_url(text)
    if parsed.drivername in ("postgresql", "postgres"):
        # SQLAlchemy's default PostgreSQL driver is psycopg2; trimtab ships psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL loses no committed transaction when a process dies (only on
        # power loss), and saves an fsync per commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


class Store:
    """A run database. Open it with ``Store.open(url)``; see the module docstring."""

    def __init__(self, engine: Engine, url: URL) -> None:
        self._engine = engine
        self._url = url
        self._insert = _dialect_insert(engine.dialect.name)
        # Per run: the broker's order id -> client order id, so fills find their order.
        self._order_refs: dict[str, dict[int, str]] = {}
        # Per run and table: the next ``seq`` (one writer per run; re-read after a rewind).
        self._seqs: dict[tuple[str, str], int] = {}
        self._known_runs: set[str] = set()
        self._statements: dict[tuple[Any, ...], Any] = {}

    # --- opening ---------------------------------------------------------------------
    @classmethod
    def open(cls, url: str | Path, *, upgrade: bool = True) -> Store:
        """Connect to ``url`` (SQLite path or URL, PostgreSQL URL) and bring its schema
        to the newest migration. A SQLite file's folder is created when missing."""
        try:
            parsed = _normalise_url(url)
        except ArgumentError as exc:
            raise StoreError(f"not a database URL: {mask_url(str(url))} ({exc})") from None
        shown = mask_url(parsed)
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                folder = Path(database).expanduser().parent
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create the folder of {shown}: {exc}") from None
        elif parsed.get_backend_name() == "postgresql":
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"connect_timeout": 10}
        else:
            raise StoreError(
                f"unsupported database {shown}: use sqlite:///PATH or "
                "postgresql+psycopg://USER:PASSWORD@HOST/DB"
            )
        try:
            engine = sa.create_engine(parsed, **kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise StoreError(f"cannot open {shown}: {exc}") from None
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine, parsed)
        try:
            if upgrade:
                store.upgrade()
            else:
                with engine.connect():
                    pass
        except SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(f"cannot open {shown}: {_reason(exc, parsed)}") from None
        return store

    @property
    def url(self) -> str:
        """The store's URL with the password masked."""
        return mask_url(self._url)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @property
    def engine(self) -> Engine:
        return self._engine

    def upgrade(self) -> None:
        """Apply every migration not applied yet (Alembic, to ``head``)."""
        from alembic import command
        from alembic.config import Config

        with self._migration_lock():
            with self._engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
                cfg = Config()
                cfg.set_main_option("script_location", str(_MIGRATIONS))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """One process migrating a SQLite file at a time (a first `trimtab run` and a
        `trimtab status` may open a new store together; SQLite runs each CREATE in its
        own commit, so the second would find half a schema): an exclusive lock on a file
        beside it. PostgreSQL takes an advisory lock in the transaction instead."""
        database = self._url.database or ""
        if self.dialect != "sqlite" or not database or database.startswith(("file:", ":memory:")):
            yield
            return
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (one process at a time, as before)
            yield
            return
        lock = Path(database).expanduser().with_name(Path(database).name + ".migrate-lock")
        with open(lock, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def schema_revision(self) -> str | None:
        """The migration the schema is at (None before the first)."""
        from alembic.migration import MigrationContext

        with self._engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": m.VERSION_TABLE})
            return ctx.get_current_revision()

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # --- runs ------------------------------------------------------------------------
    def start_run(self, run_id: str, kind: str, spec: Mapping[str, Any]) -> RunInfo:
        """Create run ``run_id``, or return it if it exists with the same ``spec``.

        Raises StoreError when the run exists with a different spec (another run under
        the same name), naming the run and the top-level keys that differ.
        """
        if not isinstance(run_id, str) or not run_id.strip() or len(run_id) > 200:
            raise StoreError(f"a run id is a non-empty name of at most 200 characters: {run_id!r}")
        spec = dict(spec)
        digest = spec_digest(spec)
        now = _now()
        with self._write() as conn:
            row = conn.execute(sa.select(m.runs).where(m.runs.c.run_id == run_id)).first()
            if row is None:
                conn.execute(
                    sa.insert(m.runs),
                    {
                        "run_id": run_id,
                        "kind": kind,
                        "spec": spec,
                        "spec_digest": digest,
                        "status": "running",
                        "created_at": now,
                        "updated_at": now,
                        "trimtab_version": __version__,
                        "summary": None,
                    },
                )
                created = True
            else:
                if row.spec_digest != digest or row.kind != kind:
                    differ = sorted(
                        k
                        for k in set(row.spec) | set(spec)
                        if dumps(row.spec.get(k)) != dumps(spec.get(k))
                    )
                    what = f"kind {row.kind!r}" if row.kind != kind else "spec"
                    raise StoreError(
                        f"run {run_id!r} in {self.url} was started with another {what}"
                        + (f" (differs in: {', '.join(differ)})" if differ else "")
                        + "; choose another run id, or delete the run to start it again"
                    )
                if row.status != "running":
                    conn.execute(
                        sa.update(m.runs)
                        .where(m.runs.c.run_id == run_id)
                        .values(status="running", updated_at=now)
                    )
                created = False
        info = self.run(run_id)
        assert info is not None
        return RunInfo(**{**info.__dict__, "created": created})

    def run(self, run_id: str) -> RunInfo | None:
        """The run ``run_id``, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(m.runs).where(m.runs.c.run_id == run_id)).first()
            if row is None:
                return None
            cp = self._checkpoint(conn, run_id)
        return _run_info(row, cp)

    def runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(m.runs).order_by(m.runs.c.created_at)).all()
            cps = {
                r.run_id: (int(r.bar), r.timestamp) for r in conn.execute(sa.select(m.checkpoints))
            }
        return [_run_info(r, cps.get(r.run_id)) for r in rows]

    def finish_run(
        self, run_id: str, summary: Mapping[str, Any] | None = None, status: str = "finished"
    ) -> None:
        """Mark the run ``finished`` (or ``failed``) with an optional JSON summary."""
        if status not in RUN_STATUSES:
            raise StoreError(f"run status must be one of {', '.join(RUN_STATUSES)}: {status!r}")
        with self._write() as conn:
            done = conn.execute(
                sa.update(m.runs)
                .where(m.runs.c.run_id == run_id)
                .values(
                    status=status,
                    summary=dict(summary) if summary is not None else None,
                    updated_at=_now(),
                )
            )
            if done.rowcount == 0:
                raise StoreError(f"no run {run_id!r} in {self.url}")

    def delete_run(self, run_id: str) -> bool:
        """Delete the run and everything written for it; False if there was none."""
        with self._write() as conn:
            for table in (*m.BAR_TABLES, *m.RUN_TABLES, m.component_state, m.checkpoints):
                conn.execute(sa.delete(table).where(table.c.run_id == run_id))
            gone = conn.execute(sa.delete(m.runs).where(m.runs.c.run_id == run_id)).rowcount
        self._forget(run_id)
        return bool(gone)

    # --- resuming --------------------------------------------------------------------
    def checkpoint(self, run_id: str) -> tuple[int, pd.Timestamp | None] | None:
        """(bar, timestamp) of the run's last completed bar, or None."""
        with self._engine.connect() as conn:
            return self._checkpoint(conn, run_id)

    def rewind(
        self, run_id: str, *, keep_orders: bool = False
    ) -> tuple[int, pd.Timestamp | None] | None:
        """Delete what was written for bars after the checkpoint (every bar's rows if
        there is none); returns the checkpoint. ``keep_orders``: orders stay (live: they
        may have been sent; reconcile them with the exchange instead). Proposals and
        reviews go like other bar rows; commands, alerts, the outbox and the heartbeat
        stay (a human act, an alert sent, are never undone)."""
        with self._write() as conn:
            self._require_run(conn, run_id)
            cp = self._checkpoint(conn, run_id)
            for table in m.BAR_TABLES:
                if keep_orders and table is m.orders:
                    continue
                after = table.c.bar > cp[0] if cp is not None else table.c.bar.is_not(None)
                conn.execute(sa.delete(table).where(table.c.run_id == run_id, after))
            cs = m.component_state
            if cp is not None:
                conn.execute(sa.delete(cs).where(cs.c.run_id == run_id, cs.c.bar > cp[0]))
            else:
                conn.execute(sa.delete(cs).where(cs.c.run_id == run_id))
        self._forget(run_id)
        return cp

    def load_state(self, run_id: str, component: str) -> dict[str, Any] | None:
        """The state ``component`` saved last in the run, or None."""
        cs = m.component_state
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(cs.c.state).where(cs.c.run_id == run_id, cs.c.component == component)
            ).first()
        return None if row is None else row.state

    def load_states(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Every component's saved state in the run, by component name."""
        cs = m.component_state
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(cs.c.component, cs.c.state).where(cs.c.run_id == run_id)
            ).all()
        return {r.component: r.state for r in rows}

    # --- writing ---------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(
        self, run_id: str, bar: int | None = None, timestamp: Any = None
    ) -> Iterator[Transaction]:
        """One atomic unit of writes for run ``run_id`` at ``bar`` (an index on the run's
        clock; None for rows that belong to no bar) and ``timestamp`` (the run's clock,
        UTC; the default for rows that give none)."""
        ts = to_utc(timestamp) if timestamp is not None else None
        with self._write() as conn:
            self._require_run(conn, run_id)
            tx = Transaction(self, conn, run_id, None if bar is None else int(bar), ts)
            yield tx

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self._engine.begin() as conn:
                yield conn
        except IntegrityError as exc:
            raise StoreError(f"{self.url}: {_reason(exc, self._url)}") from None
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write to {self.url}: {_reason(exc, self._url)}") from None

    def _require_run(self, conn: Connection, run_id: str) -> None:
        if run_id in self._known_runs:
            return
        found = conn.execute(sa.select(m.runs.c.run_id).where(m.runs.c.run_id == run_id)).first()
        if found is None:
            raise StoreError(f"no run {run_id!r} in {self.url}: call start_run first")
        self._known_runs.add(run_id)

    def _forget(self, run_id: str) -> None:
        """Drop what is cached about the run (after a rewind or a delete)."""
        self._order_refs.pop(run_id, None)
        self._known_runs.discard(run_id)
        for key in [k for k in self._seqs if k[0] == run_id]:
            del self._seqs[key]

    @staticmethod
    def _checkpoint(conn: Connection, run_id: str) -> tuple[int, pd.Timestamp | None] | None:
        cp = m.checkpoints
        row = conn.execute(sa.select(cp.c.bar, cp.c.timestamp).where(cp.c.run_id == run_id)).first()
        return None if row is None else (int(row.bar), row.timestamp)

    # --- reading ---------------------------------------------------------------------
    def decisions(self, run_id: str, subaccount: str | None = None) -> list[dict[str, Any]]:
        """The decision records as written (the engine's dicts), in the order written."""
        d = m.decisions
        query = sa.select(d.c.record).where(d.c.run_id == run_id)
        if subaccount is not None:
            query = query.where(d.c.subaccount == subaccount)
        with self._engine.connect() as conn:
            return [r.record for r in conn.execute(query.order_by(d.c.seq))]

    def orders(self, run_id: str, *, floats: bool = False) -> list[dict[str, Any]]:
        """Orders in the order written; money as Decimal (``floats``: as float)."""
        return self._rows(m.orders, run_id, m.orders.c.seq, floats)

    def order(self, client_order_id: str, *, floats: bool = False) -> dict[str, Any] | None:
        """One order by its client order id, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(m.orders).where(m.orders.c.client_order_id == client_order_id)
            ).first()
        return None if row is None else _plain(row._asdict(), floats)

    def fills(self, run_id: str, *, floats: bool = False) -> list[dict[str, Any]]:
        return self._rows(m.fills, run_id, m.fills.c.fill_id, floats)

    def balances(
        self, run_id: str, subaccount: str | None = None, *, floats: bool = False
    ) -> list[dict[str, Any]]:
        """Balance snapshots by bar (then subaccount)."""
        b = m.balances
        where = [b.c.subaccount == subaccount] if subaccount is not None else []
        return self._rows(b, run_id, (b.c.bar, b.c.subaccount), floats, where)

    def transfers(self, run_id: str, *, floats: bool = False) -> list[dict[str, Any]]:
        return self._rows(m.transfers, run_id, m.transfers.c.transfer_id, floats)

    def breaker_changes(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows(m.breaker_changes, run_id, m.breaker_changes.c.change_id, False)

    def overrides(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows(m.overrides, run_id, m.overrides.c.override_id, False)

    # --- the runner: proposals -------------------------------------------------------
    def proposals(
        self,
        run_id: str,
        status: str | Sequence[str] | None = None,
        *,
        floats: bool = False,
    ) -> list[dict[str, Any]]:
        """The run's proposals, oldest first, each with its ``legs`` (leg order);
        ``status``: only those with that status (or any of a tuple of them). Money and
        quantities in legs are Decimal (``floats``: float)."""
        p = m.proposals
        query = sa.select(p).where(p.c.run_id == run_id)
        if status is not None:
            wanted = (status,) if isinstance(status, str) else tuple(status)
            _check_choice("a proposal status", wanted, PROPOSAL_STATUSES)
            query = query.where(p.c.status.in_(wanted))
        with self._engine.connect() as conn:
            rows = [r._asdict() for r in conn.execute(query.order_by(p.c.proposal_id))]
            legs = self._legs(conn, run_id, [r["proposal_id"] for r in rows], floats)
        return [_proposal(r, legs.get(r["proposal_id"], [])) for r in rows]

    def proposal(self, run_id: str, proposal_id: int, *, floats: bool = False) -> dict[str, Any]:
        """One proposal of the run with its legs; StoreError when the run has none by
        that id."""
        p = m.proposals
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(p).where(p.c.run_id == run_id, p.c.proposal_id == int(proposal_id))
            ).first()
            if row is None:
                raise StoreError(f"run {run_id!r}: no proposal {proposal_id}")
            legs = self._legs(conn, run_id, [row.proposal_id], floats)
        return _proposal(row._asdict(), legs.get(row.proposal_id, []))

    @staticmethod
    def _legs(
        conn: Connection, run_id: str, ids: Sequence[int], floats: bool
    ) -> dict[int, list[dict[str, Any]]]:
        """The legs of proposals ``ids`` (of run ``run_id``), by proposal id."""
        out: dict[int, list[dict[str, Any]]] = {}
        if not ids:
            return out
        lg = m.proposal_legs
        query = sa.select(lg).where(lg.c.run_id == run_id)
        if len(ids) < 500:  # else every leg of the run: no huge IN list
            query = query.where(lg.c.proposal_id.in_(list(ids)))
        for r in conn.execute(query.order_by(lg.c.proposal_id, lg.c.leg)):
            out.setdefault(r.proposal_id, []).append(_leg_out(r._asdict(), floats))
        return out

    # --- the runner: commands ----------------------------------------------------------
    def add_command(
        self,
        run_id: str,
        kind: str,
        *,
        subaccount: str | None = None,
        args: Mapping[str, Any] | None = None,
        actor: str,
        reason: str,
    ) -> int:
        """Record a human command for the run (its own transaction, safe while another
        process writes the run's bars); returns its ``command_id`` (never reused).

        ``kind`` is one of ``COMMAND_KINDS``; ``args`` (JSON) as the kind needs: close
        ``{"symbols": [...]}`` or ``{"all": true}``, limits ``{"key": .., "value": ..}``,
        mode ``{"mode": ..}``, approve ``{"proposal_id": 3, "legs": [0, 2] or null}``,
        reject ``{"proposal_id": 3}``. ``actor`` (who) is required; ``reason`` (why) is
        required for ``limits`` and ``mode`` and may be empty for the rest. The command is
        ``pending`` until the runner's ``tx.finish_command``.
        """
        _check_choice("a command kind", (kind,), COMMAND_KINDS)
        plain = _command_args(run_id, kind, args)
        if not isinstance(actor, str) or not actor.strip():
            raise StoreError(f"run {run_id!r}: command {kind!r} needs an actor (who)")
        if not isinstance(reason, str) or (kind in ("limits", "mode") and not reason.strip()):
            raise StoreError(f"run {run_id!r}: command {kind!r} needs a reason (why)")
        row = {
            "run_id": run_id,
            "kind": kind,
            "subaccount": None if subaccount is None else str(subaccount),
            "args": plain,
            "actor": actor.strip(),
            "reason": reason.strip(),
            "status": "pending",
            "created_at": _now(),
        }
        with self._write() as conn:
            self._require_run(conn, run_id)
            done = conn.execute(sa.insert(m.commands).values(**row))
            return int(done.inserted_primary_key[0])

    def commands(self, run_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """The run's commands in the order written (``status``: only those)."""
        c = m.commands
        where = []
        if status is not None:
            _check_choice("a command status", (status,), COMMAND_STATUSES)
            where.append(c.c.status == status)
        return self._rows(c, run_id, c.c.command_id, False, where)

    def pending_commands(self, run_id: str) -> list[dict[str, Any]]:
        """The run's commands not applied yet, in the order written."""
        return self.commands(run_id, "pending")

    # --- the runner: alerts and their outbox ---------------------------------------------
    def alerts(self, run_id: str) -> list[dict[str, Any]]:
        """The run's alerts in the order raised."""
        return self._rows(m.alerts, run_id, m.alerts.c.alert_id, False)

    def last_alert(self, run_id: str, key: str) -> dict[str, Any] | None:
        """The newest alert of the run with dedupe key ``key`` (for cooldowns), or None."""
        a = m.alerts
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(a)
                .where(a.c.run_id == run_id, a.c.key == key)
                .order_by(a.c.alert_id.desc())
                .limit(1)
            ).first()
        return None if row is None else _plain(row._asdict(), False)

    def outbox(self, run_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Deliveries (one per alert and target name), in the order written; of one run
        and/or one status (``DELIVERY_STATUSES``) when given. Rows keep ``run_id``."""
        o = m.outbox
        query = sa.select(o)
        if run_id is not None:
            query = query.where(o.c.run_id == run_id)
        if status is not None:
            _check_choice("a delivery status", (status,), DELIVERY_STATUSES)
            query = query.where(o.c.status == status)
        with self._engine.connect() as conn:
            return [r._asdict() for r in conn.execute(query.order_by(o.c.delivery_id))]

    def due_deliveries(self, now: Any, limit: int = 50) -> list[dict[str, Any]]:
        """Pending deliveries of every run whose ``next_attempt_at`` is at or before
        ``now`` (wall clock, UTC), soonest first, at most ``limit``; each with its alert's
        ``rule``, ``key``, ``timestamp``, ``severity``, ``subaccount``, ``title``,
        ``message``, ``numbers`` and ``action``."""
        o, a = m.outbox, m.alerts
        query = (
            sa.select(
                o,
                a.c.rule,
                a.c.key,
                a.c.timestamp,
                a.c.severity,
                a.c.subaccount,
                a.c.title,
                a.c.message,
                a.c.numbers,
                a.c.action,
            )
            .join(a, a.c.alert_id == o.c.alert_id)
            .where(o.c.status == "pending", o.c.next_attempt_at <= to_utc(now))
            .order_by(o.c.next_attempt_at, o.c.delivery_id)
            .limit(int(limit))
        )
        with self._engine.connect() as conn:
            return [r._asdict() for r in conn.execute(query)]

    def mark_delivery(
        self,
        delivery_id: int,
        *,
        ok: bool,
        error: str | None = None,
        next_attempt_at: Any = None,
        give_up: bool = False,
    ) -> None:
        """The outcome of one delivery attempt (its own transaction): ``attempts`` + 1;
        ``ok``: ``delivered`` at the wall clock; else ``error`` is kept (any URL in it
        cut to its scheme: URLs hold secrets) and the delivery stays ``pending`` until
        ``next_attempt_at`` (wall clock, required then), or is ``failed`` with
        ``give_up``. StoreError for an unknown delivery or one no longer pending."""
        now = _now()
        values: dict[str, Any] = {
            "attempts": m.outbox.c.attempts + 1,
            "updated_at": now,
            "last_error": _scrub(error),
        }
        if ok:
            values.update(status="delivered", delivered_at=now, next_attempt_at=None)
        elif give_up:
            values.update(status="failed", next_attempt_at=None)
        else:
            if next_attempt_at is None:
                raise StoreError(
                    f"delivery {delivery_id}: a failed attempt that is retried needs "
                    "next_attempt_at (or give_up=True)"
                )
            values["next_attempt_at"] = to_utc(next_attempt_at)
        o = m.outbox
        with self._write() as conn:
            done = conn.execute(
                sa.update(o)
                .where(o.c.delivery_id == int(delivery_id), o.c.status == "pending")
                .values(**values)
            )
            if done.rowcount == 0:
                found = conn.execute(
                    sa.select(o.c.status).where(o.c.delivery_id == int(delivery_id))
                ).first()
                if found is None:
                    raise StoreError(f"no delivery {delivery_id} in {self.url}")
                raise StoreError(f"delivery {delivery_id} is {found.status} already")

    # --- the runner: reviews and the heartbeat --------------------------------------------
    def latest_reviews(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The newest review of each subaccount (``account``: the whole account), by
        subaccount: ``subaccount``, ``bar``, ``timestamp``, ``payload``, ``updated_at``."""
        r = m.reviews
        newest = (
            sa.select(r.c.subaccount, sa.func.max(r.c.bar).label("bar"))
            .where(r.c.run_id == run_id)
            .group_by(r.c.subaccount)
            .subquery()
        )
        query = (
            sa.select(r)
            .join(newest, (r.c.subaccount == newest.c.subaccount) & (r.c.bar == newest.c.bar))
            .where(r.c.run_id == run_id)
            .order_by(r.c.subaccount)
        )
        with self._engine.connect() as conn:
            return {row.subaccount: _plain(row._asdict(), False) for row in conn.execute(query)}

    def save_heartbeat(self, run_id: str, info: Mapping[str, Any]) -> None:
        """The runner is alive: ``info`` (JSON, e.g. ``{"pid": 123, "status": "running",
        "next_bar": iso}``) at the wall clock, replacing the previous one; its own
        transaction, outside the bars' (a rewind never removes it)."""
        row = {"run_id": run_id, "at": _now(), "info": dict(info)}
        stmt = self._insert(m.heartbeats)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id"], set_={"at": stmt.excluded.at, "info": stmt.excluded.info}
        )
        with self._write() as conn:
            self._require_run(conn, run_id)
            conn.execute(stmt, [row])

    def heartbeat(self, run_id: str) -> dict[str, Any] | None:
        """The last heartbeat's ``info`` with ``at`` (wall clock, UTC) added, or None."""
        h = m.heartbeats
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(h).where(h.c.run_id == run_id)).first()
        return None if row is None else {**row.info, "at": row.at}

    def _rows(
        self,
        table: sa.Table,
        run_id: str,
        order: Any,
        floats: bool,
        where: Sequence[Any] = (),
    ) -> list[dict[str, Any]]:
        order_by = order if isinstance(order, tuple) else (order,)
        query = sa.select(table).where(table.c.run_id == run_id, *where).order_by(*order_by)
        with self._engine.connect() as conn:
            return [_plain(r._asdict(), floats) for r in conn.execute(query)]

    def _order_ref(self, conn: Connection, run_id: str, order_id: int) -> str | None:
        refs = self._order_refs.setdefault(run_id, {})
        ref = refs.get(order_id)
        if ref is None:
            o = m.orders
            row = conn.execute(
                sa.select(o.c.client_order_id)
                .where(o.c.run_id == run_id, o.c.order_id == order_id)
                .order_by(o.c.seq.desc())
            ).first()
            if row is not None:
                ref = refs[order_id] = row.client_order_id
        return ref


class Transaction:
    """Writes of one ``Store.transaction``: all commit together, or none do."""

    def __init__(
        self,
        store: Store,
        conn: Connection,
        run_id: str,
        bar: int | None,
        timestamp: pd.Timestamp | None,
    ) -> None:
        self._store = store
        self._conn = conn
        self.run_id = run_id
        self.bar = bar
        self.timestamp = timestamp
        # Naive UTC, as the columns hold it: bound as is, with no conversion per row.
        self._now = _now().tz_localize(None).to_pydatetime()

    def _ts(self, value: Any, what: str) -> pd.Timestamp:
        if value is None:
            if self.timestamp is None:
                raise StoreError(
                    f"run {self.run_id!r}: {what} needs a timestamp (give one, or open the "
                    "transaction with timestamp=)"
                )
            return self.timestamp
        return to_utc(value)

    def _bar(self, row: Mapping[str, Any]) -> int | None:
        bar = row.get("bar", self.bar)
        return None if bar is None else int(bar)

    def _next_seq(self, table: sa.Table, count: int) -> int:
        """The first of ``count`` new ``seq`` numbers of the run in ``table``."""
        key = (self.run_id, table.name)
        seqs = self._store._seqs
        first = seqs.get(key)
        if first is None:
            top = self._conn.execute(
                sa.select(sa.func.max(table.c.seq)).where(table.c.run_id == self.run_id)
            ).scalar()
            first = 0 if top is None else int(top) + 1
        # A rolled-back transaction leaves a gap in seq, which only orders rows.
        seqs[key] = first + count
        return first

    # --- records ---------------------------------------------------------------------
    def add_decisions(
        self, records: Iterable[Mapping[str, Any]], subaccount: str | None = None
    ) -> None:
        """Decision records (``trimtab.engine``'s dicts: ``id``, ``timestamp``,
        ``action``, ``reasons``, ...), kept whole as JSON. The subaccount is the
        record's ``subaccount``, else ``subaccount``, else ``main``. Upsert by (run,
        subaccount, id)."""
        records = list(records)
        if not records:
            return
        seq = self._next_seq(m.decisions, len(records))
        rows = []
        for k, rec in enumerate(records):
            if "id" not in rec:
                raise StoreError(f"run {self.run_id!r}: a decision record needs an 'id'")
            stamp = rec.get("timestamp")
            rows.append(
                {
                    "run_id": self.run_id,
                    "subaccount": str(rec.get("subaccount", subaccount or "main")),
                    "decision_id": int(rec["id"]),
                    "seq": seq + k,
                    "bar": self._bar(rec),
                    "timestamp": to_utc(stamp) if stamp is not None else self.timestamp,
                    "action": rec.get("action"),
                    "reasons": rec.get("reasons"),
                    "record": rec,
                }
            )
        self._upsert(
            m.decisions,
            rows,
            ("run_id", "subaccount", "decision_id"),
            update=("bar", "timestamp", "action", "reasons", "record"),
        )

    def add_orders(self, orders: Iterable[Any]) -> list[str]:
        """Write orders before they are sent; returns their client order ids in order.

        Each is a ``trimtab.domain.Order`` or a mapping with its fields (``symbol``,
        ``side``, ``quantity`` or ``quote_quantity``, ``type``, ``limit_price``, ...,
        ``subaccount``, ``decision_id``, optional ``leg``, ``id`` (the broker's order
        id), ``status`` (default ``new``), ``client_order_id``, ``timestamp``,
        ``filled_quantity``). ``leg`` defaults to the order's place among this call's
        orders of the same subaccount and decision. An order whose client order id
        exists is kept as it is.
        """
        rows = []
        legs: dict[tuple[str, int | None], int] = {}
        items = list(orders)
        seq = self._next_seq(m.orders, len(items))
        for k, item in enumerate(items):
            o = _order_fields(item)
            key = (o["subaccount"], o["decision_id"])
            leg = o.pop("leg", None)
            if leg is None:
                leg = legs.get(key, 0)
            legs[key] = int(leg) + 1
            cid = o.pop("client_order_id", None) or client_order_id(
                self.run_id, o["subaccount"], o["decision_id"], int(leg)
            )
            status = o.pop("status", "new")
            if status not in ORDER_STATUSES:
                raise StoreError(f"order {cid}: status must be one of {', '.join(ORDER_STATUSES)}")
            stamp = o.pop("timestamp", None)
            rows.append(
                {
                    **o,
                    "client_order_id": cid,
                    "run_id": self.run_id,
                    "seq": seq + k,
                    "bar": self._bar(o),
                    "leg": int(leg),
                    "status": status,
                    "timestamp": to_utc(stamp) if stamp is not None else self.timestamp,
                    "created_at": self._now,
                    "updated_at": self._now,
                }
            )
        if not rows:
            return []
        ids = [r["client_order_id"] for r in rows]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise StoreError(f"run {self.run_id!r}: client order id {dup} twice in one call")
        self._upsert(m.orders, rows, ("client_order_id",), update=None)
        refs = self._store._order_refs.setdefault(self.run_id, {})
        for r in rows:
            if r.get("order_id") is not None:
                refs[int(r["order_id"])] = r["client_order_id"]
        return ids

    def update_order_status(
        self,
        client_order_id: str,
        status: str,
        *,
        filled_quantity: Any = None,
        exchange_order_id: str | None = None,
    ) -> None:
        """Move an order to ``status`` (one of ``ORDER_STATUSES``)."""
        if status not in ORDER_STATUSES:
            raise StoreError(
                f"order {client_order_id}: status must be one of {', '.join(ORDER_STATUSES)}"
            )
        values: dict[str, Any] = {"status": status, "updated_at": _now()}
        if filled_quantity is not None:
            values["filled_quantity"] = filled_quantity
        if exchange_order_id is not None:
            values["exchange_order_id"] = exchange_order_id
        o = m.orders
        done = self._conn.execute(
            sa.update(o)
            .where(o.c.client_order_id == client_order_id, o.c.run_id == self.run_id)
            .values(**values)
        )
        if done.rowcount == 0:
            raise StoreError(f"run {self.run_id!r}: no order {client_order_id}")

    def add_fills(self, fills: Iterable[Any]) -> None:
        """Fills: ``trimtab.domain.Fill`` objects (their ``order_id`` finds the order
        written by ``add_orders``; 0 or an unknown id: no order, e.g. a delisting) or
        mappings with the same fields and optionally ``client_order_id`` and
        ``trade_id`` (the exchange's; unique per run, a repeated one is ignored)."""
        rows = []
        for item in fills:
            f = _fill_fields(item)
            ref = f.pop("client_order_id", None)
            order_id = f.pop("order_id", None)
            if ref is None and order_id:
                ref = self._store._order_ref(self._conn, self.run_id, int(order_id))
            rows.append(
                {
                    **f,
                    "run_id": self.run_id,
                    "bar": self._bar(f),
                    "client_order_id": ref,
                    "timestamp": self._ts(f.get("timestamp"), "a fill"),
                }
            )
        if not rows:
            return
        with_trade = [r for r in rows if r.get("trade_id") is not None]
        plain = [r for r in rows if r.get("trade_id") is None]
        if plain:
            self._conn.execute(sa.insert(m.fills), plain)
        if with_trade:
            self._upsert(m.fills, with_trade, ("run_id", "trade_id"), update=None)

    def add_balances(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Balance snapshots: ``subaccount``, ``equity``, ``cash`` (quote), optional
        ``positions`` (JSON: e.g. symbol -> quantity) and ``timestamp``/``bar`` (default:
        the transaction's). Upsert by (run, subaccount, bar)."""
        out = []
        for row in rows:
            bar = self._bar(row)
            if bar is None:
                raise StoreError(f"run {self.run_id!r}: a balance snapshot needs a bar")
            out.append(
                {
                    "run_id": self.run_id,
                    "subaccount": str(row.get("subaccount", "main")),
                    "bar": bar,
                    "timestamp": self._ts(row.get("timestamp"), "a balance snapshot"),
                    "equity": row["equity"],
                    "cash": row["cash"],
                    "positions": row.get("positions"),
                }
            )
        self._upsert(
            m.balances,
            out,
            ("run_id", "subaccount", "bar"),
            update=("timestamp", "equity", "cash", "positions"),
        )

    def add_transfers(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Transfers between subaccounts: ``source``, ``target``, ``amount`` (quote),
        ``status`` (the runner's: ``new``, ``done``, ``refused``, ``not_made``, and for a
        transfer proposed to a person ``proposed``, ``approved``, ``rejected``,
        ``expired``), ``reason``, ``guard`` (the guard's outcome, JSON, with the
        ``transfer_id`` the exchange knows it by), optional ``timestamp``/``bar``."""
        out = [
            {
                "run_id": self.run_id,
                "bar": self._bar(r),
                "timestamp": self._ts(r.get("timestamp"), "a transfer"),
                "source": r["source"],
                "target": r["target"],
                "amount": r["amount"],
                "status": r.get("status", "done"),
                "reason": r.get("reason"),
                "guard": r.get("guard"),
            }
            for r in rows
        ]
        if out:
            self._conn.execute(sa.insert(m.transfers), out)

    def update_transfer_status(self, transfer_id: str, status: str) -> None:
        """Move the transfer written with ``guard["transfer_id"] == transfer_id`` (status
        ``new``) to ``status`` (``done`` or ``refused``): the exchange's answer."""
        if status not in ("done", "refused"):
            raise StoreError(f"transfer {transfer_id}: status must be done or refused")
        t = m.transfers
        rows = self._conn.execute(
            sa.select(t.c.transfer_id, t.c.guard).where(
                t.c.run_id == self.run_id, t.c.status == "new"
            )
        ).all()
        keys = [
            key
            for key, guard in rows
            if isinstance(guard, Mapping) and guard.get("transfer_id") == transfer_id
        ]
        if not keys:
            raise StoreError(f"run {self.run_id!r}: no transfer {transfer_id} waiting (new)")
        self._conn.execute(sa.update(t).where(t.c.transfer_id.in_(keys)).values(status=status))

    def update_transfer(
        self,
        transfer_id: str,
        status: str,
        *,
        expect: Sequence[str],
        amount: Any = None,
        guard: Mapping[str, Any] | None = None,
        at_this_bar: bool = False,
    ) -> None:
        """Move the transfer written with ``guard["transfer_id"] == transfer_id``, now in
        one of the statuses ``expect``, to ``status``: a proposed transfer approved,
        rejected, expired, then made (``new``) or refused at its bar. ``amount`` (quote)
        replaces the row's; ``guard`` is merged into its guard document; ``at_this_bar``
        stamps the row with the transaction's bar and timestamp (a transfer is booked at
        the close it is made at: the flows of that bar). StoreError when no row waits."""
        t = m.transfers
        rows = self._conn.execute(
            sa.select(t.c.transfer_id, t.c.guard, t.c.status).where(
                t.c.run_id == self.run_id, t.c.status.in_(list(expect))
            )
        ).all()
        found = [
            (key, doc)
            for key, doc, _ in rows
            if isinstance(doc, Mapping) and doc.get("transfer_id") == transfer_id
        ]
        if not found:
            raise StoreError(
                f"run {self.run_id!r}: no transfer {transfer_id} waiting "
                f"({' or '.join(expect)}) to become {status}"
            )
        for key, doc in found:
            values: dict[str, Any] = {"status": status}
            if amount is not None:
                values["amount"] = amount
            if guard is not None:
                values["guard"] = {**doc, **guard}
            if at_this_bar:
                values["bar"] = self.bar
                values["timestamp"] = self._ts(None, f"transfer {transfer_id}")
            self._conn.execute(sa.update(t).where(t.c.transfer_id == key).values(**values))

    def add_breaker_changes(self, changes: Iterable[Any]) -> None:
        """Circuit-breaker state changes: ``StateChange`` objects or their ``to_dict()``."""
        out = []
        for c in changes:
            d = c.to_dict() if hasattr(c, "to_dict") else dict(c)
            out.append(
                {
                    "run_id": self.run_id,
                    "bar": self._bar(d),
                    "at": self._ts(d.get("at"), "a breaker change"),
                    "scope": d.get("scope", "account"),
                    "old": str(d["old"]),
                    "new": str(d["new"]),
                    "trigger": d["trigger"],
                    "message": d.get("message"),
                    "values": d.get("values"),
                    "by": d.get("by"),
                }
            )
        if out:
            self._conn.execute(sa.insert(m.breaker_changes), out)

    def add_overrides(self, overrides: Iterable[Any], scope: str = "main") -> None:
        """Human limit overrides: ``LimitOverride`` objects or their ``to_dict()`` (who,
        why, when, from what to what), for the subaccount (or ``account``) ``scope``."""
        out = []
        for o in overrides:
            d = o.to_dict() if hasattr(o, "to_dict") else dict(o)
            out.append(
                {
                    "run_id": self.run_id,
                    "bar": self._bar(d),
                    "at": self._ts(d.get("at"), "an override"),
                    "scope": d.get("scope", scope),
                    "key": d["key"],
                    "old": d.get("old"),
                    "new": d.get("new"),
                    "by": d["by"],
                    "reason": d["reason"],
                }
            )
        if out:
            self._conn.execute(sa.insert(m.overrides), out)

    # --- state -----------------------------------------------------------------------
    def save_state(self, component: str, state: Mapping[str, Any], version: int = 1) -> None:
        """``component``'s state (JSON; floats exact), replacing the one saved before."""
        row = {
            "run_id": self.run_id,
            "component": component,
            "bar": self.bar,
            "version": int(version),
            "state": state,
            "updated_at": self._now,
        }
        self._upsert(
            m.component_state,
            [row],
            ("run_id", "component"),
            update=("bar", "version", "state", "updated_at"),
        )

    def set_checkpoint(self, bar: int | None = None, timestamp: Any = None) -> None:
        """Bar ``bar`` (default: the transaction's) is complete."""
        bar = self.bar if bar is None else int(bar)
        if bar is None:
            raise StoreError(f"run {self.run_id!r}: a checkpoint needs a bar")
        stamp = to_utc(timestamp) if timestamp is not None else self.timestamp
        row = {"run_id": self.run_id, "bar": bar, "timestamp": stamp, "updated_at": self._now}
        self._upsert(m.checkpoints, [row], ("run_id",), update=("bar", "timestamp", "updated_at"))

    # --- the runner ------------------------------------------------------------------
    def add_proposal(self, p: Mapping[str, Any]) -> int:
        """An order plan awaiting a person (approve mode, or beyond the auto envelope),
        or a transfer between subaccounts (``kind="transfer"``, no legs); returns its
        ``proposal_id`` (never reused). Status ``pending``; the row carries the
        transaction's bar (a rewind removes it like the bar's other rows).

        Keys: ``subaccount``, ``decision_id``, ``timestamp`` (run clock; default the
        transaction's), ``expires_at`` (run clock; None: never), ``legs``, ``reasons``
        (list), ``source`` (``PROPOSAL_SOURCES``), ``summary`` (text). Each leg: ``leg``
        (default its place), ``symbol``, ``side``, ``quantity``, ``quote_quantity``,
        ``planned_price``, ``band_low``, ``band_high``, ``notional`` (quote, USDT; all
        exact), ``reason``, ``status`` (default ``pending``), ``client_order_id`` (None
        until sent); other keys are kept as JSON and read back with the leg. ``kind``:
        ``orders`` (default) or ``transfer``, whose ``transfer`` document (JSON) has at
        least ``source``, ``target``, ``amount`` (USDT asked, > 0) and ``transfer_id``.
        """
        subaccount = p.get("subaccount")
        if not isinstance(subaccount, str) or not subaccount:
            raise StoreError(f"run {self.run_id!r}: a proposal needs a subaccount")
        source = p.get("source", "approve-mode")
        _check_choice("a proposal source", (source,), PROPOSAL_SOURCES)
        status = p.get("status", "pending")
        _check_choice("a proposal status", (status,), PROPOSAL_STATUSES)
        legs = [
            _leg_row(self.run_id, "a new proposal", k, leg)
            for k, leg in enumerate(p.get("legs") or [])
        ]
        numbers = [leg["leg"] for leg in legs]
        if len(set(numbers)) != len(numbers):
            raise StoreError(f"run {self.run_id!r}: a proposal with two legs numbered alike")
        kind = p.get("kind", "orders")
        _check_choice("a proposal kind", (kind,), PROPOSAL_KINDS)
        transfer = _transfer_doc(self.run_id, kind, p.get("transfer"), legs)
        decision = p.get("decision_id")
        expires = p.get("expires_at")
        row = {
            "run_id": self.run_id,
            "bar": self._bar(p),
            "subaccount": subaccount,
            "decision_id": None if decision is None else int(decision),
            "timestamp": self._ts(p.get("timestamp"), "a proposal"),
            "expires_at": None if expires is None else to_utc(expires),
            "status": status,
            "source": source,
            "summary": p.get("summary"),
            "reasons": list(p.get("reasons") or []),
            "kind": kind,
            "transfer": transfer,
            "created_at": self._now,
            "updated_at": self._now,
        }
        done = self._conn.execute(sa.insert(m.proposals).values(**row))
        proposal_id = int(done.inserted_primary_key[0])
        for leg in legs:
            leg.update(proposal_id=proposal_id, bar=row["bar"])
        if legs:
            self._conn.execute(sa.insert(m.proposal_legs), legs)
        return proposal_id

    def update_proposal(
        self,
        proposal_id: int,
        *,
        status: str | None = None,
        legs: Sequence[Mapping[str, Any]] | None = None,
        decided_by: str | None = None,
        decided_at: Any = None,
        note: str | None = None,
        transfer: Mapping[str, Any] | None = None,
    ) -> None:
        """Change a proposal of this run: its ``status`` (``PROPOSAL_STATUSES``), who
        decided and when (``decided_at``: UTC, as given), a ``note``, a transfer
        proposal's ``transfer`` (merged into its document), and ``legs``: each
        given leg (found by its ``leg`` number) is merged into the stored one, so
        ``{"leg": 0, "status": "sent", "client_order_id": cid}`` is enough; legs not
        given stay as they are. The row keeps the bar it was proposed at."""
        p, lg = m.proposals, m.proposal_legs
        pid = int(proposal_id)
        found = self._conn.execute(
            sa.select(p.c.bar, p.c.kind, p.c.transfer).where(
                p.c.proposal_id == pid, p.c.run_id == self.run_id
            )
        ).first()
        if found is None:
            raise StoreError(f"run {self.run_id!r}: no proposal {proposal_id}")
        values: dict[str, Any] = {"updated_at": self._now}
        if status is not None:
            _check_choice(f"proposal {pid}: a status", (status,), PROPOSAL_STATUSES)
            values["status"] = status
        if decided_by is not None:
            values["decided_by"] = str(decided_by)
        if decided_at is not None:
            values["decided_at"] = to_utc(decided_at)
        if note is not None:
            values["note"] = str(note)
        if transfer is not None:
            if found.kind != "transfer":
                raise StoreError(f"run {self.run_id!r}: proposal {pid} is not a transfer")
            values["transfer"] = {**(found.transfer or {}), **json.loads(dumps(dict(transfer)))}
        self._conn.execute(sa.update(p).where(p.c.proposal_id == pid).values(**values))
        if not legs:
            return
        stored = {
            r.leg: _leg_out(r._asdict(), False)
            for r in self._conn.execute(sa.select(lg).where(lg.c.proposal_id == pid))
        }
        rows = []
        for k, leg in enumerate(legs):
            if "leg" not in leg:
                raise StoreError(
                    f"run {self.run_id!r}: proposal {pid}: a leg to update needs its 'leg' number"
                )
            merged = {**stored.get(int(leg["leg"]), {}), **leg}
            rows.append(
                {
                    **_leg_row(self.run_id, f"proposal {pid}", k, merged),
                    "proposal_id": pid,
                    "bar": found.bar,
                }
            )
        keys = ("proposal_id", "leg")
        update = [c.name for c in lg.columns if c.name not in keys]
        self._upsert(lg, rows, keys, update=update)

    def finish_command(self, command_id: int, status: str, outcome: str) -> None:
        """Record what became of a pending command: ``applied`` or ``refused``, with
        ``outcome`` (text, for the person), the wall clock (``applied_at``) and this
        transaction's bar and timestamp (``applied_bar``, ``applied_timestamp``). It
        commits with the transaction: one that rolls back leaves the command pending.
        StoreError for a command of another run, an unknown one or one finished already."""
        _check_choice(
            f"command {command_id}: a finishing status", (status,), ("applied", "refused")
        )
        c = m.commands
        cid = int(command_id)
        done = self._conn.execute(
            sa.update(c)
            .where(c.c.command_id == cid, c.c.run_id == self.run_id, c.c.status == "pending")
            .values(
                status=status,
                outcome=str(outcome),
                applied_at=self._now,
                applied_bar=self.bar,
                applied_timestamp=self.timestamp,
            )
        )
        if done.rowcount == 0:
            found = self._conn.execute(
                sa.select(c.c.status).where(c.c.command_id == cid, c.c.run_id == self.run_id)
            ).first()
            if found is None:
                raise StoreError(f"run {self.run_id!r}: no command {command_id}")
            raise StoreError(f"run {self.run_id!r}: command {command_id} is {found.status} already")

    def add_alert(self, a: Mapping[str, Any], targets: Sequence[str]) -> int:
        """An alert, and one pending delivery per target NAME in the outbox (due now,
        wall clock); returns its ``alert_id``. A target's URL is a secret: it is looked
        up by name at delivery and never stored (a target that looks like a URL is a
        StoreError). Keys: ``rule``, ``key`` (dedupe), ``timestamp`` (run clock; default
        the transaction's), ``severity`` (``ALERT_SEVERITIES``), ``title``, ``message``,
        ``numbers`` (JSON), ``action``, ``subaccount`` (None: the account). A rewind
        never removes alerts or deliveries."""
        for field in ("rule", "key", "title", "message"):
            if not isinstance(a.get(field), str) or not a[field]:
                raise StoreError(f"run {self.run_id!r}: an alert needs a {field} (text)")
        severity = a.get("severity", "info")
        _check_choice(f"alert {a['key']!r}: a severity", (severity,), ALERT_SEVERITIES)
        names: list[str] = []
        for k, name in enumerate(targets):
            if not isinstance(name, str) or not name.strip() or len(name) > 100:
                raise StoreError(f"run {self.run_id!r}: alert target {k} is not a name")
            if "://" in name:  # the value is not shown: it may hold a token
                raise StoreError(
                    f"run {self.run_id!r}: alert target {k} looks like a URL; give the "
                    "target's name (URLs are secrets and are never stored)"
                )
            if name not in names:
                names.append(name)
        subaccount = a.get("subaccount")
        row = {
            "run_id": self.run_id,
            "bar": self._bar(a),
            "rule": a["rule"],
            "key": a["key"],
            "timestamp": self._ts(a.get("timestamp"), "an alert"),
            "severity": severity,
            "subaccount": None if subaccount is None else str(subaccount),
            "title": a["title"],
            "message": a["message"],
            "numbers": a.get("numbers"),
            "action": a.get("action"),
            "created_at": self._now,
        }
        done = self._conn.execute(sa.insert(m.alerts).values(**row))
        alert_id = int(done.inserted_primary_key[0])
        if names:
            self._conn.execute(
                sa.insert(m.outbox),
                [
                    {
                        "alert_id": alert_id,
                        "run_id": self.run_id,
                        "target": name,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": self._now,
                        "created_at": self._now,
                        "updated_at": self._now,
                    }
                    for name in names
                ],
            )
        return alert_id

    def add_review(self, subaccount: str, timestamp: Any, payload: Mapping[str, Any]) -> None:
        """The scheduled review of ``subaccount`` (``account``: the whole account) at
        ``timestamp`` (run clock; None: the transaction's): ``payload`` (JSON). Upsert by
        (run, subaccount, the transaction's bar); a rewind removes it like other bar rows."""
        if self.bar is None:
            raise StoreError(
                f"run {self.run_id!r}: a review needs a bar (open the transaction with bar=)"
            )
        row = {
            "run_id": self.run_id,
            "subaccount": str(subaccount),
            "bar": self.bar,
            "timestamp": self._ts(timestamp, "a review"),
            "payload": dict(payload),
            "updated_at": self._now,
        }
        self._upsert(
            m.reviews,
            [row],
            ("run_id", "subaccount", "bar"),
            update=("timestamp", "payload", "updated_at"),
        )

    def _upsert(
        self,
        table: sa.Table,
        rows: list[dict[str, Any]],
        keys: Sequence[str],
        update: Sequence[str] | None,
    ) -> None:
        """Insert ``rows``; on a key conflict update the columns ``update`` (None: keep
        the row as it is)."""
        if not rows:
            return
        cache = self._store._statements
        key = (table.name, tuple(keys), None if update is None else tuple(update))
        stmt = cache.get(key)
        if stmt is None:
            # Built once per store: making ``excluded`` costs more than the insert itself.
            stmt = self._store._insert(table)
            if update is None:
                stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
            else:
                stmt = stmt.on_conflict_do_update(
                    index_elements=list(keys), set_={c: stmt.excluded[c] for c in update}
                )
            cache[key] = stmt
        self._conn.execute(stmt, rows)


# --- helpers -----------------------------------------------------------------------------
def _dialect_insert(name: str) -> Any:
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _reason(exc: SQLAlchemyError, url: URL) -> str:
    """The driver's message, on one line, without the SQL and with no password in it."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    message = " ".join(line.strip() for line in text if line.strip()) or type(exc).__name__
    if url.password:
        message = message.replace(str(url.password), "***")
    return message


def _plain(row: dict[str, Any], floats: bool) -> dict[str, Any]:
    row.pop("run_id", None)
    if floats:
        return {k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()}
    return row


def _run_info(row: Any, cp: tuple[int, pd.Timestamp | None] | None) -> RunInfo:
    return RunInfo(
        run_id=row.run_id,
        kind=row.kind,
        spec=row.spec,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        trimtab_version=row.trimtab_version,
        summary=row.summary,
        checkpoint=cp,
    )


_ORDER_FIELDS = (
    "symbol",
    "side",
    "type",
    "quantity",
    "quote_quantity",
    "limit_price",
    "time_in_force",
    "expires_at",
    "reduce_only",
    "leverage",
    "reason",
    "subaccount",
    "decision_id",
)


def _order_fields(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        src = dict(item)
        out = {k: src.get(k) for k in _ORDER_FIELDS}
        out["order_id"] = src.get("order_id", src.get("id"))
        for extra in (
            "leg",
            "client_order_id",
            "status",
            "timestamp",
            "bar",
            "exchange_order_id",
            "filled_quantity",
        ):
            if src.get(extra) is not None:
                out[extra] = src[extra]
    else:
        out = {k: getattr(item, k, None) for k in _ORDER_FIELDS}
        out["order_id"] = getattr(item, "id", None)
    for k in ("side", "type", "time_in_force"):
        if out.get(k) is not None:
            out[k] = str(out[k])
    out["type"] = out.get("type") or "market"
    out["subaccount"] = str(out.get("subaccount") or "main")
    out["reduce_only"] = bool(out.get("reduce_only") or False)
    if out.get("decision_id") is not None:
        out["decision_id"] = int(out["decision_id"])
    if out.get("order_id") is not None:
        out["order_id"] = int(out["order_id"])
    if out.get("expires_at") is not None:
        out["expires_at"] = to_utc(out["expires_at"])
    if not out.get("symbol") or out.get("side") not in ("buy", "sell"):
        raise StoreError(f"an order needs a symbol and a side (buy/sell): {out!r}")
    return out


_FILL_FIELDS = (
    "order_id",
    "timestamp",
    "symbol",
    "side",
    "quantity",
    "price",
    "fee",
    "fee_currency",
    "liquidity",
    "subaccount",
    "reason",
)


def _fill_fields(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        src = dict(item)
        out = {k: src.get(k) for k in _FILL_FIELDS}
        for extra in ("client_order_id", "trade_id", "bar"):
            if src.get(extra) is not None:
                out[extra] = src[extra]
    else:
        out = {k: getattr(item, k, None) for k in _FILL_FIELDS}
    for k in ("side", "liquidity"):
        if out.get(k) is not None:
            out[k] = str(out[k])
    out["subaccount"] = str(out.get("subaccount") or "main")
    out["fee"] = out.get("fee") or 0.0
    if out.get("trade_id") is not None:
        out["trade_id"] = str(out["trade_id"])
    return out


# --- the runner's rows ----------------------------------------------------------------------
def _check_choice(what: str, given: Sequence[Any], allowed: Sequence[str]) -> None:
    for value in given:
        if value not in allowed:
            raise StoreError(f"{what} must be one of {', '.join(allowed)}: {value!r}")


def _command_args(run_id: str, kind: str, args: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``args`` as plain JSON, checked for what ``kind`` needs (StoreError naming it)."""
    if args is None:
        plain = None
    elif isinstance(args, Mapping):
        plain = json.loads(dumps(dict(args)))
    else:
        raise StoreError(f"run {run_id!r}: command {kind!r} takes args as a mapping, got {args!r}")
    got = plain or {}
    need = None
    if kind == "close":
        symbols = got.get("symbols")
        by_symbol = (
            isinstance(symbols, list) and symbols and all(isinstance(x, str) for x in symbols)
        )
        if not (by_symbol or got.get("all") is True):
            need = '{"symbols": ["BTCUSDT", ...]} or {"all": true}'
    elif kind == "limits":
        if not isinstance(got.get("key"), str) or "value" not in got:
            need = '{"key": "max_asset_weight", "value": 0.2}'
    elif kind == "mode":
        if not isinstance(got.get("mode"), str):
            need = '{"mode": "monitor" | "approve" | "auto"}'
    elif kind in ("approve", "reject"):
        pid, legs = got.get("proposal_id"), got.get("legs")
        ok = isinstance(pid, int) and not isinstance(pid, bool)
        if kind == "approve" and legs is not None:
            ok = (
                ok
                and isinstance(legs, list)
                and all(isinstance(x, int) and not isinstance(x, bool) for x in legs)
            )
        if not ok:
            need = (
                '{"proposal_id": 3, "legs": [0, 2] or null}'
                if kind == "approve"
                else '{"proposal_id": 3}'
            )
    if need is not None:
        raise StoreError(f"run {run_id!r}: command {kind!r} needs args {need}, got {plain!r}")
    return plain


def _transfer_doc(run_id: str, kind: str, doc: Any, legs: Sequence[Any]) -> dict[str, Any] | None:
    """A new proposal's ``transfer`` document, checked: None for an order plan; for a
    transfer, no legs and the keys it needs (``amount`` a number > 0, USDT)."""
    if kind == "orders":
        if doc is not None:
            raise StoreError(f"run {run_id!r}: an order proposal has no transfer document")
        return None
    if legs:
        raise StoreError(f"run {run_id!r}: a transfer proposal has no legs")
    if not isinstance(doc, Mapping) or any(k not in doc for k in _TRANSFER_KEYS):
        raise StoreError(
            f"run {run_id!r}: a transfer proposal needs a transfer document with "
            f"{', '.join(_TRANSFER_KEYS)}, got {doc!r}"
        )
    amount = doc["amount"]
    if isinstance(amount, bool) or not isinstance(amount, int | float | Decimal):
        raise StoreError(f"run {run_id!r}: a transfer proposal's amount must be a number")
    if not (float(amount) > 0 and float(amount) != float("inf")):
        raise StoreError(f"run {run_id!r}: a transfer proposal's amount must be > 0: {amount!r}")
    return json.loads(dumps(dict(doc)))


def _leg_row(run_id: str, where: str, place: int, leg: Mapping[str, Any]) -> dict[str, Any]:
    """A proposal leg as a ``proposal_legs`` row (without proposal id and bar)."""
    side = leg.get("side")
    side = None if side is None else str(side)
    symbol = leg.get("symbol")
    number = leg.get("leg", place)
    if not isinstance(symbol, str) or not symbol or side not in ("buy", "sell"):
        raise StoreError(
            f"run {run_id!r}: {where}: leg {number} needs a symbol and a side (buy/sell)"
        )
    status = leg.get("status") or "pending"
    _check_choice(f"run {run_id!r}: {where}: leg {number}'s status", (status,), PROPOSAL_STATUSES)
    row: dict[str, Any] = {
        "run_id": run_id,
        "leg": int(number),
        "symbol": symbol,
        "side": side,
        "reason": leg.get("reason"),
        "status": status,
        "client_order_id": leg.get("client_order_id"),
    }
    for k in _LEG_NUMBERS:
        try:
            row[k] = m.to_decimal(leg.get(k))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"run {run_id!r}: {where}: leg {number}'s {k}: {exc}") from None
    extra = {k: v for k, v in leg.items() if k not in _LEG_FIELDS}
    row["extra"] = extra or None
    return row


def _leg_out(row: dict[str, Any], floats: bool) -> dict[str, Any]:
    extra = row.get("extra") or {}
    out = {k: row[k] for k in _LEG_FIELDS}
    if floats:
        out.update({k: float(out[k]) for k in _LEG_NUMBERS if out[k] is not None})
    return {**out, **extra}


def _proposal(row: dict[str, Any], legs: list[dict[str, Any]]) -> dict[str, Any]:
    row.pop("run_id", None)
    return {**row, "legs": legs}


def _scrub(error: str | None) -> str | None:
    """A delivery error without URLs (they hold tokens), at most ``_MAX_ERROR`` chars."""
    if error is None:
        return None
    return _URL.sub(r"\1://***", str(error))[:_MAX_ERROR]
