"""The delivery ledger: one row per (instance, step) message, consulted before anything is sent.

It is what makes delivery at most once across worker crashes. A row is `claimed` before anything
is sent, moves to `sending` just before the message is handed over (SMTP DATA, the outbox write)
and to `sent` after. A retry that finds `claimed` knows the earlier attempt died before handing
anything over, and sends. One that finds `sent` does nothing. One that finds `sending` knows an
earlier attempt died mid-hand-over and, since the server may already hold the message, does not
send it again (`in_doubt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, Index, String, Table, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Mapped, mapped_column

from campaign_engine.store import Base, Store, utcnow


class DeliveryState(StrEnum):
    """A ledger row's state (`deliveries.state`), in the order a message goes through them."""

    CLAIMED = "claimed"
    """An attempt owns the message and has handed nothing over yet."""
    SENDING = "sending"
    """The message is being handed over; left so if that attempt died mid-hand-over."""
    SENT = "sent"
    """Handed over and accepted: never sent again."""
    IN_DOUBT = "in_doubt"
    """A later attempt found it `sending`: the server may hold it, so it is not sent again."""


class Delivery(Base):
    """One message's ledger row (table `deliveries`), keyed by its Message-ID, angle brackets
    included; `state` is a `DeliveryState` value, the times aware UTC."""

    __tablename__ = "deliveries"
    __table_args__ = (
        # Created by migration 0005; declared here so that models and migrations agree.
        Index("ix_deliveries_account_group_campaign", "account_group_id", "campaign_id"),
        Index("ix_deliveries_bounce_token", "bounce_token", unique=True),
    )

    message_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(200))
    step_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    account_group_id: Mapped[str | None] = mapped_column(String(24))
    """The instance's account group, from its workflow id (what inbound matching scopes by)."""
    campaign_id: Mapped[str | None] = mapped_column(String(24))
    """The instance's campaign, from its workflow id (what campaign stats count by)."""
    bounce_token: Mapped[str | None] = mapped_column(String(32))
    """The message's VERP token (`campaign_engine.verp`), unique: a bounce sent to
    `bounces+TOKEN@…` finds its message here. None for rows written before migration 0005."""


_TABLE: Table = Delivery.__table__  # type: ignore[assignment]  # a declarative class's Table
"""The ledger's table, for Core statements: the ORM's per-statement bookkeeping cost ~1.6 ms of
CPU per delivery that nothing here needs (docs/performance-history.md)."""


class Claim(StrEnum):
    """What `DeliveryLedger.claim` found: whether this attempt may send."""

    CLAIMED = "claimed"
    """Nobody handed it over yet: send now (after `hand_over`)."""
    ALREADY_SENT = "already_sent"
    """An earlier attempt sent it: not sent again."""
    IN_DOUBT = "in_doubt"
    """An earlier attempt died while sending; the server may have it. Not sent again."""


