"""Mailbox send reservations: when each message may leave its sending mailbox.

A campaign names its sending mailbox; a mailbox may have a daily cap (sends per local day of its
time zone) and a minimum spacing between two of its sends. Before a message is handed over, its
workflow reserves a slot: the earliest instant of the send window's open intervals that keeps both
limits. A message over the cap is deferred to the next open window, never failed.

The reservation is one transaction that first writes the mailbox's row in `mailboxes`, which
serialises the reservations of one mailbox across every worker process: on PostgreSQL the updated
row stays locked until commit; on SQLite the write takes the database's write lock before anything
is read (a read first would leave a WAL snapshot that a concurrent writer can make stale,
SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out; and Python's sqlite3 opens the transaction
only at the first write, so reads before it would not even be in it). Reads after the lock see
every committed reservation (PostgreSQL's default READ COMMITTED takes a fresh snapshot per
statement). Without the lock, `tests/test_mailboxes.py` sees 32 sends on a day capped at 3, on
both engines. On SQLite, one database file is one lock for every mailbox: reservations of
different mailboxes wait for each other too (a few ms each).

Rows stay after the message is sent: they are what the day's count is made of. `forget_before`
deletes old ones (housekeeping, not scheduled anywhere yet).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Date, Index, String, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from campaign_engine.deliveries import Delivery, DeliveryState
from campaign_engine.store import Base, Store, utcnow

UTC_ZONE = ZoneInfo("UTC")
"""The default mailbox time zone (ZoneInfo caches zones: this is `ZoneInfo("UTC")` itself)."""


class Mailbox(Base):
    """A sending mailbox's lock row (table `mailboxes`), keyed by its lowercase address.

    Created by the first reservation of the mailbox; every reservation updates `updated_at`
    (aware UTC) first in its transaction, which is what serialises them.
    """

    __tablename__ = "mailboxes"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    updated_at: Mapped[datetime]


class MailboxReservation(Base):
    """One message's send slot (table `mailbox_reservations`), keyed by its Message-ID.

    `day` is the local date of `slot_at` in the mailbox's time zone when it was reserved;
    `slot_at` and `created_at` are aware UTC.
    """

    __tablename__ = "mailbox_reservations"
    __table_args__ = (
        Index("ix_mailbox_reservations_mailbox_day", "mailbox", "day"),
        Index("ix_mailbox_reservations_mailbox_slot_at", "mailbox", "slot_at"),
    )

    message_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(320))
    day: Mapped[date] = mapped_column(Date)
    slot_at: Mapped[datetime]
    deferred_because: Mapped[str | None] = mapped_column(String(32))
    """A `DeferralReason` value, or None: what `reserve` answered, returned unchanged again."""
    created_at: Mapped[datetime]


@dataclass(frozen=True)
class MailboxPolicy:
    """Sending limits of one mailbox (from settings).

    Raises `ValueError` when built with an address that is empty or not lowercase, a negative
    cap or a negative spacing.
    """

    address: str
    """Lowercase addr-spec, the key."""
    daily_cap: int | None = None
    """Sends per local day of `time_zone`; None = no cap (0 = no send at all: `NoSlot`)."""
    minimum_spacing: timedelta = timedelta(0)
    """Between two sends of this mailbox; 0 = none."""
    time_zone: ZoneInfo = UTC_ZONE
    """Where the mailbox's "day" starts and ends (for the cap)."""

    def __post_init__(self) -> None:
        """Checks the limits (see the class)."""
        if not self.address or self.address != self.address.lower():
            raise ValueError(f"mailbox address must be a lowercase addr-spec: {self.address!r}")
        if self.daily_cap is not None and self.daily_cap < 0:
            raise ValueError(f"daily_cap must be >= 0 or None: {self.daily_cap}")
        if self.minimum_spacing < timedelta(0):
            raise ValueError(f"minimum_spacing must be >= 0: {self.minimum_spacing}")


class DeferralReason(StrEnum):
    """Why a reservation's slot is later than the first interval's start."""

    MAILBOX_CAP = "mailbox_cap"
    """That day's cap was full (on at least one day skipped)."""
    MAILBOX_SPACING = "mailbox_spacing"
    """Moved later to keep the minimum spacing from the mailbox's other sends."""


@dataclass(frozen=True)
class Reservation:
    """A message's send slot on its mailbox, as recorded."""

    message_id: str
    mailbox: str
    day: date
    """Local date of `slot_at` in the mailbox's time zone (the day whose cap it counts against)."""
    slot_at: datetime
    """Aware UTC: when the message may be handed over."""
    deferred_because: DeferralReason | None
    """None when `slot_at` is the first interval's start; `MAILBOX_CAP` when a full day was
    skipped, else `MAILBOX_SPACING`. Recorded: `get` and a repeated `reserve` return it too."""


class NoSlot(Exception):
    """No slot in the intervals given (the caller gave too few): nothing was recorded.

    Raised by `MailboxReservations.reserve` when the intervals ran out, or `max_intervals` of
    them were walked, with every instant over the cap or too close to another send.
    """


