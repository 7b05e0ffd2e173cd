"""Activities that fail for the right reasons (issue 23, part 5), on the real stack.

The workflow's activity options (`workflows/activity_options.py`) against what the activities do:
the delivery heartbeats from its first instant, so a stall before the send is a live attempt
that a stop still reaches; a burst of heavy drafts waits for the render processes without
losing any of its time budget; the two calls a retry cannot mend give up after their cap, and
the instance ends the way the workflow decided.
"""

from __future__ import annotations

import asyncio
import time as time_module
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from temporalio import activity
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities import templates
from campaign_engine.deliveries import DeliveryLedger
from campaign_engine.ids import message_id_for
from campaign_engine.mailboxes import MailboxReservations
from campaign_engine.settings import MailboxLimits, Settings
from campaign_engine.store import Store
from tests.helpers import assert_eventually, assert_failed_with, outbox_files
from tests.helpers.clock import VirtualClock, next_weekday
from worker import build_worker
from workflows import activity_options as options
from workflows.campaign import CampaignWorkflow
from workflows.types import (
    BUSINESS_DAYS_LATER_ACTIVITY,
    DELIVER_MESSAGE_ACTIVITY,
    DRAFT_CONTENT_ACTIVITY,
    RELEASE_SEND_SLOT_ACTIVITY,
    BusinessDaysRequest,
    BusinessDaysResult,
    CampaignSnapshot,
    CampaignStep,
    DeliveryOutcome,
    LeadStatus,
    SendWindow,
    StopReason,
    WorkflowStatus,
)

SDK_DEFAULT_ACTIVITY_SLOTS = 100
"""Activities one worker runs at once when it sets neither `max_concurrent_activities` nor a
tuner (temporalio's `Worker`)."""


def one_step(
    *, requires_approval: bool = True, subject: str = "Hello", body: str = "Hi"
) -> CampaignSnapshot:
    return CampaignSnapshot(
        name="Options",
        steps=[
            CampaignStep(
                id="intro", subject=subject, body=body, requires_approval=requires_approval
            )
        ],
    )


async def status_of(handle: WorkflowHandle[Any, Any]) -> LeadStatus:
    status: LeadStatus = await handle.query(CampaignWorkflow.lead_status)
    return status


async def activity_events(
    handle: WorkflowHandle[Any, Any], activity_type: str
) -> list[HistoryEvent]:
    """The history events of the instance's `activity_type` activities: scheduled, then each
    started / completed / failed / timed out / cancelled as the history holds them."""
    history = await handle.fetch_history()
    scheduled = {
        event.event_id
        for event in history.events
        if event.activity_task_scheduled_event_attributes.activity_type.name == activity_type
    }
    chosen = []
    for event in history.events:
        if event.event_id in scheduled:
            chosen.append(event)
            continue
        for field in (
            "activity_task_started_event_attributes",
            "activity_task_completed_event_attributes",
            "activity_task_failed_event_attributes",
            "activity_task_timed_out_event_attributes",
            "activity_task_canceled_event_attributes",
        ):
            if event.HasField(field) and getattr(event, field).scheduled_event_id in scheduled:
                chosen.append(event)
    return chosen


def started_attempts(events: list[HistoryEvent]) -> list[int]:
    """The attempt of each started event (a retried activity shows only its last attempt)."""
    return [
        e.activity_task_started_event_attributes.attempt
        for e in events
        if e.HasField("activity_task_started_event_attributes")
    ]


# --- the options themselves -----------------------------------------------------------------------


