"""Send windows, business-day delays and mailbox caps on the real dev server, in virtual time.

Each instance's clock is moved to the instant the case needs (a Saturday in New York, the night a
clock changes, the day before Thanksgiving), whatever day the suite runs on; approvals then wait
for the window durably, and the instance is fast-forwarded past the wait.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.worker import Worker

from campaign_engine.mailboxes import MailboxReservations
from campaign_engine.settings import MailboxLimits, Settings
from campaign_engine.store import Store
from devsupport.servers import SmtpSink
from tests.helpers import (
    assert_eventually,
    current_details,
    outbox_files,
    resumed_at,
    worker_process,
)
from tests.helpers.clock import (
    VirtualClock,
    delivered_at,
    first_after,
    next_weekday,
    nth_weekday,
)
from worker import build_worker
from workflows.campaign import CampaignWorkflow
from workflows.types import (
    CampaignSnapshot,
    CampaignStep,
    Deferral,
    Lead,
    LeadStatus,
    ResumeAt,
    SendWindow,
    WorkflowStatus,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
OFFICE_HOURS = SendWindow(days=WEEKDAYS, start="09:00", end="17:00", time_zone="America/New_York")
SATURDAY, SUNDAY, MONDAY, TUESDAY, WEDNESDAY = 5, 6, 0, 1, 2


def one_step(window: SendWindow | None, *, mailbox: str | None = None) -> CampaignSnapshot:
    """A campaign of one approved step sent in `window`."""
    return CampaignSnapshot(
        name="Windowed",
        steps=[CampaignStep(id="intro", subject="Hello", body="Hi {{ lead.firstName }}")],
        send_window=window,
        mailbox=mailbox,
    )


async def at_gate(handle: WorkflowHandle[Any, Any]) -> None:
    """Waits until the instance's first gate is open."""

    async def status() -> LeadStatus:
        return await handle.query(CampaignWorkflow.lead_status)

    await assert_eventually(status, lambda s: s.has_pending_approval, what="an open gate")


async def approve(handle: WorkflowHandle[Any, Any]) -> None:
    """Approves the open gate the way the API does (a signal with a request id)."""
    await handle.signal(CampaignWorkflow.approve, {"request_id": "r1", "decided_by": "test"})


async def scheduled(handle: WorkflowHandle[Any, Any]) -> LeadStatus:
    """Waits until the approved instance waits for its send time; returns its status."""

    async def status() -> LeadStatus:
        return await handle.query(CampaignWorkflow.lead_status)

    return await assert_eventually(
        status, lambda s: s.scheduled is not None, what="a scheduled delivery"
    )


async def approved_at(
    clock: VirtualClock, handle: WorkflowHandle[Any, Any], when: datetime
) -> LeadStatus:
    """Moves the instance (waiting at its gate) to `when`, approves it there, and waits until
    the approved message waits for its send time; returns that status."""
    await clock.advance_to(handle, when)
    await approve(handle)
    return await scheduled(handle)


async def sent_when_due(
    clock: VirtualClock, handle: WorkflowHandle[Any, Any], due: datetime
) -> LeadStatus:
    """Moves the instance 5 minutes past `due`; asserts it delivered `intro` within 2 minutes
    after `due` (workflow time) and returns its final status."""
    await clock.advance_to(handle, due.astimezone(UTC) + timedelta(minutes=5))
    result: LeadStatus = await handle.result()
    sent = delivered_at(result, "intro")
    assert due <= sent < due + timedelta(minutes=2), sent.astimezone(due.tzinfo)
    return result


