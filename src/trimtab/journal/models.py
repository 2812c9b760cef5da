"""The store's tables (SQLAlchemy Core) and the column types that keep values exact.

Money, quantities and prices are ``ExactDecimal``: NUMERIC (unbounded, exact) on
PostgreSQL, the decimal's text on SQLite (whose NUMERIC goes through binary floats). A
Python float is stored as ``Decimal(repr(x))``, the shortest text that reads back as the
same float, so float -> store -> ``float()`` is bit-exact; NaN and infinities are kept.
Timestamps are ``UTCDateTime`` (stored as naive UTC, read back as UTC ``pd.Timestamp``).
JSON documents are ``JSONText``: Python's ``json`` text, floats as ``repr`` (exact), NaN
and infinities allowed, NumPy scalars and arrays, timestamps and decimals converted.

Rows written while a bar is processed carry that ``bar`` (an index on the run's clock),
so that ``Store.rewind`` can remove whatever a killed process wrote after its last
checkpoint. The runner's tables (proposals and their legs, commands, alerts and their
outbox, reviews, heartbeats) come with migration 0002 (a proposal's kind, orders or
transfer, with 0005); of them only proposals, their legs and reviews belong to a bar. The schema itself is built only by the Alembic migrations in
``trimtab.journal.migrations``; a test checks they produce exactly these tables.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

#: Alembic's version table for trimtab's schema.
VERSION_TABLE = "trimtab_schema_version"


def to_decimal(value: Any) -> Decimal | None:
    """``value`` as an exact Decimal: floats via ``repr`` (the shortest exact text)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError(f"a number was expected, got the boolean {value!r}")
    if isinstance(value, int | np.integer):
        return Decimal(int(value))
    if isinstance(value, float | np.floating):
        return Decimal(repr(float(value)))
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a number: {value!r}") from None
    raise TypeError(f"a number was expected, got {type(value).__name__} {value!r}")


class ExactDecimal(TypeDecorator[Decimal]):
    """An exact decimal on every database: NUMERIC on PostgreSQL, text on SQLite."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(asdecimal=True))
        return dialect.type_descriptor(String(64))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        number = to_decimal(value)
        if number is None or dialect.name == "postgresql":
            return number
        return str(number)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(value)


def to_utc(value: Any) -> pd.Timestamp:
    """A timestamp (pandas, datetime, ISO text, epoch ns) as a UTC ``pd.Timestamp``;
    one without a zone is taken as UTC."""
    if isinstance(value, pd.Timestamp) and value.tzinfo is dt.UTC:
        return value
    ts = pd.Timestamp(value)
    return ts.tz_localize(dt.UTC) if ts.tzinfo is None else ts.tz_convert(dt.UTC)


def _naive_utc(value: Any) -> dt.datetime:
    """``value`` as a naive datetime in UTC (how the columns hold instants)."""
    if type(value) is dt.datetime and value.tzinfo is None:
        return value
    if isinstance(value, pd.Timestamp) and value.tzinfo is dt.UTC:
        return value.tz_localize(None).to_pydatetime(warn=False)
    if isinstance(value, dt.datetime):  # pd.Timestamp is one too
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        if isinstance(value, pd.Timestamp):
            value = value.to_pydatetime(warn=False)
        return value.replace(tzinfo=None)
    return to_utc(value).tz_localize(None).to_pydatetime(warn=False)


class UTCDateTime(TypeDecorator[pd.Timestamp]):
    """A UTC instant, stored without a zone (always UTC), read back as ``pd.Timestamp``."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return _naive_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> pd.Timestamp | None:
        if value is None:
            return None
        return to_utc(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value) if not value.is_finite() else str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} {value!r} as JSON")


def dumps(value: Any) -> str:
    """JSON text: compact, floats exact (``repr``), NaN/Infinity allowed."""
    return json.dumps(value, separators=(",", ":"), default=_json_default, allow_nan=True)