async def test_the_options_fit_the_worker_and_the_render_pool(worker: Worker) -> None:
    config = worker.config()
    # The draft's attempt holds the worst queue one worker can build: every activity slot a
    # draft, each template held to its hard timeout and its process restarted after the kill.
    assert config.get("max_concurrent_activities") is None and config.get("tuner") is None
    render_hold = templates.DRAFT_SECONDS + templates.HARD_TIMEOUT_GRACE_SECONDS + 1.0
    worst_queue = SDK_DEFAULT_ACTIVITY_SLOTS * 2 * render_hold / templates.RENDER_PROCESSES
    assert options.DRAFT.start_to_close.total_seconds() >= worst_queue
    # Heartbeats: sent as often as the activities beat, several to a timeout.
    assert config.get("max_heartbeat_throttle_interval") == options.HEARTBEAT_INTERVAL
    assert options.HEARTBEAT_TIMEOUT >= 3 * options.HEARTBEAT_INTERVAL
    for heartbeating in (options.DRAFT, options.DELIVERY):
        assert heartbeating.heartbeat == options.HEARTBEAT_TIMEOUT
    # Every call gives up some day.
    for each in (
        options.DRAFT,
        options.DELIVERY,
        options.NOTIFY,
        options.BUSINESS_DAYS,
        options.RELEASE_SEND_SLOT,
    ):
        assert each.retry.maximum_attempts > 0


# --- the delivery heartbeats from its first instant -----------------------------------------------


@asynccontextmanager
async def table_locked(url: str, table: str) -> AsyncIterator[None]:
    """Holds PostgreSQL's strongest lock on `table` (no reads, no writes) until the block ends:
    a database stall, for real."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            try:
                yield
            finally:
                await connection.rollback()
    finally:
        await engine.dispose()


@pytest.fixture
async def on_postgres(
    temporal: Client, settings: Settings, postgres_url: str
) -> AsyncIterator[Settings]:
    """The production worker on this session's PostgreSQL, with a capped mailbox of the test's
    own (`capped_mailbox`); yields its settings."""
    mailbox = f"stall-{uuid.uuid4().hex[:12]}@example.com"
    settings = settings.model_copy(
        update={
            "database_url": postgres_url,
            "mailboxes": {
                mailbox: MailboxLimits(account_groups="*", daily_cap=10, time_zone="UTC")
            },
        }
    )
    store = await Store.open(postgres_url)
    try:
        async with build_worker(temporal, settings, store):
            yield settings
    finally:
        await store.close()


def capped_mailbox(settings: Settings) -> str:
    """The one mailbox `on_postgres` configured."""
    [mailbox] = settings.mailboxes or {}
    return mailbox


async def slots_held(settings: Settings, mailbox: str, around: datetime) -> int:
    """The mailbox's reservations from the day before `around` to the day after (UTC)."""
    store = await Store.open(settings.resolved_database_url)
    try:
        reservations = MailboxReservations(store)
        day = around.astimezone(UTC).date()
        return sum(
            [await reservations.count_on(mailbox, day + timedelta(days=n)) for n in (-1, 0, 1)]
        )
    finally:
        await store.close()


async def delivering(handle: WorkflowHandle[Any, Any]) -> Any:
    """The instance's pending delivery activity, once it has heartbeaten (None until then)."""
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == DELIVER_MESSAGE_ACTIVITY and pending.HasField(
            "last_heartbeat_time"
        ):
            return pending
    return None


async def test_a_delivery_stalled_before_the_send_heartbeats_and_sends_once(
    temporal: Client, on_postgres: Settings
) -> None:
    clock = VirtualClock(temporal, on_postgres)
    async with table_locked(on_postgres.resolved_database_url, "deliveries"):
        handle = await clock.enrol(one_step(requires_approval=False))
        # The ledger claim waits for the lock: the attempt has sent nothing, and beats on.
        first = await assert_eventually(
            lambda: delivering(handle), within=10, what="a heartbeat before the send"
        )
        since = first.last_heartbeat_time.ToDatetime(tzinfo=UTC)
        later = await assert_eventually(
            lambda: delivering(handle),
            lambda p: p.last_heartbeat_time.ToDatetime(tzinfo=UTC) > since,
            within=10,
            what="another heartbeat during the stall",
        )
        assert (first.attempt, later.attempt) == (1, 1)
        assert outbox_files(on_postgres) == []

    result: LeadStatus = await handle.result()

    assert result.workflow_status == WorkflowStatus.COMPLETED
    assert [d.outcome for d in result.deliveries] == [DeliveryOutcome.SENT]
    assert len(outbox_files(on_postgres)) == 1
    assert started_attempts(await activity_events(handle, DELIVER_MESSAGE_ACTIVITY)) == [1]


