"""API keys and campaigns in one SQL database, via SQLAlchemy async.

SQLite (aiosqlite) by default, PostgreSQL (asyncpg) in production; the same code runs on both.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Index,
    String,
    delete,
    event,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from campaign_engine.private_files import prepare_sqlite_file

if TYPE_CHECKING:
    from campaign_engine.webhook_secrets import WebhookSecrets

MIGRATIONS = Path(__file__).with_name("migrations")

# Arbitrary, fixed: every process migrating the same PostgreSQL database takes this advisory lock.
MIGRATION_LOCK_ID = 0x6361_6D70_6169_676E  # "campaign"


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every engine.

    PostgreSQL's timestamptz returns aware values; SQLite keeps no zone and returns naive ones.
    Storing UTC and stamping UTC back on read makes both return the same thing (without it, a
    re-read `createdAt` lost its offset and broke the API's own `date-time` format).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The value in UTC, for writing; raises `ValueError` for a naive datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store keeps aware UTC datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The value read, as an aware UTC datetime (SQLite's naive ones are stamped UTC)."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """The tables' declarative base: `datetime` columns are `UtcDateTime`, dicts are JSON."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: JSON,
    }


class ApiKey(Base):
    """One issued API key (table `api_keys`); `campaign_engine.keys` issues and verifies them.

    `account_groups` and `permissions` are JSON lists of what the key grants; the times are
    aware UTC, `revoked_at` None while the key is valid.
    """

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64))
    """HMAC-SHA256 of the whole key under the pepper; the key itself is never stored."""
    account_groups: Mapped[list[str]] = mapped_column(JSON)
    permissions: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class Campaign(Base):
    """One campaign (table `campaigns`), keyed by account group and campaign id (24 hex each)."""

    __tablename__ = "campaigns"

    account_group_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    definition: Mapped[dict[str, Any]]
    """The campaign as the API accepted it (camelCase JSON)."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    paused_at: Mapped[datetime | None]
    """When it was paused (aware UTC); None while it runs. A PUT replacing it keeps this."""
    paused_by: Mapped[str | None] = mapped_column(String(128))
    """Who paused it (a key id, an operator's name); None while it runs."""


class Suppression(Base):
    """A lead who must not be mailed again in its account group (RFC 8058 one-click, or added
    through the API). The e-mail address is never stored: only its keyed hash
    (`unsubscribe.email_hash`), so a lead enrolled again under another id is still found."""

    __tablename__ = "suppressions"
    __table_args__ = (
        # Created by migration 0003; declared here so that models and migrations agree.
        Index("ix_suppressions_account_group_email_hash", "account_group_id", "email_hash"),
    )

    account_group_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    lead_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    email_hash: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32))
    """`one-click` (the link in a message), `api` (POST .../suppressions), `mailto` (a message
    to our `List-Unsubscribe` address), `bounce` (a hard bounce: a DSN, an SMTP 5xx at send, or
    repeated soft bounces), `complaint` (an ARF feedback report)."""
    decided_by: Mapped[str] = mapped_column(String(128))
    note: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime]
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """What decided an automatic suppression (`inbound.classification.Evidence` as JSON: the
    rule, its source, the DSN's status and diagnostic, the header): no address in it. None for
    suppressions a person or a link made."""


@dataclass(frozen=True)
class CampaignRecord:
    """A stored campaign, copied out of its row: `definition` is the accepted camelCase JSON.

    `paused_at` (aware UTC) and `paused_by` are both set while the campaign is paused, both None
    while it runs (`Store.set_campaign_paused`).
    """

    account_group_id: str
    campaign_id: str
    definition: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    paused_at: datetime | None = None
    paused_by: str | None = None

    @property
    def paused(self) -> bool:
        """True while the campaign is paused: no message of it may be handed over."""
        return self.paused_at is not None


def utcnow() -> datetime:
    """The current time, aware, in UTC: what the store's time columns record."""
    return datetime.now(UTC)