class JSONText(TypeDecorator[Any]):
    """A JSON document kept as text, exactly as Python's ``json`` writes it."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else dumps(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


metadata = MetaData()


def _run_fk() -> ForeignKey:
    return ForeignKey("runs.run_id", ondelete="CASCADE")


runs = Table(
    "runs",
    metadata,
    Column("run_id", String(200), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("spec", JSONText, nullable=False),
    Column("spec_digest", String(64), nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("trimtab_version", String(40), nullable=False),
    Column("summary", JSONText),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("run_id", String(200), _run_fk(), primary_key=True),
    Column("bar", BigInteger, nullable=False),
    Column("timestamp", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

decisions = Table(
    "decisions",
    metadata,
    Column("run_id", String(200), _run_fk(), primary_key=True),
    Column("subaccount", String(100), primary_key=True),
    Column("decision_id", BigInteger, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("bar", BigInteger),
    Column("timestamp", UTCDateTime),
    Column("action", String(100)),
    Column("reasons", JSONText),
    Column("record", JSONText, nullable=False),
    Index("ix_decisions_run_seq", "run_id", "seq"),
    Index("ix_decisions_run_bar", "run_id", "bar"),
)

orders = Table(
    "orders",
    metadata,
    Column("client_order_id", String(36), primary_key=True),
    Column("run_id", String(200), _run_fk(), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("bar", BigInteger),
    Column("subaccount", String(100), nullable=False),
    Column("decision_id", BigInteger),
    Column("leg", Integer, nullable=False),
    Column("timestamp", UTCDateTime),
    Column("order_id", BigInteger),
    Column("exchange_order_id", String(100)),
    Column("status", String(20), nullable=False),
    Column("symbol", String(60), nullable=False),
    Column("side", String(4), nullable=False),
    Column("type", String(10), nullable=False),
    Column("quantity", ExactDecimal),
    Column("quote_quantity", ExactDecimal),
    Column("limit_price", ExactDecimal),
    Column("time_in_force", String(20)),
    Column("expires_at", UTCDateTime),
    Column("reduce_only", Boolean, nullable=False),
    Column("leverage", ExactDecimal),
    Column("filled_quantity", ExactDecimal),
    Column("reason", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_orders_run_seq", "run_id", "seq"),
    Index("ix_orders_run_bar", "run_id", "bar"),
)

fills = Table(
    "fills",
    metadata,
    Column("fill_id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), _run_fk(), nullable=False),
    Column("bar", BigInteger),
    Column("client_order_id", String(36)),
    Column("trade_id", String(100)),
    Column("subaccount", String(100), nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("symbol", String(60), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", ExactDecimal, nullable=False),
    Column("price", ExactDecimal, nullable=False),
    Column("fee", ExactDecimal, nullable=False),
    Column("fee_currency", String(20), nullable=False),
    Column("liquidity", String(10)),
    Column("reason", Text),
    UniqueConstraint("run_id", "trade_id", name="uq_fills_run_trade"),
    Index("ix_fills_run_bar", "run_id", "bar"),
    Index("ix_fills_order", "client_order_id"),
)

balances = Table(
    "balances",
    metadata,
    Column("run_id", String(200), _run_fk(), primary_key=True),
    Column("subaccount", String(100), primary_key=True),
    Column("bar", BigInteger, primary_key=True),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("equity", ExactDecimal, nullable=False),
    Column("cash", ExactDecimal, nullable=False),
    Column("positions", JSONText),
)

transfers = Table(
    "transfers",
    metadata,
    Column("transfer_id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), _run_fk(), nullable=False),
    Column("bar", BigInteger),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("source", String(100), nullable=False),
    Column("target", String(100), nullable=False),
    Column("amount", ExactDecimal, nullable=False),
    Column("status", String(20), nullable=False),
    Column("reason", Text),
    Column("guard", JSONText),
    Index("ix_transfers_run_bar", "run_id", "bar"),
)

breaker_changes = Table(
    "breaker_changes",
    metadata,
    Column("change_id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), _run_fk(), nullable=False),
    Column("bar", BigInteger),
    Column("at", UTCDateTime, nullable=False),
    Column("scope", String(100), nullable=False),
    Column("old", String(20), nullable=False),
    Column("new", String(20), nullable=False),
    Column("trigger", String(200), nullable=False),
    Column("message", Text),
    Column("values", JSONText),
    Column("by", String(200)),
    Index("ix_breaker_changes_run_bar", "run_id", "bar"),
)

overrides = Table(
    "overrides",
    metadata,
    Column("override_id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), _run_fk(), nullable=False),
    Column("bar", BigInteger),
    Column("at", UTCDateTime, nullable=False),
    Column("scope", String(100), nullable=False),
    Column("key", String(100), nullable=False),
    Column("old", JSONText),
    Column("new", JSONText),
    Column("by", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_overrides_run_bar", "run_id", "bar"),
)

component_state = Table(
    "component_state",
    metadata,
    Column("run_id", String(200), _run_fk(), primary_key=True),
    Column("component", String(200), primary_key=True),
    Column("bar", BigInteger),
    Column("version", Integer, nullable=False),
    Column("state", JSONText, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# --- the runner's tables (migration 0002) -------------------------------------------------
# Ids that a person reads and types (proposals, commands) are never reused, not even after a
# rewind deleted the newest rows: SQLite's AUTOINCREMENT, PostgreSQL's sequences. An
# "approve 7" written for a proposal that a rewind removed must not approve a new one.

proposals = Table(
    "proposals",
    metadata,
    Column("proposal_id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), _run_fk(), nullable=False),
    Column("bar", BigInteger),
    Column("subaccount", String(100), nullable=False),
    Column("decision_id", BigInteger),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("status", String(20), nullable=False),
    Column("source", String(40), nullable=False),
    Column("summary", Text),
    Column("reasons", JSONText),
    Column("decided_by", String(200)),
    Column("decided_at", UTCDateTime),
    Column("note", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Migration 0005: ``orders`` (legs) or ``transfer`` (no legs; ``transfer`` holds the
    # source, target, amount asked in USDT, reason, who asked and the transfer's id).
    Column("kind", String(20), nullable=False, server_default="orders"),
    Column("transfer", JSONText),
    Index("ix_proposals_run_status", "run_id", "status"),
    Index("ix_proposals_run_bar", "run_id", "bar"),
    sqlite_autoincrement=True,
)

#: A proposal's legs: one order each, money exact. ``bar`` is the proposal's (rewind).
proposal_legs = Table(
    "proposal_legs",
    metadata,
    Column(
        "proposal_id",
        Integer,
        ForeignKey("proposals.proposal_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("leg", Integer, primary_key=True),
    Column("run_id", String(200), _run_fk(), nullable=False),
    Column("bar", BigInteger),
    Column("symbol", String(60), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", ExactDecimal),
    Column("quote_quantity", ExactDecimal),
    Column("planned_price", ExactDecimal),
    Column("band_low", ExactDecimal),
    Column("band_high", ExactDecimal),
    Column("notional", ExactDecimal),
    Column("reason", Text),
    Column("status", String(20), nullable=False),
    Column("client_order_id", String(36)),
    Column("extra", JSONText),
    Index("ix_proposal_legs_run_bar", "run_id", "bar"),
)

commands = Table(
    "commands",
    metadata,
    Column("command_id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), _run_fk(), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("subaccount", String(100)),
    Column("args", JSONText),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("outcome", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("applied_at", UTCDateTime),
    Column("applied_bar", BigInteger),
    Column("applied_timestamp", UTCDateTime),
    Index("ix_commands_run_status", "run_id", "status"),
    sqlite_autoincrement=True,
)

alerts = Table(
    "alerts",
    metadata,
    Column("alert_id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), _run_fk(), nullable=False),
    Column("bar", BigInteger),
    Column("rule", String(100), nullable=False),
    Column("key", String(300), nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("severity", String(10), nullable=False),
    Column("subaccount", String(100)),
    Column("title", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("numbers", JSONText),
    Column("action", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_alerts_run_key", "run_id", "key"),
    sqlite_autoincrement=True,
)

#: One delivery of an alert to one target, by the target's name (its URL is a secret).
outbox = Table(
    "outbox",
    metadata,
    Column("delivery_id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", Integer, ForeignKey("alerts.alert_id", ondelete="CASCADE"), nullable=False),
    Column("run_id", String(200), _run_fk(), nullable=False),
    Column("target", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    Index("ix_outbox_status_next", "status", "next_attempt_at"),
    Index("ix_outbox_run", "run_id"),
    sqlite_autoincrement=True,
)

reviews = Table(
    "reviews",
    metadata,
    Column("run_id", String(200), _run_fk(), primary_key=True),
    Column("subaccount", String(100), primary_key=True),
    Column("bar", BigInteger, primary_key=True),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("payload", JSONText, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

heartbeats = Table(
    "heartbeats",
    metadata,
    Column("run_id", String(200), _run_fk(), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("info", JSONText, nullable=False),
)

#: The API's users (migration 0003): not of a run. ``password_hash`` is scrypt's, salted
#: (``scrypt$n$r$p$salt$hash``, hex); the password itself is never stored.
api_users = Table(
    "api_users",
    metadata,
    Column("username", String(100), primary_key=True),
    Column("role", String(20), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

#: Refresh tokens of the API that were used (migration 0004): a jti here is refused,
#: also after a restart. Rows past ``expires_at`` (UTC) are pruned (the token is
#: refused as expired anyway).
api_refresh_used = Table(
    "api_refresh_used",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("username", String(100), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
    Column("used_at", UTCDateTime, nullable=False),
)

#: Tables whose rows belong to a bar of a run (``Store.rewind`` removes the later ones),
#: children before their parents. Commands, alerts, the outbox and heartbeats are not
#: among them: a human act and an alert sent are never undone by a rewind.
BAR_TABLES = (
    decisions,
    orders,
    fills,
    balances,
    transfers,
    breaker_changes,
    overrides,
    proposal_legs,
    proposals,
    reviews,
)
#: Tables of a run that no rewind touches (``Store.delete_run`` removes them), children first.
RUN_TABLES = (outbox, alerts, commands, heartbeats)