async def test_a_stop_during_a_stall_before_the_send_sends_nothing_and_frees_the_slot(
    temporal: Client, on_postgres: Settings
) -> None:
    clock = VirtualClock(temporal, on_postgres)
    mailbox = capped_mailbox(on_postgres)
    snapshot = one_step(requires_approval=False)
    snapshot.mailbox = mailbox
    async with table_locked(on_postgres.resolved_database_url, "deliveries"):
        handle = await clock.enrol(snapshot)
        await assert_eventually(lambda: delivering(handle), within=10, what="a heartbeat")
        # The attempt takes its mailbox slot, then stalls on the ledger claim; it heartbeats
        # from its first instant, so the slot may come just after the first heartbeat.
        await assert_eventually(
            lambda: slots_held(on_postgres, mailbox, datetime.now(UTC)),
            lambda held: held == 1,
            within=10,
            what="the attempt's mailbox slot",
        )
        stopped_at = datetime.now(UTC)
        await handle.signal(CampaignWorkflow.stop, "not this one")

        # The stop reaches the attempt with the first heartbeat after it, while it still waits
        # for the store; then the lock goes, and the attempt must not hand the message over.
        async def heard_the_stop() -> bool:
            pending = await delivering(handle)
            return (
                pending is not None
                and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED
                and pending.last_heartbeat_time.ToDatetime(tzinfo=UTC) > stopped_at
            )

        await assert_eventually(heard_the_stop, within=10, what="a heartbeat after the stop")
        # The heartbeat's answer (cancel) is handled by the worker as it arrives.
        await asyncio.sleep(0.5)

    result: LeadStatus = await handle.result()

    assert result.workflow_status == WorkflowStatus.STOPPED
    assert result.workflow_stop_reason == StopReason.STOPPED_BY_OPERATOR
    assert result.deliveries == []
    assert outbox_files(on_postgres) == []
    store = await Store.open(on_postgres.resolved_database_url)
    try:
        message_id = message_id_for(handle.id, "intro")
        assert await DeliveryLedger(store).state(message_id) is None, "the claim was released"
    finally:
        await store.close()
    assert await slots_held(on_postgres, mailbox, stopped_at) == 0, "the slot was given back"


# --- a burst of drafts ----------------------------------------------------------------------------

NEAR_THE_BUDGET = "{% for a in range(14) %}{{ range(10000)|list|length }}{% endfor %}"
"""As many lists of 10,000 as the items a render may build allow (`MAX_BUILT`: a 15th is
refused); quick to render (about 30 ms), so the test waits rather than computes on the machine
it shares."""
BURST = 8
"""Drafts at once, subject and body `NEAR_THE_BUDGET`: 16 renders for 2 render processes."""
BUSY = timedelta(seconds=12)
"""How long both render processes are busy when the burst arrives: longer than the 10 s a draft
attempt had when its clock included the wait (then every draft of the burst timed out and was
rendered again, and under a longer queue most failed `DRAFT_FAILED`)."""


async def draft_closed(handle: WorkflowHandle[Any, Any]) -> None:
    """Waits (long-polling the history, no queries for the busy worker to answer) until the
    instance's draft completed or the instance ended."""
    while True:
        try:
            async for event in handle.fetch_history_events(wait_new_event=True):
                if event.WhichOneof("attributes") in {
                    "activity_task_completed_event_attributes",
                    "workflow_execution_failed_event_attributes",
                    "workflow_execution_terminated_event_attributes",
                    "workflow_execution_timed_out_event_attributes",
                }:
                    return
        except RPCError:
            # The dev server sometimes ends a history long-poll with "branch tokens don't
            # match" (seen under load); reading the history again from the start is safe.
            await asyncio.sleep(0.2)


