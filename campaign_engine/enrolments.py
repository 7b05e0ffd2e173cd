"""Who is enrolled where: one row per (account group, campaign, lead), written at enrolment.

The inbound pipeline reads it to find a lead's instances from an address (a reply whose
threading headers were rewritten, a bounce that returned nothing of the original), and the
campaign stats count enrolments from it. Addresses are never stored: only their keyed hashes
(`unsubscribe.email_hash`, `unsubscribe.domain_hash`), as the suppression list keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Index, String, Table, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from campaign_engine.store import Base, Store, utcnow


class Enrolment(Base):
    """One enrolled lead (table `enrolments`); the hashes are 32 hex characters."""

    __tablename__ = "enrolments"
    __table_args__ = (
        # Created by migration 0005; declared here so that models and migrations agree.
        Index("ix_enrolments_account_group_email_hash", "account_group_id", "email_hash"),
        Index("ix_enrolments_account_group_domain_hash", "account_group_id", "domain_hash"),
        Index("ix_enrolments_email_hash", "email_hash"),
    )

    account_group_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    lead_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    workflow_instance_id: Mapped[str] = mapped_column(String(24))
    email_hash: Mapped[str] = mapped_column(String(64))
    """The lead's address, keyed (`unsubscribe.email_hash`)."""
    domain_hash: Mapped[str] = mapped_column(String(64))
    """The domain of the lead's address, keyed (`unsubscribe.domain_hash`)."""
    mailbox: Mapped[str | None] = mapped_column(String(320))
    """The address the campaign sent from at enrolment, lower case (None: the deployment's
    sender); an IMAP mailbox matches only the leads its own campaigns mail."""
    created_at: Mapped[datetime]


_TABLE: Table = Enrolment.__table__  # type: ignore[assignment]  # a declarative class's Table


@dataclass(frozen=True)
class EnrolmentRow:
    """One enrolment to record with `Enrolments.record_many` (the campaign is the call's)."""

    lead_id: str
    workflow_instance_id: str
    email_hash: str
    domain_hash: str
    mailbox: str | None


@dataclass(frozen=True)
class EnrolledLead:
    """An enrolment, copied out of its row."""

    account_group_id: str
    campaign_id: str
    lead_id: str
    workflow_instance_id: str
    email_hash: str
    mailbox: str | None
    created_at: datetime


class Enrolments:
    """The enrolment table's operations, each one transaction on the store; database errors are
    raised as SQLAlchemy's."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def record(
        self,
        *,
        account_group_id: str,
        campaign_id: str,
        lead_id: str,
        workflow_instance_id: str,
        email_hash: str,
        domain_hash: str,
        mailbox: str | None,
    ) -> None:
        """Records an enrolment; a second one of the same lead and campaign keeps the first row
        (enrolment is idempotent and the instance id is derived from these ids)."""
        try:
            async with self._store.transaction() as connection:
                await connection.execute(
                    insert(_TABLE).values(
                        account_group_id=account_group_id,
                        campaign_id=campaign_id,
                        lead_id=lead_id,
                        workflow_instance_id=workflow_instance_id,
                        email_hash=email_hash,
                        domain_hash=domain_hash,
                        mailbox=mailbox.lower() if mailbox else None,
                        created_at=utcnow(),
                    )
                )
        except IntegrityError:
            return

    async def record_many(
        self, account_group_id: str, campaign_id: str, rows: Sequence[EnrolmentRow]
    ) -> None:
        """Records the enrolments of one campaign in as few statements as it can: the rows not
        there yet, in one insert per 500; a row recorded meanwhile by a concurrent enrolment
        sends that chunk through `record` one row at a time (the first row keeps)."""
        chunk = 500
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            async with self._store.transaction() as connection:
                existing = set(
                    (
                        await connection.execute(
                            select(_TABLE.c.lead_id).where(
                                _TABLE.c.account_group_id == account_group_id,
                                _TABLE.c.campaign_id == campaign_id,
                                _TABLE.c.lead_id.in_([row.lead_id for row in part]),
                            )
                        )
                    ).scalars()
                )
            fresh = {row.lead_id: row for row in part if row.lead_id not in existing}
            if not fresh:
                continue
            now = utcnow()
            values = [
                {
                    "account_group_id": account_group_id,
                    "campaign_id": campaign_id,
                    "lead_id": row.lead_id,
                    "workflow_instance_id": row.workflow_instance_id,
                    "email_hash": row.email_hash,
                    "domain_hash": row.domain_hash,
                    "mailbox": row.mailbox.lower() if row.mailbox else None,
                    "created_at": now,
                }
                for row in fresh.values()
            ]
            try:
                async with self._store.transaction() as connection:
                    await connection.execute(insert(_TABLE), values)
            except IntegrityError:
                for row in fresh.values():
                    await self.record(
                        account_group_id=account_group_id,
                        campaign_id=campaign_id,
                        lead_id=row.lead_id,
                        workflow_instance_id=row.workflow_instance_id,
                        email_hash=row.email_hash,
                        domain_hash=row.domain_hash,
                        mailbox=row.mailbox,
                    )

    async def find(
        self,
        *,
        account_group_id: str | None = None,
        email_hash: str | None = None,
        domain_hash: str | None = None,
        lead_id: str | None = None,
        campaign_id: str | None = None,
        workflow_instance_id: str | None = None,
        limit: int = 1000,
    ) -> list[EnrolledLead]:
        """Enrolments matching every condition given, newest first, at most `limit`. At least
        one of `email_hash`, `domain_hash`, `lead_id`, `workflow_instance_id` must be given
        (`ValueError` else): this is a lookup, never a scan of every tenant's leads."""
        if (email_hash, domain_hash, lead_id, workflow_instance_id) == (None, None, None, None):
            raise ValueError("give an email_hash, a domain_hash, a lead_id or an instance id")
        query = select(
            _TABLE.c.account_group_id,
            _TABLE.c.campaign_id,
            _TABLE.c.lead_id,
            _TABLE.c.workflow_instance_id,
            _TABLE.c.email_hash,
            _TABLE.c.mailbox,
            _TABLE.c.created_at,
        )
        if account_group_id is not None:
            query = query.where(_TABLE.c.account_group_id == account_group_id)
        if email_hash is not None:
            query = query.where(_TABLE.c.email_hash == email_hash)
        if domain_hash is not None:
            query = query.where(_TABLE.c.domain_hash == domain_hash)
        if lead_id is not None:
            query = query.where(_TABLE.c.lead_id == lead_id)
        if campaign_id is not None:
            query = query.where(_TABLE.c.campaign_id == campaign_id)
        if workflow_instance_id is not None:
            query = query.where(_TABLE.c.workflow_instance_id == workflow_instance_id)
        query = query.order_by(_TABLE.c.created_at.desc()).limit(limit)
        async with self._store.transaction() as connection:
            rows = (await connection.execute(query)).all()
        return [EnrolledLead(*row) for row in rows]

    async def count(self, account_group_id: str, campaign_id: str) -> int:
        """How many leads were ever enrolled in the campaign."""
        async with self._store.transaction() as connection:
            counted = await connection.scalar(
                select(func.count())
                .select_from(_TABLE)
                .where(
                    _TABLE.c.account_group_id == account_group_id,
                    _TABLE.c.campaign_id == campaign_id,
                )
            )
        return int(counted or 0)
