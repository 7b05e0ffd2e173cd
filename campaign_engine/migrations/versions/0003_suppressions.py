"""Suppressions: leads that unsubscribed, per account group (no e-mail address in clear).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Creates `suppressions` (key: account group id, lead id) and its index on (account group id,
    email hash)."""
    op.create_table(
        "suppressions",
        sa.Column("account_group_id", sa.String(24), primary_key=True),
        sa.Column("lead_id", sa.String(24), primary_key=True),
        sa.Column("email_hash", sa.String(64), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("decided_by", sa.String(128), nullable=False),
        sa.Column("note", sa.String(1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_suppressions_account_group_email_hash",
        "suppressions",
        ["account_group_id", "email_hash"],
    )


def downgrade() -> None:
    """Drops the `suppressions` index and table, and every suppression with them."""
    op.drop_index("ix_suppressions_account_group_email_hash", table_name="suppressions")
    op.drop_table("suppressions")