async def test_an_approval_on_saturday_is_sent_on_monday_at_nine_in_the_leads_zone(
    temporal: Client, settings: Settings, worker: Worker
) -> None:
    clock = VirtualClock(temporal, settings)
    handle = await clock.enrol(one_step(OFFICE_HOURS))
    await at_gate(handle)
    saturday = next_weekday(await clock.now(handle), SATURDAY, time(10, 0), NEW_YORK)

    waiting = await approved_at(clock, handle, saturday)

    monday = datetime.combine(saturday.date() + timedelta(days=2), time(9, 0), tzinfo=NEW_YORK)
    assert waiting.workflow_status == WorkflowStatus.PENDING
    assert waiting.has_pending_approval is False
    assert waiting.scheduled is not None
    assert waiting.scheduled.deferred_because == Deferral.OUTSIDE_WINDOW
    assert waiting.scheduled.send_at == monday.astimezone(UTC)
    assert waiting.scheduled.send_at_local == monday.isoformat(timespec="minutes")
    details = await current_details(handle)
    assert f"sends at {monday.isoformat(timespec='minutes')}" in details, details
    assert outbox_files(settings) == []

    result = await sent_when_due(clock, handle, monday)

    assert result.workflow_status == WorkflowStatus.COMPLETED
    assert len(outbox_files(settings)) == 1


async def test_a_weekend_wait_across_the_autumn_clock_change_in_new_york(
    temporal: Client, settings: Settings, worker: Worker
) -> None:
    clock = VirtualClock(temporal, settings)
    handle = await clock.enrol(one_step(OFFICE_HOURS))
    await at_gate(handle)
    # Clocks go back on the first Sunday of November: Saturday is EDT (-4), Monday EST (-5).
    change = first_after(await clock.now(handle), lambda y: nth_weekday(y, 11, SUNDAY, 1))
    saturday = datetime.combine(change - timedelta(days=1), time(20, 0), tzinfo=NEW_YORK)

    waiting = await approved_at(clock, handle, saturday)

    monday = datetime.combine(change + timedelta(days=1), time(9, 0), tzinfo=NEW_YORK)
    assert saturday.utcoffset() == timedelta(hours=-4)
    assert monday.utcoffset() == timedelta(hours=-5)
    assert waiting.scheduled is not None
    assert waiting.scheduled.send_at == monday.astimezone(UTC)
    assert monday.astimezone(UTC).time() == time(14, 0)
    assert waiting.scheduled.send_at_local == f"{monday.date().isoformat()}T09:00-05:00"

    await sent_when_due(clock, handle, monday)


async def test_a_window_in_new_yorks_skipped_hour_opens_at_the_change(
    temporal: Client, settings: Settings, worker: Worker
) -> None:
    # 02:30 does not exist on the second Sunday of March in New York: 01:59 EST → 03:00 EDT.
    window = SendWindow(days=["sun"], start="02:30", end="03:30", time_zone="America/New_York")
    clock = VirtualClock(temporal, settings)
    handle = await clock.enrol(one_step(window))
    await at_gate(handle)
    change = first_after(await clock.now(handle), lambda y: nth_weekday(y, 3, SUNDAY, 2))
    saturday = datetime.combine(change - timedelta(days=1), time(12, 0), tzinfo=NEW_YORK)

    waiting = await approved_at(clock, handle, saturday)

    opens = datetime.combine(change, time(7, 0), tzinfo=UTC)  # 03:00 EDT
    assert waiting.scheduled is not None
    assert waiting.scheduled.send_at == opens
    assert waiting.scheduled.send_at_local == f"{change.isoformat()}T03:00-04:00"

    await sent_when_due(clock, handle, opens)


