"""Delivery ledger.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Creates `deliveries`, the delivery ledger (`campaign_engine.deliveries.Delivery`)."""
    op.create_table(
        "deliveries",
        sa.Column("message_id", sa.String(300), primary_key=True),
        sa.Column("workflow_id", sa.String(200), nullable=False),
        sa.Column("step_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drops the ledger, and with it the record that keeps a retry from sending a message twice."""
    op.drop_table("deliveries")
