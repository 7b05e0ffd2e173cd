"""Mailbox send reservations on both engines: caps per local day, spacing, gaps, idempotence,
and atomicity across stores (two engines) and across OS processes sharing one database."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from campaign_engine.mailboxes import (
    DeferralReason,
    MailboxPolicy,
    MailboxReservations,
    NoSlot,
    Reservation,
)
from campaign_engine.store import Store
from workflows.types import Deferral

MONDAY = date(2027, 1, 4)
TEN_MINUTES = timedelta(minutes=10)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(database_url)
    yield opened
    await opened.close()


@pytest.fixture
def reservations(store: Store) -> MailboxReservations:
    return MailboxReservations(store)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def weekdays(count: int, first: date = MONDAY) -> Iterator[date]:
    day, given = first, 0
    while given < count:
        if day.weekday() < 5:
            yield day
            given += 1
        day += timedelta(days=1)


def windows(count: int, first: date = MONDAY) -> list[tuple[datetime, datetime]]:
    """`count` weekday intervals 09:00-17:00 UTC from `first`."""
    return [(at(day, 9), at(day, 17)) for day in weekdays(count, first)]


def mailbox() -> str:
    """A fresh address: tests share the session's PostgreSQL database."""
    return f"sender-{uuid.uuid4().hex[:12]}@example.com"


def message() -> str:
    return f"<{uuid.uuid4().hex}@campaign.example>"


async def test_reserve_is_idempotent_per_message(reservations: MailboxReservations) -> None:
    policy = MailboxPolicy(mailbox(), daily_cap=3, minimum_spacing=TEN_MINUTES)
    message_id = message()

    first = await reservations.reserve(message_id, policy, windows(5))
    # A retry with other intervals, even another policy, gets the same slot back.
    again = await reservations.reserve(message_id, policy, windows(5, MONDAY + timedelta(7)))
    other = await reservations.reserve(message_id, MailboxPolicy(mailbox()), windows(1))

    assert first == again == other == await reservations.get(message_id)
    assert first == Reservation(message_id, policy.address, MONDAY, at(MONDAY, 9), None)
    assert first.slot_at.tzinfo == UTC
    assert await reservations.count_on(policy.address, MONDAY) == 1
    assert await reservations.get(message()) is None


async def test_concurrent_retries_of_one_message_take_one_slot(
    reservations: MailboxReservations,
) -> None:
    policy = MailboxPolicy(mailbox(), daily_cap=3, minimum_spacing=TEN_MINUTES)
    message_id = message()

    results = await asyncio.gather(
        *(reservations.reserve(message_id, policy, windows(5)) for _ in range(6))
    )

    assert len(set(results)) == 1
    assert await reservations.count_on(policy.address, MONDAY) == 1


async def test_one_message_on_two_mailboxes_at_once_keeps_one(
    reservations: MailboxReservations,
) -> None:
    """Two mailboxes are two locks: both may try to insert; the loser returns the winner's."""
    message_id = message()
    policies = [MailboxPolicy(mailbox(), daily_cap=3) for _ in range(2)]

    results = await asyncio.gather(
        *(reservations.reserve(message_id, policy, windows(2)) for policy in policies * 3)
    )

    assert len(set(results)) == 1
    counts = [await reservations.count_on(policy.address, MONDAY) for policy in policies]
    assert sorted(counts) == [0, 1]


async def test_cap_defers_to_next_intervals_day(reservations: MailboxReservations) -> None:
    policy = MailboxPolicy(mailbox(), daily_cap=3)

    taken = [await reservations.reserve(message(), policy, windows(5)) for _ in range(4)]

    assert [r.slot_at for r in taken[:3]] == [at(MONDAY, 9)] * 3
    assert [r.deferred_because for r in taken[:3]] == [None] * 3
    tuesday = MONDAY + timedelta(1)
    assert (taken[3].day, taken[3].slot_at) == (tuesday, at(tuesday, 9))
    assert taken[3].deferred_because is DeferralReason.MAILBOX_CAP
    assert await reservations.count_on(policy.address, MONDAY) == 3
    assert await reservations.count_on(policy.address, tuesday) == 1


async def test_cap_skips_the_weekend_and_is_kept_on_get(
    reservations: MailboxReservations,
) -> None:
    policy = MailboxPolicy(mailbox(), daily_cap=1)
    friday = MONDAY + timedelta(4)

    await reservations.reserve(message(), policy, windows(3, friday))
    second = await reservations.reserve(message(), policy, windows(3, friday))

    next_monday = MONDAY + timedelta(7)
    assert second.slot_at == at(next_monday, 9)
    assert second.deferred_because is DeferralReason.MAILBOX_CAP
    assert await reservations.get(second.message_id) == second


