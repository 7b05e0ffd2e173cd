"""Mailbox send reservations, and campaign pauses.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Creates `mailboxes` (the per-mailbox lock rows) and `mailbox_reservations` (send slots,
    `campaign_engine.mailboxes`) with indexes on (mailbox, day) and (mailbox, slot_at); adds the
    nullable `paused_at` and `paused_by` to `campaigns` (every existing campaign runs)."""
    op.create_table(
        "mailboxes",
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mailbox_reservations",
        sa.Column("message_id", sa.String(300), primary_key=True),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("slot_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deferred_because", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_mailbox_reservations_mailbox_day", "mailbox_reservations", ["mailbox", "day"]
    )
    op.create_index(
        "ix_mailbox_reservations_mailbox_slot_at", "mailbox_reservations", ["mailbox", "slot_at"]
    )
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("paused_by", sa.String(128), nullable=True))


def downgrade() -> None:
    """Drops the pause columns (paused campaigns run again) and both mailbox tables, and every
    reservation with them (today's counts restart from zero)."""
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("paused_by")
        batch.drop_column("paused_at")
    op.drop_index("ix_mailbox_reservations_mailbox_slot_at", table_name="mailbox_reservations")
    op.drop_index("ix_mailbox_reservations_mailbox_day", table_name="mailbox_reservations")
    op.drop_table("mailbox_reservations")
    op.drop_table("mailboxes")