async def test_a_burst_of_drafts_behind_busy_render_processes_all_draft_first_time(
    temporal: Client, settings: Settings, worker: Worker
) -> None:
    # Both render processes of this worker are taken for `BUSY` by work ahead of the burst
    # (sleeping, so that the test costs no CPU: a render that long would be a template at its
    # deadline, and on a shared 2-core machine a real one is not a steady 12 s).
    pool = templates._render_pool()
    ahead = [
        asyncio.wrap_future(pool.schedule(time_module.sleep, args=(BUSY.total_seconds(),)))
        for _ in range(templates.RENDER_PROCESSES)
    ]
    clock = VirtualClock(temporal, settings)
    snapshot = one_step(subject=NEAR_THE_BUDGET, body=NEAR_THE_BUDGET)

    handles = await asyncio.gather(*(clock.enrol(snapshot) for _ in range(BURST)))
    async with asyncio.timeout(BUSY.total_seconds() + 60):
        await asyncio.gather(*(draft_closed(handle) for handle in handles))
    await asyncio.gather(*ahead)

    statuses = [await status_of(handle) for handle in handles]
    assert [s.workflow_stop_reason for s in statuses] == [None] * BURST
    assert all(s.has_pending_approval for s in statuses)
    for handle in handles:
        events = await activity_events(handle, DRAFT_CONTENT_ACTIVITY)
        # One attempt each: none timed out waiting for its turn, none was rendered twice.
        assert started_attempts(events) == [1], handle.id
        assert not any(e.HasField("activity_task_timed_out_event_attributes") for e in events)
        [started] = [e for e in events if e.HasField("activity_task_started_event_attributes")]
        [completed] = [e for e in events if e.HasField("activity_task_completed_event_attributes")]
        waited = completed.event_time.ToDatetime() - started.event_time.ToDatetime()
        assert waited > options.HEARTBEAT_TIMEOUT, "the draft waited its turn, heartbeating"
    await asyncio.gather(*(handle.terminate("test over") for handle in handles))


# --- calls a retry cannot mend --------------------------------------------------------------------


@activity.defn(name=BUSINESS_DAYS_LATER_ACTIVITY)
async def broken_calendar(request: BusinessDaysRequest) -> BusinessDaysResult:
    """`business_days_later` on a worker whose calendar fails every time (a bug, a worker
    without the zone's data): the one activity the workflow cannot get an answer from."""
    raise RuntimeError(f"no calendar for {request.lead_time_zone or 'UTC'} on this worker")


async def test_a_business_day_delay_that_cannot_be_computed_fails_the_instance_after_the_cap(
    temporal: Client, settings: Settings, store: Store
) -> None:
    # The production worker's configuration, built on a queue of its own (a second worker on
    # the same queue is refused) and moved to the test's, with the one activity replaced.
    aside = settings.model_copy(update={"task_queue": f"{settings.task_queue}-aside"})
    production = build_worker(temporal, aside, store).config()
    production["task_queue"] = settings.task_queue
    production["activities"] = [
        each
        for each in production.get("activities", [])
        if getattr(each, "__name__", None) != "business_days_later"
    ] + [broken_calendar]
    clock = VirtualClock(temporal, settings)
    snapshot = CampaignSnapshot(
        name="Business days",
        steps=[
            CampaignStep(
                id="intro",
                subject="Hello",
                body="Hi",
                requires_approval=False,
                delay_business_days=2,
            ),
            CampaignStep(id="follow-up", subject="Again", body="Hi", requires_approval=False),
        ],
    )

    async with Worker(**production):
        handle = await clock.enrol(snapshot)
        # The retries' backoff is virtual time: skipped.
        async with asyncio.timeout(60):
            await clock.skipper.fast_forward(handle, None)
        cause = await assert_failed_with(handle, StopReason.DELAY_FAILED)
        status = await status_of(handle)

    assert "no calendar" in cause.message
    assert status.workflow_status == WorkflowStatus.FAILED
    assert status.workflow_stop_reason == StopReason.DELAY_FAILED
    assert status.failure is not None and status.failure.step_id == "intro"
    assert "no calendar for UTC" in status.failure.message
    assert [(d.step_id, d.outcome) for d in status.deliveries] == [("intro", DeliveryOutcome.SENT)]
    events = await activity_events(handle, BUSINESS_DAYS_LATER_ACTIVITY)
    assert started_attempts(events) == [options.BUSINESS_DAYS_RETRY.maximum_attempts]
    assert any(e.HasField("activity_task_failed_event_attributes") for e in events)
    assert len(outbox_files(settings)) == 1, "the follow-up was never drafted nor sent"