async def test_spacing_spreads_sends(reservations: MailboxReservations) -> None:
    policy = MailboxPolicy(mailbox(), minimum_spacing=TEN_MINUTES)

    taken = [await reservations.reserve(message(), policy, windows(1)) for _ in range(4)]

    assert [r.slot_at for r in taken] == [at(MONDAY, 9, m) for m in (0, 10, 20, 30)]
    assert [r.deferred_because for r in taken] == [None] + [DeferralReason.MAILBOX_SPACING] * 3


async def test_spacing_past_the_interval_end_moves_to_next_interval(
    reservations: MailboxReservations,
) -> None:
    policy = MailboxPolicy(mailbox(), minimum_spacing=TEN_MINUTES)
    tuesday = MONDAY + timedelta(1)
    short = [(at(MONDAY, 9), at(MONDAY, 9, 25)), (at(tuesday, 9), at(tuesday, 17))]

    taken = [await reservations.reserve(message(), policy, short) for _ in range(4)]

    assert [r.slot_at for r in taken] == [
        at(MONDAY, 9),
        at(MONDAY, 9, 10),
        at(MONDAY, 9, 20),
        at(tuesday, 9),  # 09:30 is past 09:25, the end (exclusive)
    ]
    assert taken[3].deferred_because is DeferralReason.MAILBOX_SPACING
    assert taken[3].day == tuesday


async def test_slot_must_be_before_the_interval_end(reservations: MailboxReservations) -> None:
    policy = MailboxPolicy(mailbox(), minimum_spacing=TEN_MINUTES)
    tuesday = MONDAY + timedelta(1)
    exact = [(at(MONDAY, 9), at(MONDAY, 9, 10)), (at(tuesday, 9), at(tuesday, 17))]

    await reservations.reserve(message(), policy, exact)
    second = await reservations.reserve(message(), policy, exact)

    assert second.slot_at == at(tuesday, 9)


async def test_gaps_between_reservations_are_reused(reservations: MailboxReservations) -> None:
    policy = MailboxPolicy(mailbox(), daily_cap=10, minimum_spacing=TEN_MINUTES)
    later = [(at(MONDAY, 9, 30), at(MONDAY, 17))]
    first = await reservations.reserve(message(), policy, later)

    taken = [await reservations.reserve(message(), policy, windows(1)) for _ in range(4)]

    assert first.slot_at == at(MONDAY, 9, 30) and first.deferred_because is None
    # 09:20 is exactly the spacing away from 09:30: no clash (only closer is one).
    assert [r.slot_at for r in taken] == [at(MONDAY, 9, m) for m in (0, 10, 20, 40)]


async def test_release_frees_the_slot(reservations: MailboxReservations) -> None:
    policy = MailboxPolicy(mailbox(), daily_cap=3, minimum_spacing=TEN_MINUTES)
    taken = [await reservations.reserve(message(), policy, windows(2)) for _ in range(3)]

    assert await reservations.release(taken[1].message_id)
    assert not await reservations.release(taken[1].message_id)
    assert await reservations.get(taken[1].message_id) is None
    assert await reservations.count_on(policy.address, MONDAY) == 2
    refill = await reservations.reserve(message(), policy, windows(2))

    assert refill.slot_at == at(MONDAY, 9, 10)  # the freed one, not Tuesday
    assert await reservations.count_on(policy.address, MONDAY) == 3


async def test_days_are_local_to_the_mailbox_time_zone(
    reservations: MailboxReservations,
) -> None:
    new_york = ZoneInfo("America/New_York")  # UTC-5 in January
    policy = MailboxPolicy(mailbox(), daily_cap=1, time_zone=new_york)
    # 04:30 UTC is 23:30 on Monday in New York; 05:30 UTC is 00:30 on Tuesday there. In UTC
    # both are Tuesday: a cap counted in UTC would defer the second to another interval.
    tuesday = MONDAY + timedelta(1)
    late = [(at(tuesday, 4, 30), at(tuesday, 4, 31)), (at(tuesday, 5, 30), at(tuesday, 5, 31))]

    first = await reservations.reserve(message(), policy, late)
    second = await reservations.reserve(message(), policy, late)

    assert (first.day, first.slot_at) == (MONDAY, at(tuesday, 4, 30))
    assert (second.day, second.slot_at) == (tuesday, at(tuesday, 5, 30))
    assert second.deferred_because is DeferralReason.MAILBOX_CAP
    assert await reservations.count_on(policy.address, MONDAY) == 1
    assert await reservations.count_on(policy.address, tuesday) == 1