class MailboxReservations:
    """Reservations of send slots per mailbox, on the store (`mailbox_reservations`).

    Each method is one transaction; database errors are raised as SQLAlchemy's
    (`store_unreachable` tells an outage from a bug).
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def reserve(
        self,
        message_id: str,
        policy: MailboxPolicy,
        intervals: Iterable[tuple[datetime, datetime]],
        *,
        max_intervals: int = 400,
    ) -> Reservation:
        """Reserves the earliest slot for `message_id` on `policy`'s mailbox, or returns the
        reservation it has already (a retried activity must not take a second slot; the policy
        and intervals are then ignored).

        `intervals` are the send window's open intervals `[start, end)` in aware datetimes
        (any zone; UTC is returned), in order, the first starting at the earliest acceptable
        instant; it is read lazily and at most `max_intervals` of it (a generator over every
        future week is fine). Empty intervals are skipped. The slot is the earliest `t` in an
        interval with fewer than `daily_cap` reservations on `t`'s local day and none closer
        than `minimum_spacing` (strictly). The cap counts the reservations whose `slot_at`
        falls in that local day under the policy's current time zone (`count_on` reads the day
        recorded with each row: the same unless the mailbox changed zones). Raises `NoSlot`
        when there is no slot (nothing recorded), `ValueError` for a naive datetime.
        """
        existing = await self.get(message_id)
        if existing is not None:
            return existing
        try:
            async with self._store.session() as session:
                await self._lock_mailbox(session, policy.address)
                # Under the lock: a concurrent call for the same message has committed by now.
                row = await session.get(MailboxReservation, message_id)
                if row is not None:
                    return _reservation(row)
                slot_at, reason = await _find_slot(session, policy, intervals, max_intervals)
                row = MailboxReservation(
                    message_id=message_id,
                    mailbox=policy.address,
                    day=slot_at.astimezone(policy.time_zone).date(),
                    slot_at=slot_at,
                    deferred_because=None if reason is None else reason.value,
                    created_at=utcnow(),
                )
                session.add(row)
                await session.flush()
                return _reservation(row)
        except IntegrityError:
            # The same message reserved at once on another mailbox (another lock): keep theirs.
            existing = await self.get(message_id)
            if existing is None:
                raise
            return existing

    async def get(self, message_id: str) -> Reservation | None:
        """The message's reservation as `reserve` returned it, or None when it has none (never
        reserved, or released)."""
        async with self._store.session() as session:
            row = await session.get(MailboxReservation, message_id)
            return None if row is None else _reservation(row)

    async def release(self, message_id: str) -> bool:
        """Deletes the message's reservation, freeing its slot (e.g. the message will not be
        sent); True when a row was deleted, False when there was none."""
        async with self._store.session() as session:
            result = await session.execute(
                delete(MailboxReservation).where(MailboxReservation.message_id == message_id)
            )
            return bool(getattr(result, "rowcount", 0))

    async def unsent_between(
        self, mailbox: str, low: datetime, high: datetime, *, limit: int = 200
    ) -> list[str]:
        """Message-IDs of the mailbox's reservations with `low <= slot_at < high` (aware) whose
        message has not been handed over (no ledger row, or `claimed`), earliest slot first, at
        most `limit`: the slots a closed execution may have left behind (`release_unsent`)."""
        async with self._store.session() as session:
            rows = await session.scalars(
                select(MailboxReservation.message_id)
                .where(
                    MailboxReservation.mailbox == mailbox,
                    MailboxReservation.slot_at >= low,
                    MailboxReservation.slot_at < high,
                    ~_handed_over(MailboxReservation.message_id),
                )
                .order_by(MailboxReservation.slot_at)
                .limit(limit)
            )
            return list(rows)

    async def release_unsent(self, message_id: str) -> bool:
        """`release`, only while the message has not been handed over (checked in the same
        statement: a send that began meanwhile keeps its slot); True when a row was deleted."""
        async with self._store.session() as session:
            result = await session.execute(
                delete(MailboxReservation).where(
                    MailboxReservation.message_id == message_id,
                    ~_handed_over(MailboxReservation.message_id),
                )
            )
            return bool(getattr(result, "rowcount", 0))

    async def count_on(self, mailbox: str, day: date) -> int:
        """How many reservations the mailbox (lowercase address) holds on `day`, a local date in
        the time zone its policy had when they were made; sent messages' included."""
        async with self._store.session() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(MailboxReservation)
                .where(MailboxReservation.mailbox == mailbox, MailboxReservation.day == day)
            )
            return int(count or 0)

    async def forget_before(self, before: datetime) -> int:
        """Deletes every reservation whose slot is earlier than `before` (aware), of every
        mailbox; returns how many. Housekeeping only, not scheduled anywhere yet: pass an
        instant at least a day (of the widest time zone) back, or today's counts drop."""
        if before.utcoffset() is None:
            raise ValueError("naive datetime: reservations keep aware UTC datetimes")
        async with self._store.session() as session:
            result = await session.execute(
                delete(MailboxReservation).where(MailboxReservation.slot_at < before)
            )
            return int(getattr(result, "rowcount", 0))

    async def _lock_mailbox(self, session: AsyncSession, address: str) -> None:
        # The first statements of the transaction, and writes: see the module's docstring.
        now = utcnow()
        insert: Any = (
            postgresql.insert(Mailbox)
            if self._store.engine.dialect.name == "postgresql"
            else sqlite.insert(Mailbox)
        )
        await session.execute(
            insert.values(address=address, updated_at=now).on_conflict_do_nothing(
                index_elements=["address"]
            )
        )
        await session.execute(
            update(Mailbox).where(Mailbox.address == address).values(updated_at=now)
        )


