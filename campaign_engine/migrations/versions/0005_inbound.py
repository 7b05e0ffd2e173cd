"""The inbound pipeline's tables: enrolments, inbound messages, bounce tokens, suppression evidence.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Creates `enrolments` (who is enrolled where, by keyed address hash) and `inbound_messages`
    (each classified inbound message once, per source scope); adds `account_group_id`,
    `campaign_id` and `bounce_token` to `deliveries` (existing rows get the ids parsed from their
    workflow id, and no token: their bounces match by returned Message-ID or address), and the
    nullable `evidence` to `suppressions`."""
    op.create_table(
        "enrolments",
        sa.Column("account_group_id", sa.String(24), primary_key=True),
        sa.Column("campaign_id", sa.String(24), primary_key=True),
        sa.Column("lead_id", sa.String(24), primary_key=True),
        sa.Column("workflow_instance_id", sa.String(24), nullable=False),
        sa.Column("email_hash", sa.String(64), nullable=False),
        sa.Column("domain_hash", sa.String(64), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_enrolments_account_group_email_hash", "enrolments", ["account_group_id", "email_hash"]
    )
    op.create_index(
        "ix_enrolments_account_group_domain_hash",
        "enrolments",
        ["account_group_id", "domain_hash"],
    )
    op.create_index("ix_enrolments_email_hash", "enrolments", ["email_hash"])
    op.create_table(
        "inbound_messages",
        sa.Column("scope", sa.String(360), primary_key=True),
        sa.Column("inbound_message_id", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("classification", sa.String(16), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("account_group_id", sa.String(24), nullable=True),
        sa.Column("campaign_id", sa.String(24), nullable=True),
        sa.Column("workflow_instance_id", sa.String(24), nullable=True),
        sa.Column("lead_id", sa.String(24), nullable=True),
        sa.Column("step_id", sa.String(64), nullable=True),
        sa.Column("matched_by", sa.String(32), nullable=True),
        sa.Column("email_hash", sa.String(64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_inbound_messages_account_group_campaign",
        "inbound_messages",
        ["account_group_id", "campaign_id"],
    )
    op.create_index(
        "ix_inbound_messages_account_group_email_hash",
        "inbound_messages",
        ["account_group_id", "email_hash", "received_at"],
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("account_group_id", sa.String(24), nullable=True))
        batch.add_column(sa.Column("campaign_id", sa.String(24), nullable=True))
        batch.add_column(sa.Column("bounce_token", sa.String(32), nullable=True))
    # Workflow ids read `campaign:{ag}:{campaign}:{instance}` (`ids.workflow_id_for`).
    op.execute(
        "UPDATE deliveries SET account_group_id = substr(workflow_id, 10, 24), "
        "campaign_id = substr(workflow_id, 35, 24) WHERE workflow_id LIKE 'campaign:%'"
    )
    op.create_index(
        "ix_deliveries_account_group_campaign", "deliveries", ["account_group_id", "campaign_id"]
    )
    op.create_index("ix_deliveries_bounce_token", "deliveries", ["bounce_token"], unique=True)
    with op.batch_alter_table("suppressions") as batch:
        batch.add_column(sa.Column("evidence", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drops what `upgrade` added: suppressions lose their evidence, deliveries their ids and
    bounce tokens, and the enrolment and inbound message records go."""
    with op.batch_alter_table("suppressions") as batch:
        batch.drop_column("evidence")
    op.drop_index("ix_deliveries_bounce_token", table_name="deliveries")
    op.drop_index("ix_deliveries_account_group_campaign", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("bounce_token")
        batch.drop_column("campaign_id")
        batch.drop_column("account_group_id")
    op.drop_index("ix_inbound_messages_account_group_email_hash", table_name="inbound_messages")
    op.drop_index("ix_inbound_messages_account_group_campaign", table_name="inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_index("ix_enrolments_email_hash", table_name="enrolments")
    op.drop_index("ix_enrolments_account_group_domain_hash", table_name="enrolments")
    op.drop_index("ix_enrolments_account_group_email_hash", table_name="enrolments")
    op.drop_table("enrolments")