async def test_a_full_day_skips_to_local_midnight_inside_an_interval(
    reservations: MailboxReservations,
) -> None:
    policy = MailboxPolicy(mailbox(), daily_cap=1, time_zone=ZoneInfo("America/New_York"))
    wednesday = MONDAY + timedelta(2)
    around_midnight = [(at(wednesday, 4), at(wednesday, 6))]  # 23:00-01:00 in New York

    await reservations.reserve(message(), policy, around_midnight)
    second = await reservations.reserve(message(), policy, around_midnight)

    assert second.slot_at == at(wednesday, 5)  # New York's midnight
    assert second.day == wednesday
    assert second.deferred_because is DeferralReason.MAILBOX_CAP


async def test_a_skipped_midnight_starts_the_day_at_its_first_real_instant(
    reservations: MailboxReservations,
) -> None:
    """Santiago skips from 2027-09-04 24:00 (-04) to 2027-09-05 01:00 (-03): 04:00 UTC."""
    policy = MailboxPolicy(mailbox(), daily_cap=1, time_zone=ZoneInfo("America/Santiago"))
    sunday = date(2027, 9, 5)
    night = [(at(sunday, 3), at(sunday, 6))]  # 23:00 on Saturday to 03:00 on Sunday there

    first = await reservations.reserve(message(), policy, night)
    second = await reservations.reserve(message(), policy, night)

    assert (first.day, first.slot_at) == (sunday - timedelta(1), at(sunday, 3))
    assert (second.day, second.slot_at) == (sunday, at(sunday, 4))


async def test_no_slot_after_max_intervals(reservations: MailboxReservations) -> None:
    policy = MailboxPolicy(mailbox(), daily_cap=1)
    for _ in range(3):
        await reservations.reserve(message(), policy, windows(3))
    refused = message()

    with pytest.raises(NoSlot):
        await reservations.reserve(refused, policy, windows(3))
    with pytest.raises(NoSlot):  # more intervals, but only 3 walked
        await reservations.reserve(refused, policy, windows(10), max_intervals=3)
    with pytest.raises(NoSlot):
        await reservations.reserve(refused, policy, [])
    with pytest.raises(NoSlot):
        await reservations.reserve(refused, MailboxPolicy(mailbox(), daily_cap=0), windows(5))

    assert await reservations.get(refused) is None
    fourth = await reservations.reserve(refused, policy, windows(10), max_intervals=4)
    assert fourth.day == MONDAY + timedelta(3)


async def test_intervals_are_read_lazily(reservations: MailboxReservations) -> None:
    policy = MailboxPolicy(mailbox(), daily_cap=1)
    read: list[date] = []

    def forever() -> Iterator[tuple[datetime, datetime]]:
        for day in weekdays(10_000):
            read.append(day)
            yield at(day, 9), at(day, 17)

    await reservations.reserve(message(), policy, forever())
    second = await reservations.reserve(message(), policy, forever())

    assert second.day == MONDAY + timedelta(1)
    assert len(read) <= 1 + 3  # one chunk, then chunks of 1 and 2


async def test_no_limits_still_records_a_row(reservations: MailboxReservations) -> None:
    policy = MailboxPolicy(mailbox())

    taken = [await reservations.reserve(message(), policy, windows(1)) for _ in range(3)]

    assert {(r.slot_at, r.deferred_because) for r in taken} == {(at(MONDAY, 9), None)}
    assert await reservations.count_on(policy.address, MONDAY) == 3


async def test_intervals_in_other_zones_are_returned_in_utc(
    reservations: MailboxReservations,
) -> None:
    paris = ZoneInfo("Europe/Paris")
    start = datetime(2027, 1, 4, 10, tzinfo=paris)

    taken = await reservations.reserve(
        message(), MailboxPolicy(mailbox()), [(start, start + timedelta(hours=8))]
    )

    assert taken.slot_at == at(MONDAY, 9) and taken.slot_at.tzinfo == UTC
    with pytest.raises(ValueError, match="naive"):
        await reservations.reserve(
            message(), MailboxPolicy(mailbox()), [(datetime(2027, 1, 4, 9), at(MONDAY, 17))]
        )


async def test_forget_before_deletes_old_reservations(reservations: MailboxReservations) -> None:
    policy = MailboxPolicy(mailbox(), daily_cap=1)
    long_ago = date(2020, 1, 6)  # a Monday before every other test's slots
    taken = [await reservations.reserve(message(), policy, windows(3, long_ago)) for _ in range(3)]

    forgotten = await reservations.forget_before(at(long_ago + timedelta(2), 0))

    assert forgotten == 2
    assert [await reservations.get(r.message_id) for r in taken] == [None, None, taken[2]]
    assert await reservations.count_on(policy.address, long_ago) == 0
    with pytest.raises(ValueError, match="naive"):
        await reservations.forget_before(datetime(2020, 1, 1))