async def test_a_leads_berlin_zone_wins_and_the_repeated_hour_opens_once(
    temporal: Client, settings: Settings, worker: Worker
) -> None:
    # Berlin's clocks go back on the last Sunday of October: 02:00 to 03:00 happens twice (CEST,
    # then CET). The window opens at the first 02:00 (00:00 UTC), not at the second (01:00 UTC).
    window = SendWindow(days=["sun"], start="02:00", end="02:45", time_zone="America/New_York")
    clock = VirtualClock(temporal, settings)
    lead = Lead(
        id="0" * 23 + "b", email="lena@example.de", first_name="Lena", time_zone="Europe/Berlin"
    )
    handle = await clock.enrol(one_step(window), lead)
    await at_gate(handle)
    change = first_after(await clock.now(handle), lambda y: nth_weekday(y, 10, SUNDAY, -1))
    saturday = datetime.combine(change - timedelta(days=1), time(12, 0), tzinfo=BERLIN)

    waiting = await approved_at(clock, handle, saturday)

    opens = datetime.combine(change, time(0, 0), tzinfo=UTC)  # 02:00 CEST
    assert waiting.scheduled is not None
    assert waiting.scheduled.send_at == opens
    assert waiting.scheduled.send_at_local == f"{change.isoformat()}T02:00+02:00"

    await sent_when_due(clock, handle, opens)


async def test_a_business_day_delay_skips_thanksgiving(
    temporal: Client, settings: Settings, worker: Worker
) -> None:
    window = SendWindow(
        days=WEEKDAYS, start="09:00", end="17:00", time_zone="America/New_York", holidays="US"
    )
    snapshot = CampaignSnapshot(
        name="Holiday",
        steps=[
            CampaignStep(id="intro", subject="Hello", body="Hi", delay_business_days=1),
            CampaignStep(id="follow-up", subject="Again", body="Hi", requires_approval=False),
        ],
        send_window=window,
    )
    clock = VirtualClock(temporal, settings)
    handle = await clock.enrol(snapshot)
    await at_gate(handle)
    # US Thanksgiving: the fourth Thursday of November. The business day after the Wednesday
    # before it is the Friday.
    thanksgiving = first_after(await clock.now(handle), lambda y: nth_weekday(y, 11, 3, 4))
    wednesday = datetime.combine(thanksgiving - timedelta(days=1), time(10, 0), tzinfo=NEW_YORK)
    await clock.advance_to(handle, wednesday)

    await approve(handle)

    friday = datetime.combine(thanksgiving + timedelta(days=1), time(10, 0), tzinfo=NEW_YORK)
    await clock.advance_to(handle, friday.astimezone(UTC) + timedelta(minutes=5))
    result: LeadStatus = await handle.result()
    first, second = delivered_at(result, "intro"), delivered_at(result, "follow-up")
    assert wednesday <= first < wednesday + timedelta(minutes=2)
    assert friday <= second < friday + timedelta(minutes=2), second.astimezone(NEW_YORK)


MAILBOX = "sales@example.com"
CAPPED = {MAILBOX: MailboxLimits(account_groups="*", daily_cap=3, time_zone="America/New_York")}


@pytest.mark.parametrize("settings_overrides", [{"mailboxes": CAPPED}])
async def test_a_cap_of_three_sends_three_a_day_over_two_workers_and_none_twice(
    temporal: Client, settings: Settings, worker: Worker, store: Store
) -> None:
    clock = VirtualClock(temporal, settings)
    window = SendWindow(days=WEEKDAYS, start="09:00", end="17:00", time_zone="America/New_York")
    env = {
        "CAMPAIGN_ENGINE_MAILBOXES": json.dumps(
            {MAILBOX: {"account_groups": "*", "daily_cap": 3, "time_zone": "America/New_York"}}
        )
    }
    async with worker_process(settings, **env):
        handles = [
            await clock.enrol(one_step(window, mailbox=f"Sales <{MAILBOX}>")) for _ in range(10)
        ]
        await asyncio.gather(*(at_gate(handle) for handle in handles))
        tuesday = next_weekday(await clock.now(handles[0]), TUESDAY, time(10, 0), NEW_YORK)
        await asyncio.gather(*(clock.advance_to(handle, tuesday) for handle in handles))

        await asyncio.gather(*(approve(handle) for handle in handles))
        await asyncio.gather(*(clock.advance(handle, timedelta(days=4)) for handle in handles))
        results = await asyncio.gather(*(handle.result() for handle in handles))

    days: dict[date, int] = {}
    for result in results:
        assert result.workflow_status == WorkflowStatus.COMPLETED
        day = delivered_at(result, "intro").astimezone(NEW_YORK).date()
        days[day] = days.get(day, 0) + 1
    start = tuesday.date()
    assert days == {
        start: 3,
        start + timedelta(days=1): 3,
        start + timedelta(days=2): 3,
        start + timedelta(days=3): 1,
    }
    sent = outbox_files(settings)
    assert len(sent) == 10
    assert len({path.read_bytes().split(b"Message-ID: ")[1].split(b"\n")[0] for path in sent}) == 10
    reservations = MailboxReservations(store)
    assert [await reservations.count_on(MAILBOX, start + timedelta(days=n)) for n in range(4)] == [
        3,
        3,
        3,
        1,
    ]


