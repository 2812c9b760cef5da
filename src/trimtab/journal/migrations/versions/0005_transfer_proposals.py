"""Transfer proposals: a proposal's kind (orders or transfer) and the transfer it asks for

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trimtab.journal.models import JSONText

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every proposal written before this migration is an order plan: the default says so.
    op.add_column(
        "proposals",
        sa.Column("kind", sa.String(length=20), nullable=False, server_default="orders"),
    )
    op.add_column("proposals", sa.Column("transfer", JSONText(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("proposals") as batch:
        batch.drop_column("transfer")
        batch.drop_column("kind")