def test_policy_refuses_bad_limits() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        MailboxPolicy("Sender@Example.com")
    with pytest.raises(ValueError, match="daily_cap"):
        MailboxPolicy("a@example.com", daily_cap=-1)
    with pytest.raises(ValueError, match="minimum_spacing"):
        MailboxPolicy("a@example.com", minimum_spacing=timedelta(seconds=-1))
    assert MailboxPolicy("a@example.com").time_zone == ZoneInfo("UTC")


# --- concurrency -------------------------------------------------------------------------------


def check_schedule(taken: list[Reservation], cap: int, spacing: timedelta, count: int) -> None:
    """Each message once, at most `cap` a day (and full days before the last), the spacing kept."""
    assert len({r.message_id for r in taken}) == count
    per_day = Counter(r.day for r in taken)
    days = sorted(per_day)
    assert all(per_day[day] == cap for day in days[:-1]), per_day
    assert per_day[days[-1]] == count - cap * (len(days) - 1)
    assert days == list(weekdays(len(days)))
    slots = sorted(r.slot_at for r in taken)
    gaps = [later - earlier for earlier, later in itertools.pairwise(slots)]
    assert min(gaps) >= spacing


async def test_two_stores_reserving_at_once_keep_the_limits(
    database_url: str, reservations: MailboxReservations
) -> None:
    """Two engines (two workers) x 20 concurrent calls, 40 messages, cap 3 over 14 weekdays."""
    policy = MailboxPolicy(mailbox(), daily_cap=3, minimum_spacing=TEN_MINUTES)
    other_store = await Store.open(database_url)
    try:
        other = MailboxReservations(other_store)
        ids = [message() for _ in range(40)]
        started = time.perf_counter()
        taken = await asyncio.gather(
            *(
                (reservations if n % 2 else other).reserve(message_id, policy, windows(14))
                for n, message_id in enumerate(ids)
            )
        )
        elapsed = time.perf_counter() - started
        # Retries of all of them, crossed over to the other store: nothing moves.
        again = await asyncio.gather(
            *(
                (other if n % 2 else reservations).reserve(message_id, policy, windows(14))
                for n, message_id in enumerate(ids)
            )
        )
    finally:
        await other_store.close()

    check_schedule(taken, 3, TEN_MINUTES, 40)
    assert again == taken
    assert [await reservations.get(message_id) for message_id in ids] == taken
    print(f"\n40 concurrent reserves on two stores: {elapsed * 1000 / 40:.1f} ms per call")


_WORKER = """
import asyncio, json, sys, time
from datetime import timedelta
from campaign_engine.mailboxes import MailboxPolicy, MailboxReservations
from campaign_engine.store import Store
from tests.test_mailboxes import windows

async def main(url, address, ids):
    store = await Store.open(url)
    try:
        reservations = MailboxReservations(store)
        policy = MailboxPolicy(address, daily_cap=3, minimum_spacing=timedelta(minutes=10))
        print("ready", flush=True)
        sys.stdin.readline()  # every process starts reserving at once
        started = time.perf_counter()
        await asyncio.gather(*(reservations.reserve(i, policy, windows(14)) for i in ids))
        print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)
    finally:
        await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
"""


async def test_processes_reserving_at_once_keep_the_limits(
    database_url: str, reservations: MailboxReservations
) -> None:
    """Two OS processes on the same database file (or PostgreSQL) x 20 concurrent calls each."""
    address = mailbox()
    ids = [message() for _ in range(40)]
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            database_url,
            address,
            *ids[n::2],
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parent.parent,
        )
        for n in range(2)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert (await asyncio.wait_for(process.stdout.readline(), 60)).strip() == b"ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        outputs = [await asyncio.wait_for(process.communicate(), 60) for process in processes]
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    assert [process.returncode for process in processes] == [0, 0]
    seconds = [json.loads(stdout)["seconds"] for stdout, _ in outputs]
    taken = [r for r in [await reservations.get(i) for i in ids] if r is not None]
    check_schedule(taken, 3, TEN_MINUTES, 40)
    print(f"\n2 processes x 20 concurrent reserves: {max(seconds) * 1000 / 40:.1f} ms per call")


def test_every_reservation_reason_is_a_deferral_the_workflow_knows() -> None:
    # The delivery activity hands the store's reason to the workflow by its value.
    assert {reason.value for reason in DeferralReason} <= {each.value for each in Deferral}
