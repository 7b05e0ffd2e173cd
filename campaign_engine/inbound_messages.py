"""The inbound message log: each classified inbound message once per source scope.

It is what makes the inbound pipeline exactly once: a message is identified by
`inbound_message_id` (a digest of its Message-ID and sender, else of its bytes) within its
`scope` (`account-group:{id}` for the HTTP source, `mailbox:{address}` for an IMAP mailbox);
the row is written after its effects, and a message found here answers what it answered the
first time and applies nothing again. Campaign stats count replies, bounces and complaints from
it. No address and no text of the message is kept: the lead's address only as a keyed hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Table, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from campaign_engine.store import Base, Store


class InboundMessageRow(Base):
    """One classified inbound message (table `inbound_messages`)."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        # Created by migration 0005; declared here so that models and migrations agree.
        Index("ix_inbound_messages_account_group_campaign", "account_group_id", "campaign_id"),
        Index(
            "ix_inbound_messages_account_group_email_hash",
            "account_group_id",
            "email_hash",
            "received_at",
        ),
    )

    scope: Mapped[str] = mapped_column(String(360), primary_key=True)
    """`account-group:{id}` (HTTP) or `mailbox:{address}` (IMAP)."""
    inbound_message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    """`http`, `imap` or `smtp` (a permanent failure answered at send time)."""
    classification: Mapped[str] = mapped_column(String(16))
    """An `inbound.classification.Kind` value."""
    evidence: Mapped[dict[str, Any]]
    """What decided the classification and the match (no address in it)."""
    action: Mapped[str] = mapped_column(String(32))
    """What the pipeline did (`inbound.pipeline.Action`)."""
    account_group_id: Mapped[str | None] = mapped_column(String(24))
    campaign_id: Mapped[str | None] = mapped_column(String(24))
    workflow_instance_id: Mapped[str | None] = mapped_column(String(24))
    lead_id: Mapped[str | None] = mapped_column(String(24))
    step_id: Mapped[str | None] = mapped_column(String(64))
    """The step whose message it answers, when it was matched to one."""
    matched_by: Mapped[str | None] = mapped_column(String(32))
    """How it was matched (`inbound.matching.MatchedBy`); None when it matched nothing."""
    email_hash: Mapped[str | None] = mapped_column(String(64))
    """The lead's address, keyed: what soft bounces are counted by."""
    received_at: Mapped[datetime]
    created_at: Mapped[datetime]


_TABLE: Table = InboundMessageRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class CampaignCounts:
    """Inbound messages of one campaign: `{classification: {step_id: count}}`; messages matched
    to an instance but to no step count under the step id `""`."""

    by_classification: dict[str, dict[str, int]]


class InboundMessages:
    """The log's operations, each one transaction on the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, scope: str, inbound_message_id: str) -> InboundMessageRow | None:
        """The row of this message in this scope, or None when it was never applied."""
        async with self._store.session() as session:
            return await session.get(InboundMessageRow, (scope, inbound_message_id))

    async def add(self, row: InboundMessageRow) -> tuple[InboundMessageRow, bool]:
        """Inserts the row unless the message is logged already; returns the row that holds (the
        first) and whether it was inserted now."""
        try:
            async with self._store.session() as session:
                session.add(row)
            return row, True
        except IntegrityError:
            existing = await self.get(row.scope, row.inbound_message_id)
            if existing is None:  # pragma: no cover - deleted between the two statements
                raise
            return existing, False

    async def count_since(
        self, account_group_id: str, email_hash: str, classification: str, since: datetime
    ) -> int:
        """How many messages of this classification about this address the account group
        logged since `since` (aware), over every scope."""
        async with self._store.transaction() as connection:
            counted = await connection.scalar(
                select(func.count())
                .select_from(_TABLE)
                .where(
                    _TABLE.c.account_group_id == account_group_id,
                    _TABLE.c.email_hash == email_hash,
                    _TABLE.c.classification == classification,
                    _TABLE.c.received_at >= since,
                )
            )
        return int(counted or 0)

    async def campaign_counts(self, account_group_id: str, campaign_id: str) -> CampaignCounts:
        """Matched inbound messages of one campaign, by classification and step. A lead counted
        once per classification and step: two replies of one lead to one step are one reply."""
        query = (
            select(
                _TABLE.c.classification,
                _TABLE.c.step_id,
                func.count(func.distinct(_TABLE.c.lead_id)),
            )
            .where(
                _TABLE.c.account_group_id == account_group_id,
                _TABLE.c.campaign_id == campaign_id,
            )
            .group_by(_TABLE.c.classification, _TABLE.c.step_id)
        )
        async with self._store.transaction() as connection:
            rows = (await connection.execute(query)).all()
        counts: dict[str, dict[str, int]] = {}
        for classification, step_id, count in rows:
            counts.setdefault(classification, {})[step_id or ""] = int(count)
        return CampaignCounts(counts)


__all__ = ["CampaignCounts", "InboundMessageRow", "InboundMessages"]
