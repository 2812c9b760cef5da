"""The initial schema: runs, decisions, orders, fills, balances, transfers, breaker changes, overrides, component state, checkpoints

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trimtab.journal.models import ExactDecimal, JSONText, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("spec", JSONText(), nullable=False),
        sa.Column("spec_digest", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("trimtab_version", sa.String(length=40), nullable=False),
        sa.Column("summary", JSONText(), nullable=True),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_table(
        "balances",
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("subaccount", sa.String(length=100), nullable=False),
        sa.Column("bar", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("equity", ExactDecimal(), nullable=False),
        sa.Column("cash", ExactDecimal(), nullable=False),
        sa.Column("positions", JSONText(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "subaccount", "bar"),
    )
    op.create_table(
        "breaker_changes",
        sa.Column("change_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("bar", sa.BigInteger(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column("old", sa.String(length=20), nullable=False),
        sa.Column("new", sa.String(length=20), nullable=False),
        sa.Column("trigger", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("values", JSONText(), nullable=True),
        sa.Column("by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("change_id"),
    )
    op.create_index("ix_breaker_changes_run_bar", "breaker_changes", ["run_id", "bar"])

    op.create_table(
        "checkpoints",
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("bar", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_table(
        "component_state",
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("component", sa.String(length=200), nullable=False),
        sa.Column("bar", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", JSONText(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "component"),
    )
    op.create_table(
        "decisions",
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("subaccount", sa.String(length=100), nullable=False),
        sa.Column("decision_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("bar", sa.BigInteger(), nullable=True),
        sa.Column("timestamp", UTCDateTime(), nullable=True),
        sa.Column("action", sa.String(length=100), nullable=True),
        sa.Column("reasons", JSONText(), nullable=True),
        sa.Column("record", JSONText(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "subaccount", "decision_id"),
    )
    op.create_index("ix_decisions_run_bar", "decisions", ["run_id", "bar"])
    op.create_index("ix_decisions_run_seq", "decisions", ["run_id", "seq"])

    op.create_table(
        "fills",
        sa.Column("fill_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("bar", sa.BigInteger(), nullable=True),
        sa.Column("client_order_id", sa.String(length=36), nullable=True),
        sa.Column("trade_id", sa.String(length=100), nullable=True),
        sa.Column("subaccount", sa.String(length=100), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("symbol", sa.String(length=60), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("quantity", ExactDecimal(), nullable=False),
        sa.Column("price", ExactDecimal(), nullable=False),
        sa.Column("fee", ExactDecimal(), nullable=False),
        sa.Column("fee_currency", sa.String(length=20), nullable=False),
        sa.Column("liquidity", sa.String(length=10), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("fill_id"),
        sa.UniqueConstraint("run_id", "trade_id", name="uq_fills_run_trade"),
    )
    op.create_index("ix_fills_order", "fills", ["client_order_id"])
    op.create_index("ix_fills_run_bar", "fills", ["run_id", "bar"])

    op.create_table(
        "orders",
        sa.Column("client_order_id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("bar", sa.BigInteger(), nullable=True),
        sa.Column("subaccount", sa.String(length=100), nullable=False),
        sa.Column("decision_id", sa.BigInteger(), nullable=True),
        sa.Column("leg", sa.Integer(), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=True),
        sa.Column("order_id", sa.BigInteger(), nullable=True),
        sa.Column("exchange_order_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("symbol", sa.String(length=60), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("type", sa.String(length=10), nullable=False),
        sa.Column("quantity", ExactDecimal(), nullable=True),
        sa.Column("quote_quantity", ExactDecimal(), nullable=True),
        sa.Column("limit_price", ExactDecimal(), nullable=True),
        sa.Column("time_in_force", sa.String(length=20), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("reduce_only", sa.Boolean(), nullable=False),
        sa.Column("leverage", ExactDecimal(), nullable=True),
        sa.Column("filled_quantity", ExactDecimal(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("client_order_id"),
    )
    op.create_index("ix_orders_run_bar", "orders", ["run_id", "bar"])
    op.create_index("ix_orders_run_seq", "orders", ["run_id", "seq"])

    op.create_table(
        "overrides",
        sa.Column("override_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("bar", sa.BigInteger(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("old", JSONText(), nullable=True),
        sa.Column("new", JSONText(), nullable=True),
        sa.Column("by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("override_id"),
    )
    op.create_index("ix_overrides_run_bar", "overrides", ["run_id", "bar"])

    op.create_table(
        "transfers",
        sa.Column("transfer_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("bar", sa.BigInteger(), nullable=True),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=100), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("guard", JSONText(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("transfer_id"),
    )
    op.create_index("ix_transfers_run_bar", "transfers", ["run_id", "bar"])


def downgrade() -> None:
    for table in (
        "transfers",
        "overrides",
        "orders",
        "fills",
        "decisions",
        "component_state",
        "checkpoints",
        "breaker_changes",
        "balances",
        "runs",
    ):
        op.drop_table(table)
