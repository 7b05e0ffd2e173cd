"""The delivery ledger: one row per (instance, step) message, consulted before anything is sent.

It is what makes delivery at most once across worker crashes. A row is `claimed` before anything
is sent, moves to `sending` just before the message is handed over (SMTP DATA, the outbox write)
and to `sent` after. A retry that finds `claimed` knows the earlier attempt died before handing
anything over, and sends. One that finds `sent` does nothing. One that finds `sending` knows an
earlier attempt died mid-hand-over and, since the server may already hold the message, does not
send it again (`in_doubt`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import String, Table, delete, insert, select, update
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

    message_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(200))
    step_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


_TABLE: Table = Delivery.__table__  # type: ignore[assignment]  # a declarative class's Table
"""The ledger's table, for Core statements: the ORM's per-statement bookkeeping cost ~1.6 ms of
CPU per delivery that nothing here needs (docs/performance.md)."""


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

    async def claim(self, message_id: str, workflow_id: str, step_id: str) -> Claim:
        """Claims the message for this attempt before anything is sent, and says what to do.

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
                    await connection.execute(
                        insert(_TABLE).values(
                            message_id=message_id,
                            workflow_id=workflow_id,
                            step_id=step_id,
                            state=DeliveryState.CLAIMED.value,
                            created_at=now,
                            updated_at=now,
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