class Store:
    """The store's operations, each one transaction of its own on `engine`.

    Build it with `Store.open(url)`, end it with `close()`. Database errors are SQLAlchemy's,
    raised as they come; `store_unreachable` tells an outage from a bug.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str, *, webhook_secrets: WebhookSecrets | None = None) -> Store:
        """Connects and brings the schema up to date (Alembic migrations).

        Safe when several processes (API replicas, workers, CLI) open one database at once: they
        migrate one after the other, and the later ones find nothing left to do.

        With `webhook_secrets` (the API and the worker pass theirs), webhook secrets still in
        clear are sealed in the same transaction (`WebhookSecrets.seal_stored`): migration 0006
        does it when it runs with a key ring, this catches those it could not.
        """
        engine = create_async_engine(url, **_engine_options(url))
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            sqlite_file = _sqlite_file(url)
            if sqlite_file is None:
                await _migrate(engine, webhook_secrets)
            else:
                # Owner-only: the file, its WAL and its shared memory (private_files).
                prepare_sqlite_file(sqlite_file)
                async with _file_lock(sqlite_file.with_name(f"{sqlite_file.name}.migrate.lock")):
                    await _migrate(engine, webhook_secrets)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def close(self) -> None:
        """Closes the pooled connections (`AsyncEngine.dispose`); call once, at shutdown."""
        await self.engine.dispose()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed on exit, rolled back on error."""
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction on a plain connection, for SQLAlchemy Core statements: committed on
        exit, rolled back on error. A third cheaper in CPU than `session()` for the delivery
        ledger's single-row statements (docs/performance-history.md), which run on every
        delivery."""
        async with self.engine.begin() as connection:
            yield connection

    async def ping(self) -> None:
        """Runs `SELECT 1`: returns when the database answers, raises when it does not."""
        async with self.session() as session:
            await session.execute(select(1))

    # --- API keys -------------------------------------------------------------------------------

    async def add_api_key(self, key: ApiKey) -> None:
        """Inserts a new key row; `IntegrityError` if its key id is taken."""
        async with self.session() as session:
            session.add(key)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        """The key row with this id, revoked or not; None when there is none."""
        async with self.session() as session:
            return await session.get(ApiKey, key_id)

    async def list_api_keys(self) -> list[ApiKey]:
        """Every key row, revoked ones included, oldest first."""
        async with self.session() as session:
            return list((await session.scalars(select(ApiKey).order_by(ApiKey.created_at))).all())

    async def revoke_api_key(self, key_id: str) -> bool:
        """False when no such key exists; revoking twice keeps the first revocation time."""
        async with self.session() as session:
            key = await session.get(ApiKey, key_id)
            if key is None:
                return False
            if key.revoked_at is None:
                key.revoked_at = utcnow()
            return True

    async def touch_api_key(self, key_id: str, when: datetime) -> None:
        """Sets the key's `last_used_at` to `when` (aware); no error for an unknown key."""
        async with self.session() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.key_id == key_id).values(last_used_at=when)
            )

    # --- campaigns ------------------------------------------------------------------------------

    async def put_campaign(
        self, account_group_id: str, campaign_id: str, definition: dict[str, Any]
    ) -> tuple[CampaignRecord, bool]:
        """Creates or replaces a campaign; the flag says whether it was created."""
        try:
            return await self._put_campaign(account_group_id, campaign_id, definition)
        except IntegrityError:
            # Two first PUTs raced: FOR UPDATE cannot lock a row that does not exist yet, so
            # both inserted and the loser hit the primary key. The row exists now: replace it.
            return await self._put_campaign(account_group_id, campaign_id, definition)

    async def _put_campaign(
        self, account_group_id: str, campaign_id: str, definition: dict[str, Any]
    ) -> tuple[CampaignRecord, bool]:
        now = utcnow()
        async with self.session() as session:
            row = await session.get(Campaign, (account_group_id, campaign_id), with_for_update=True)
            created = row is None
            if row is None:
                row = Campaign(
                    account_group_id=account_group_id,
                    campaign_id=campaign_id,
                    definition=definition,
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
            else:
                # Only the definition is replaced: a paused campaign stays paused.
                row.definition = definition
                row.updated_at = now
            return _campaign_record(row), created

    async def get_campaign(self, account_group_id: str, campaign_id: str) -> CampaignRecord | None:
        """The campaign with these ids, or None: the account group is part of its key."""
        async with self.session() as session:
            row = await session.get(Campaign, (account_group_id, campaign_id))
            return None if row is None else _campaign_record(row)

    async def set_campaign_paused(
        self,
        account_group_id: str,
        campaign_id: str,
        *,
        paused_by: str | None,
        at: datetime | None = None,
    ) -> CampaignRecord | None:
        """Pauses (`paused_by` who, e.g. a key id, at most 128 characters) or resumes
        (`paused_by=None`) a campaign; returns the record as it is now, None when the campaign
        does not exist.

        Pausing sets `paused_at` to `at` (aware; default now) unless the campaign is paused
        already: then the first pause's time and author are kept, so a retried pause changes
        nothing. Resuming clears both columns. Raises `ValueError` for a naive `at`.
        """
        if at is not None and at.utcoffset() is None:
            raise ValueError("naive datetime: pause times are aware")
        async with self.session() as session:
            row = await session.get(Campaign, (account_group_id, campaign_id), with_for_update=True)
            if row is None:
                return None
            if paused_by is None:
                row.paused_at = None
                row.paused_by = None
            elif row.paused_at is None:
                row.paused_at = at if at is not None else utcnow()
                row.paused_by = paused_by
            record = _campaign_record(row)
        if record.paused_at is not None:
            # Read back as the store keeps it (UTC) rather than as given.
            record = replace(record, paused_at=record.paused_at.astimezone(UTC))
        return record

    async def campaign_paused(self, account_group_id: str, campaign_id: str) -> bool:
        """True when the campaign is paused; False when it runs or does not exist.

        One primary-key read of one column: cheap enough to run right before every message
        hand-over, so a pause takes effect for the next message whatever its workflow is doing.
        """
        async with self.session() as session:
            paused_at = await session.scalar(
                select(Campaign.paused_at).where(
                    Campaign.account_group_id == account_group_id,
                    Campaign.campaign_id == campaign_id,
                )
            )
            return paused_at is not None

    # --- suppressions ---------------------------------------------------------------------------

    async def add_suppression(self, row: Suppression) -> tuple[Suppression, bool]:
        """Records a suppression unless the lead has one in that account group already; returns
        the row that holds (the first one: a second unsubscribe changes nothing) and whether it
        was created now. Concurrent adds of one lead: one inserts, the others read it."""
        for _ in range(2):
            async with self.session() as session:
                existing = await session.get(Suppression, (row.account_group_id, row.lead_id))
                if existing is not None:
                    return existing, False
            try:
                async with self.session() as session:
                    session.add(row)
                return row, True
            except IntegrityError:
                continue  # another request inserted it between our read and our write
        raise RuntimeError("suppression neither found nor inserted")  # pragma: no cover

    async def suppression_source(
        self, account_group_id: str, lead_id: str, email_hash: str | None
    ) -> str | None:
        """The `source` of the suppression that holds for this lead id, or for this e-mail hash
        under any lead id (`one-click`, `api`, `mailto`, `bounce`, `complaint`); None when the
        lead may be mailed. When several hold, the lead id's own row wins."""
        condition = Suppression.lead_id == lead_id
        if email_hash is not None:
            condition = or_(condition, Suppression.email_hash == email_hash)
        async with self.session() as session:
            found = await session.scalar(
                select(Suppression.source)
                .where(Suppression.account_group_id == account_group_id, condition)
                .order_by((Suppression.lead_id == lead_id).desc())
                .limit(1)
            )
            return found

    async def suppressed_among(
        self, account_group_id: str, lead_ids: Sequence[str], email_hashes: Sequence[str]
    ) -> dict[str, str]:
        """Which of these leads the account group suppressed, in one query per 500 of each:
        `{lead id or e-mail hash: source}` for every given lead id with a suppression, and every
        given hash that a suppression (under any lead id) holds. For batch enrolment."""
        found: dict[str, str] = {}
        chunk = 500
        async with self.session() as session:
            for start in range(0, max(len(lead_ids), len(email_hashes)), chunk):
                ids = list(lead_ids[start : start + chunk])
                hashes = list(email_hashes[start : start + chunk])
                rows = await session.execute(
                    select(Suppression.lead_id, Suppression.email_hash, Suppression.source).where(
                        Suppression.account_group_id == account_group_id,
                        or_(Suppression.lead_id.in_(ids), Suppression.email_hash.in_(hashes)),
                    )
                )
                for lead_id, email_hash, source in rows.all():
                    found.setdefault(lead_id, source)
                    if email_hash is not None:
                        found.setdefault(email_hash, source)
        return found

    async def hand_over_refusal(
        self, account_group_id: str, campaign_id: str, lead_id: str, email_hash: str | None
    ) -> Literal["suppressed", "paused"] | None:
        """What forbids handing a message over right now: `suppressed` (as `suppression_source`),
        else `paused` (as `campaign_paused`), else None. One statement, one round trip: it runs
        right before every hand-over."""
        condition = Suppression.lead_id == lead_id
        if email_hash is not None:
            condition = or_(condition, Suppression.email_hash == email_hash)
        suppressed = (
            select(Suppression.lead_id)
            .where(Suppression.account_group_id == account_group_id, condition)
            .limit(1)
            .exists()
        )
        paused = (
            select(Campaign.paused_at)
            .where(
                Campaign.account_group_id == account_group_id,
                Campaign.campaign_id == campaign_id,
                Campaign.paused_at.is_not(None),
            )
            .exists()
        )
        async with self.transaction() as connection:
            row = (await connection.execute(select(suppressed, paused))).one()
        if row[0]:
            return "suppressed"
        return "paused" if row[1] else None

    async def list_suppressions(self, account_group_id: str | None = None) -> list[Suppression]:
        """Every suppression, oldest first; of one account group when given."""
        query = select(Suppression).order_by(Suppression.created_at)
        if account_group_id is not None:
            query = query.where(Suppression.account_group_id == account_group_id)
        async with self.session() as session:
            return list((await session.scalars(query)).all())

    async def lift_suppression(self, account_group_id: str, lead_id: str) -> bool:
        """Deletes the lead's suppression; False when there was none."""
        async with self.session() as session:
            result = await session.execute(
                delete(Suppression).where(
                    Suppression.account_group_id == account_group_id,
                    Suppression.lead_id == lead_id,
                )
            )
            return bool(getattr(result, "rowcount", 0))


def _campaign_record(row: Campaign) -> CampaignRecord:
    return CampaignRecord(
        row.account_group_id,
        row.campaign_id,
        row.definition,
        row.created_at,
        row.updated_at,
        paused_at=row.paused_at,
        paused_by=row.paused_by,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the CLI writes a key; the busy timeout waits out short locks.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _engine_options(url: str) -> dict[str, Any]:
    if make_url(url).get_backend_name() == "sqlite":
        return {}
    # A pooled connection may have died with a database restart: test it on checkout.
    return {"pool_pre_ping": True}


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other engines and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


@asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    # SQLite has no advisory locks; an flock on a file beside the database serialises the
    # processes of one machine, which are the only ones that can share a SQLite file.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


async def _migrate(engine: AsyncEngine, webhook_secrets: WebhookSecrets | None) -> None:
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Held until this transaction ends; PostgreSQL runs the DDL inside it, so a second
            # process waits here, then reads the schema version the first one committed.
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID}
            )
        await connection.run_sync(_upgrade, webhook_secrets)


def _upgrade(connection: Connection, webhook_secrets: WebhookSecrets | None = None) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    # Migration 0006 seals clear webhook secrets with it; absent, they stay readable in clear.
    config.attributes["webhook_secrets"] = webhook_secrets
    command.upgrade(config, "head")
    if webhook_secrets is not None:
        webhook_secrets.seal_stored(connection)


# SQLite says "cannot reach the database" with these (file missing or unopenable, I/O failure,
# locked past busy_timeout); "no such table" and friends stay bugs (500).
_SQLITE_UNAVAILABLE = {
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_NOTADB,
    sqlite3.SQLITE_READONLY,
}


def store_unreachable(error: BaseException) -> bool:
    """True when a store error means the database is down or unreachable, not that we erred."""
    if isinstance(error, PoolTimeout):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, sqlite3.Error) and cause.sqlite_errorcode in _SQLITE_UNAVAILABLE:
            return True
        # Network drivers (asyncpg and friends) report a refused, dropped or timed-out
        # connection as an OSError (ConnectionError and TimeoutError included).
        if isinstance(cause, OSError):
            return True
        if isinstance(cause, DBAPIError):
            cause = cause.orig
        else:
            cause = cause.__cause__ or cause.__context__
    return False
