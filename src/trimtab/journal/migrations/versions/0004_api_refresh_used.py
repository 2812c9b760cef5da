"""The API's used refresh tokens: their jti, so that a used one stays refused after a restart

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trimtab.journal.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_refresh_used",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("jti"),
    )
    op.create_index("ix_api_refresh_used_expires_at", "api_refresh_used", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_api_refresh_used_expires_at", table_name="api_refresh_used")
    op.drop_table("api_refresh_used")