CAP_ONE = {MAILBOX: MailboxLimits(account_groups="*", daily_cap=1, time_zone="America/New_York")}


async def test_a_stop_while_waiting_for_a_slot_gives_the_slot_back(
    temporal: Client, settings: Settings, store: Store
) -> None:
    async with build_worker(temporal, settings.model_copy(update={"mailboxes": CAP_ONE}), store):
        await stop_while_waiting_for_a_slot(temporal, settings, store)


async def stop_while_waiting_for_a_slot(temporal: Client, settings: Settings, store: Store) -> None:
    """Two instances, a cap of one a day: the second waits for Wednesday, and is stopped."""
    clock = VirtualClock(temporal, settings)
    first, second = [await clock.enrol(one_step(OFFICE_HOURS, mailbox=MAILBOX)) for _ in range(2)]
    await asyncio.gather(at_gate(first), at_gate(second))
    tuesday = next_weekday(await clock.now(first), TUESDAY, time(10, 0), NEW_YORK)
    await asyncio.gather(clock.advance_to(first, tuesday), clock.advance_to(second, tuesday))
    await approve(first)
    await first.result()
    await approve(second)
    waiting = await scheduled(second)
    wednesday = tuesday.date() + timedelta(days=1)
    assert waiting.scheduled is not None
    assert waiting.scheduled.deferred_because == Deferral.MAILBOX_CAP
    reservations = MailboxReservations(store)
    assert await reservations.count_on(MAILBOX, wednesday) == 1

    await second.signal(CampaignWorkflow.stop, "not this one")
    result: LeadStatus = await second.result()

    assert result.workflow_status == WorkflowStatus.STOPPED
    assert await reservations.count_on(MAILBOX, wednesday) == 0
    assert await reservations.count_on(MAILBOX, tuesday.date()) == 1


async def test_a_permanently_failed_send_gives_its_slot_back(
    smtp: SmtpSink, temporal: Client, settings: Settings, store: Store
) -> None:
    # A policy refusal (X.7.x): a permanent failure that is no bounce, so the instance fails.
    smtp.reject_recipient_with = "554 5.7.1 refused by policy"
    smtp.refused_prefix = "gone"
    capped = settings.model_copy(update={"mailboxes": CAP_ONE})
    async with build_worker(temporal, capped, store):
        await fail_one_then_send_one(smtp, temporal, settings, store)


async def fail_one_then_send_one(
    smtp: SmtpSink, temporal: Client, settings: Settings, store: Store
) -> None:
    """Cap one a day: the first message is refused for good, the second goes out that day."""
    clock = VirtualClock(temporal, settings)
    refused = await clock.enrol(
        one_step(OFFICE_HOURS, mailbox=MAILBOX),
        Lead(id="0" * 23 + "c", email="gone@example.com", first_name="Gone"),
    )
    accepted = await clock.enrol(one_step(OFFICE_HOURS, mailbox=MAILBOX))
    await asyncio.gather(at_gate(refused), at_gate(accepted))
    tuesday = next_weekday(await clock.now(refused), TUESDAY, time(10, 0), NEW_YORK)
    await asyncio.gather(clock.advance_to(refused, tuesday), clock.advance_to(accepted, tuesday))

    await approve(refused)
    with pytest.raises(WorkflowFailureError):
        await refused.result()
    await approve(accepted)
    result: LeadStatus = await accepted.result()

    # The failed send's slot was given back, so the day's one slot went to the next message.
    sent = delivered_at(result, "intro")
    assert tuesday <= sent < tuesday + timedelta(minutes=2)
    assert await MailboxReservations(store).count_on(MAILBOX, tuesday.date()) == 1
    assert [m["To"] for m in smtp.received()] == ["ada@example.com"]