MAILBOX = "sales@example.com"
NEW_YORK = ZoneInfo("America/New_York")
SATURDAY = 5
NEW_YORK_OFFICE_HOURS = SendWindow(
    days=["mon", "tue", "wed", "thu", "fri"],
    start="09:00",
    end="17:00",
    time_zone="America/New_York",
)


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "mailboxes": {
                MAILBOX: MailboxLimits(
                    account_groups="*", daily_cap=1, time_zone="America/New_York"
                )
            }
        }
    ],
)
async def test_a_slot_that_cannot_be_given_back_is_left_and_the_instance_stops(
    temporal: Client, settings: Settings, store: Store, worker: Worker
) -> None:
    clock = VirtualClock(temporal, settings)
    handle = await clock.enrol(
        CampaignSnapshot(
            name="Capped",
            steps=[CampaignStep(id="intro", subject="Hello", body="Hi")],
            send_window=NEW_YORK_OFFICE_HOURS,
            mailbox=MAILBOX,
        )
    )
    await assert_eventually(lambda: status_of(handle), lambda s: s.has_pending_approval)
    saturday = next_weekday(await clock.now(handle), SATURDAY, time(10, 0), NEW_YORK)
    await clock.advance_to(handle, saturday)
    await handle.signal(CampaignWorkflow.approve, {"request_id": "r1", "decided_by": "test"})
    waiting = await assert_eventually(lambda: status_of(handle), lambda s: s.scheduled is not None)
    assert waiting.scheduled is not None and waiting.scheduled.send_at is not None
    monday = waiting.scheduled.send_at.astimezone(NEW_YORK).date()
    reservations = MailboxReservations(store)
    assert await reservations.count_on(MAILBOX, monday) == 1

    engine = create_async_engine(settings.resolved_database_url)
    try:
        async with engine.begin() as connection:
            # The store loses the table for a while: every release fails, for real.
            await connection.execute(
                text("ALTER TABLE mailbox_reservations RENAME TO mailbox_reservations_away")
            )
        await handle.signal(CampaignWorkflow.stop, "not this one")
        async with asyncio.timeout(60):
            await clock.skipper.fast_forward(handle, None)
        result: LeadStatus = await handle.result()
    finally:
        async with engine.begin() as connection:
            await connection.execute(
                text("ALTER TABLE mailbox_reservations_away RENAME TO mailbox_reservations")
            )
        await engine.dispose()

    assert result.workflow_status == WorkflowStatus.STOPPED
    assert result.workflow_stop_reason == StopReason.STOPPED_BY_OPERATOR
    events = await activity_events(handle, RELEASE_SEND_SLOT_ACTIVITY)
    assert started_attempts(events) == [options.RELEASE_SEND_SLOT_RETRY.maximum_attempts]
    assert any(e.HasField("activity_task_failed_event_attributes") for e in events)
    # Left behind, as decided: it only counts against Monday's cap.
    assert await reservations.count_on(MAILBOX, monday) == 1