_HANDED_OVER = (DeliveryState.SENDING.value, DeliveryState.SENT.value, DeliveryState.IN_DOUBT.value)


def _handed_over(message_id: Any) -> Any:
    """The ledger says the message was (or may have been) handed over: its slot is spent."""
    return (
        select(Delivery.message_id)
        .where(Delivery.message_id == message_id, Delivery.state.in_(_HANDED_OVER))
        .exists()
    )


def _reservation(row: MailboxReservation) -> Reservation:
    reason = None if row.deferred_because is None else DeferralReason(row.deferred_because)
    return Reservation(row.message_id, row.mailbox, row.day, row.slot_at.astimezone(UTC), reason)


async def _find_slot(
    session: AsyncSession,
    policy: MailboxPolicy,
    intervals: Iterable[tuple[datetime, datetime]],
    max_intervals: int,
) -> tuple[datetime, DeferralReason | None]:
    """The earliest free instant and why it is later than the first interval's start."""
    zone, cap, spacing = policy.time_zone, policy.daily_cap, policy.minimum_spacing
    first_start: datetime | None = None
    cap_skipped = spacing_moved = False
    walked = 0
    chunk_size = 1
    source = _checked(intervals)
    while walked < max_intervals:
        # Chunks of 1, 2, 4 … 64 intervals, one query each: a free first interval costs one
        # small read; a long deferral does not cost one round trip per interval.
        chunk = list(islice(source, min(chunk_size, max_intervals - walked)))
        if not chunk:
            break
        walked += len(chunk)
        chunk_size = min(chunk_size * 2, 64)
        if first_start is None:
            first_start = chunk[0][0]
        taken = await _taken(session, policy, chunk)
        for start, end in chunk:
            t = start
            while t < end:
                day = t.astimezone(zone).date()
                if cap is not None:
                    next_day = _day_start(day + timedelta(1), zone)
                    on_day = bisect.bisect_left(taken, next_day) - bisect.bisect_left(
                        taken, _day_start(day, zone)
                    )
                    if on_day >= cap:
                        cap_skipped = True
                        t = max(next_day, t + timedelta(minutes=1))
                        continue
                if spacing:
                    # Others within (t - spacing, t + spacing) clash; the earliest instant
                    # clear of the latest of them is that one plus the spacing.
                    upto = bisect.bisect_left(taken, t + spacing)
                    if upto and taken[upto - 1] > t - spacing:
                        spacing_moved = True
                        t = taken[upto - 1] + spacing
                        continue
                if cap_skipped:
                    return t, DeferralReason.MAILBOX_CAP
                if t != first_start:
                    return t, DeferralReason.MAILBOX_SPACING if spacing_moved else None
                return t, None
    raise NoSlot(
        f"no slot for mailbox {policy.address} in the {walked} interval(s) walked "
        f"(max_intervals={max_intervals})"
    )


def _checked(intervals: Iterable[tuple[datetime, datetime]]) -> Iterator[tuple[datetime, datetime]]:
    for start, end in intervals:
        if start.utcoffset() is None or end.utcoffset() is None:
            raise ValueError("naive datetime in intervals: they must be aware")
        yield start.astimezone(UTC), end.astimezone(UTC)


async def _taken(
    session: AsyncSession, policy: MailboxPolicy, chunk: list[tuple[datetime, datetime]]
) -> list[datetime]:
    """The mailbox's reserved instants (sorted, UTC) that can matter for `chunk`: within the
    spacing of it, and on every local day it touches (for the cap)."""
    if policy.daily_cap is None and not policy.minimum_spacing:
        return []
    zone, spacing = policy.time_zone, policy.minimum_spacing
    first, last = min(start for start, _ in chunk), max(end for _, end in chunk)
    low = min(first - spacing, _day_start(first.astimezone(zone).date(), zone))
    high = max(last + spacing, _day_start(last.astimezone(zone).date() + timedelta(1), zone))
    slots = await session.scalars(
        select(MailboxReservation.slot_at)
        .where(
            MailboxReservation.mailbox == policy.address,
            MailboxReservation.slot_at >= low,
            MailboxReservation.slot_at < high,
        )
        .order_by(MailboxReservation.slot_at)
    )
    return [slot.astimezone(UTC) for slot in slots]


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) of the local `day` in `zone`. A midnight skipped by a clock
    change reads with the offset before it, which lands on the day's first real instant."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
