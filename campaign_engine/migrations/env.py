"""Alembic environment: runs on the connection `Store.open` hands over."""

from alembic import context

# Every module that declares tables on `Base`, so that `target_metadata` holds them all (what
# `alembic revision --autogenerate` and the models-vs-migrations test compare against).
from campaign_engine import deliveries, enrolments, inbound_messages, mailboxes  # noqa: F401
from campaign_engine.store import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