CAP_TWO = {MAILBOX: MailboxLimits(account_groups="*", daily_cap=2, time_zone="America/New_York")}


async def test_a_resume_releases_held_messages_within_the_mailboxs_cap(
    temporal: Client, settings: Settings, store: Store
) -> None:
    async with build_worker(temporal, settings.model_copy(update={"mailboxes": CAP_TWO}), store):
        await resume_within_the_cap(temporal, settings, store)


async def resume_within_the_cap(temporal: Client, settings: Settings, store: Store) -> None:
    """Cap two a day, four approved while paused: on resume two go on Tuesday, two Wednesday."""
    clock = VirtualClock(temporal, settings)
    await store.put_campaign(clock.account_group_id, clock.campaign_id, {"name": "Capped"})
    handles = [await clock.enrol(one_step(OFFICE_HOURS, mailbox=MAILBOX)) for _ in range(4)]
    await asyncio.gather(*(at_gate(handle) for handle in handles))
    tuesday = next_weekday(await clock.now(handles[0]), TUESDAY, time(10, 0), NEW_YORK)
    await asyncio.gather(*(clock.advance_to(handle, tuesday) for handle in handles))
    await store.set_campaign_paused(clock.account_group_id, clock.campaign_id, paused_by="test")

    await asyncio.gather(*(approve(handle) for handle in handles))
    held = await asyncio.gather(*(scheduled(handle) for handle in handles))
    reasons = [status.scheduled.deferred_because for status in held if status.scheduled]
    # Held before taking a slot: the resume, not the approvals' order, hands out the slots.
    assert reasons == [Deferral.CAMPAIGN_PAUSED] * 4, reasons
    await asyncio.sleep(0.5)
    assert outbox_files(settings) == []

    await store.set_campaign_paused(clock.account_group_id, clock.campaign_id, paused_by=None)
    await asyncio.gather(
        *(
            handle.signal(CampaignWorkflow.campaign_resumed, {"decided_by": "t"})
            for handle in handles
        )
    )
    await asyncio.gather(*(clock.advance(handle, timedelta(days=2)) for handle in handles))
    results = await asyncio.gather(*(handle.result() for handle in handles))

    days = sorted(delivered_at(result, "intro").astimezone(NEW_YORK).date() for result in results)
    assert days == [tuesday.date()] * 2 + [tuesday.date() + timedelta(days=1)] * 2
    assert len(outbox_files(settings)) == 4


async def test_a_delivery_waiting_for_its_window_survives_continue_as_new(
    temporal: Client, settings: Settings, worker: Worker
) -> None:
    clock = VirtualClock(temporal, settings)
    handle = await clock.enrol(one_step(OFFICE_HOURS), continue_as_new_after_events=15)
    await at_gate(handle)
    saturday = next_weekday(await clock.now(handle), SATURDAY, time(10, 0), NEW_YORK)
    waiting = await approved_at(clock, handle, saturday)
    assert waiting.scheduled is not None

    monday = datetime.combine(saturday.date() + timedelta(days=2), time(9, 0), tzinfo=NEW_YORK)
    result = await sent_when_due(clock, handle, monday)

    # The wait for the window was carried over into a new run, with the approved content.
    assert await resumed_at(temporal, handle.id) == [ResumeAt.DELIVERY]
    assert result.workflow_status == WorkflowStatus.COMPLETED
    assert [record.step_id for record in result.deliveries] == ["intro"]
    assert len(outbox_files(settings)) == 1
