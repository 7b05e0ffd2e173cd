"""Webhook secrets sealed at rest: each clear `webhook.secret` becomes `webhook.sealedSecret`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import context, op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Seals every clear webhook secret of `campaigns` under the payload key ring
    (`campaign_engine.webhook_secrets`), when the opening process handed one over
    (`Store.open(..., webhook_secrets=...)`: the API and the worker do). Without it (a CLI
    command opened the database first) nothing changes here: clear secrets stay readable, and
    the next API or worker start seals them in its `Store.open`. No schema change: the secret
    stays in the definition's JSON, sealed."""
    webhook_secrets = context.config.attributes.get("webhook_secrets")
    if webhook_secrets is not None:
        webhook_secrets.seal_stored(op.get_bind())


def downgrade() -> None:
    """Nothing to undo in the schema. Sealed secrets stay sealed: the code before 0006 reads
    only a clear `secret`, so after a downgrade each webhook needs its secret PUT again."""
