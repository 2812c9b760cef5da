"""The runner's tables: proposals and their legs, commands, alerts and their outbox, reviews, heartbeats

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trimtab.journal.models import ExactDecimal, JSONText, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _run_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE")


def upgrade() -> None:
    # sqlite_autoincrement: ids a person types are never reused after the newest rows
    # were deleted (a rewind), as PostgreSQL's sequences never reuse them.
    op.create_table(
        "proposals",
        sa.Column("proposal_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("bar", sa.BigInteger(), nullable=True),
        sa.Column("subaccount", sa.String(length=100), nullable=False),
        sa.Column("decision_id", sa.BigInteger(), nullable=True),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("reasons", JSONText(), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        _run_fk(),
        sa.PrimaryKeyConstraint("proposal_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_proposals_run_status", "proposals", ["run_id", "status"])
    op.create_index("ix_proposals_run_bar", "proposals", ["run_id", "bar"])

    op.create_table(
        "proposal_legs",
        sa.Column("proposal_id", sa.Integer(), nullable=False),
        sa.Column("leg", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("bar", sa.BigInteger(), nullable=True),
        sa.Column("symbol", sa.String(length=60), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("quantity", ExactDecimal(), nullable=True),
        sa.Column("quote_quantity", ExactDecimal(), nullable=True),
        sa.Column("planned_price", ExactDecimal(), nullable=True),
        sa.Column("band_low", ExactDecimal(), nullable=True),
        sa.Column("band_high", ExactDecimal(), nullable=True),
        sa.Column("notional", ExactDecimal(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("client_order_id", sa.String(length=36), nullable=True),
        sa.Column("extra", JSONText(), nullable=True),
        sa.ForeignKeyConstraint(["proposal_id"], ["proposals.proposal_id"], ondelete="CASCADE"),
        _run_fk(),
        sa.PrimaryKeyConstraint("proposal_id", "leg"),
    )
    op.create_index("ix_proposal_legs_run_bar", "proposal_legs", ["run_id", "bar"])

    op.create_table(
        "commands",
        sa.Column("command_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("subaccount", sa.String(length=100), nullable=True),
        sa.Column("args", JSONText(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("applied_at", UTCDateTime(), nullable=True),
        sa.Column("applied_bar", sa.BigInteger(), nullable=True),
        sa.Column("applied_timestamp", UTCDateTime(), nullable=True),
        _run_fk(),
        sa.PrimaryKeyConstraint("command_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_commands_run_status", "commands", ["run_id", "status"])

    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("bar", sa.BigInteger(), nullable=True),
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("subaccount", sa.String(length=100), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("numbers", JSONText(), nullable=True),
        sa.Column("action", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        _run_fk(),
        sa.PrimaryKeyConstraint("alert_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_alerts_run_key", "alerts", ["run_id", "key"])

    op.create_table(
        "outbox",
        sa.Column("delivery_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.alert_id"], ondelete="CASCADE"),
        _run_fk(),
        sa.PrimaryKeyConstraint("delivery_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_outbox_status_next", "outbox", ["status", "next_attempt_at"])
    op.create_index("ix_outbox_run", "outbox", ["run_id"])

    op.create_table(
        "reviews",
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("subaccount", sa.String(length=100), nullable=False),
        sa.Column("bar", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("payload", JSONText(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        _run_fk(),
        sa.PrimaryKeyConstraint("run_id", "subaccount", "bar"),
    )

    op.create_table(
        "heartbeats",
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("info", JSONText(), nullable=False),
        _run_fk(),
        sa.PrimaryKeyConstraint("run_id"),
    )


def downgrade() -> None:
    for table in (
        "heartbeats",
        "reviews",
        "outbox",
        "alerts",
        "commands",
        "proposal_legs",
        "proposals",
    ):
        op.drop_table(table)