class DeliveryLedger:
    """The ledger's operations, each one transaction on the store, keyed by Message-ID
    (`activities.campaign.message_id_for`); database errors are raised as SQLAlchemy's."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def claim(
        self, message_id: str, workflow_id: str, step_id: str, *, bounce_token: str | None = None
    ) -> Claim:
        """Claims the message for this attempt before anything is sent, and says what to do.

        `bounce_token` is the message's VERP token (`campaign_engine.verp.bounce_token`), kept
        so that a bounce addressed to it finds the message; the account group and campaign are
        read from `workflow_id` (`ids.workflow_id_for`).

        A new or `claimed` row is this attempt's to send (`CLAIMED`); a `sent` one is done
        (`ALREADY_SENT`); a `sending` or `in_doubt` one becomes `in_doubt` (`IN_DOUBT`). Losing
        the race to insert the row is `IN_DOUBT` too: the winner is sending.
        """
        now = utcnow()
        try:
            async with self._store.transaction() as connection:
                state = await connection.scalar(
                    select(_TABLE.c.state)
                    .where(_TABLE.c.message_id == message_id)
                    .with_for_update()
                )
                if state is None:
                    parts = workflow_id.split(":")
                    await connection.execute(
                        insert(_TABLE).values(
                            message_id=message_id,
                            workflow_id=workflow_id,
                            step_id=step_id,
                            state=DeliveryState.CLAIMED.value,
                            created_at=now,
                            updated_at=now,
                            account_group_id=parts[1] if len(parts) == 4 else None,
                            campaign_id=parts[2] if len(parts) == 4 else None,
                            bounce_token=bounce_token,
                        )
                    )
                    return Claim.CLAIMED
                if state == DeliveryState.SENT:
                    return Claim.ALREADY_SENT
                if state == DeliveryState.CLAIMED:
                    await self._set_state(connection, message_id, DeliveryState.CLAIMED, now)
                    return Claim.CLAIMED
                await self._set_state(connection, message_id, DeliveryState.IN_DOUBT, now)
                return Claim.IN_DOUBT
        except IntegrityError:
            # Another attempt inserted the row between our read and write: it is sending.
            return Claim.IN_DOUBT

    @staticmethod
    async def _set_state(
        connection: AsyncConnection, message_id: str, state: DeliveryState, now: datetime
    ) -> None:
        await connection.execute(
            update(_TABLE)
            .where(_TABLE.c.message_id == message_id)
            .values(state=state.value, updated_at=now)
        )

    async def hand_over(self, message_id: str) -> bool:
        """Moves a claim to `sending`, right before the message leaves; False if another attempt
        did so first (a stale attempt still alive): then this one must not send."""
        async with self._store.transaction() as connection:
            result = await connection.execute(
                update(_TABLE)
                .where(
                    _TABLE.c.message_id == message_id,
                    _TABLE.c.state == DeliveryState.CLAIMED.value,
                )
                .values(state=DeliveryState.SENDING.value, updated_at=utcnow())
            )
            return result.rowcount == 1

    async def mark_sent(self, message_id: str) -> None:
        """Records the message as `sent`, once the server (or the outbox) has accepted it."""
        async with self._store.transaction() as connection:
            await self._set_state(connection, message_id, DeliveryState.SENT, utcnow())

    async def release(self, message_id: str) -> None:
        """Drops a claim whose send certainly failed (refused, never connected): retry may send."""
        async with self._store.transaction() as connection:
            await connection.execute(
                delete(_TABLE).where(
                    _TABLE.c.message_id == message_id,
                    _TABLE.c.state.in_([DeliveryState.CLAIMED.value, DeliveryState.SENDING.value]),
                )
            )

    async def state(self, message_id: str) -> DeliveryState | None:
        """The message's state, or None when it has no row (never claimed, or released)."""
        async with self._store.session() as session:
            row = await session.get(Delivery, message_id)
            return None if row is None else DeliveryState(row.state)


@dataclass(frozen=True)
class SentMessage:
    """A message of ours as the ledger knows it: what an inbound message is matched against."""

    message_id: str
    workflow_id: str
    account_group_id: str
    campaign_id: str
    workflow_instance_id: str
    step_id: str
    state: DeliveryState


async def find_sent(
    store: Store, *, message_ids: Sequence[str] = (), bounce_token: str | None = None
) -> list[SentMessage]:
    """The ledger's messages among `message_ids` (Message-IDs with angle brackets) or with this
    `bounce_token`, in no particular order; rows that were only claimed and released are gone
    and never found. At most 64 ids are looked up (the caller passes the most relevant first).
    """
    conditions: list[ColumnElement[bool]] = []
    if message_ids:
        conditions.append(_TABLE.c.message_id.in_(list(message_ids)[:64]))
    if bounce_token is not None:
        conditions.append(_TABLE.c.bounce_token == bounce_token)
    if not conditions:
        return []
    query = select(
        _TABLE.c.message_id, _TABLE.c.workflow_id, _TABLE.c.step_id, _TABLE.c.state
    ).where(or_(*conditions))
    async with store.transaction() as connection:
        rows = (await connection.execute(query)).all()
    found: list[SentMessage] = []
    for message_id, workflow_id, step_id, state in rows:
        parts = workflow_id.split(":")
        if len(parts) != 4 or parts[0] != "campaign":
            continue
        found.append(
            SentMessage(
                message_id, workflow_id, parts[1], parts[2], parts[3], step_id, DeliveryState(state)
            )
        )
    return found
