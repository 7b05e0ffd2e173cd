"""The durable IMAP source: `MailboxReaderWorkflow` and `read_mailbox` against a real Dovecot and
the real Temporal dev server, with the production worker (`worker.build_worker`).

Mail goes in with IMAP APPEND; what the reader did is read back from what a user sees (the
instance stops, its `inboundMessages`), from the inbound log in the store, and from the reader's
`status` query. Latencies are printed, never asserted (`python -m bench.imap_reader` measures
them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy.exc
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from temporalio.client import Client, WorkflowHandle
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities.inbound import MailboxActivities
from campaign_engine.inbound_messages import InboundMessageRow
from campaign_engine.settings import MailboxLimits, Settings
from campaign_engine.store import Store
from campaign_engine.temporal import connect
from campaign_engine.unsubscribe import load_unsubscribe_key
from devsupport.dovecot import ImapBox
from entrypoints.devserver import free_port
from inbound.matching import Scope
from inbound.pipeline import InboundPipeline, Outcome, PipelineSettings
from tests.helpers import (
    Api,
    Campaign,
    assert_eventually,
    create_campaign,
    enrol_to_gate,
    instance_data,
    lead,
    wait_for_status,
)
from tests.helpers.campaigns import TWO_STEP_CAMPAIGN, enrol
from tests.helpers.workflows import worker_process
from tests.inbound_mail import message
from worker import build_worker
from worker.mailbox_readers import start_mailbox_readers
from workflows.mailbox_reader import MailboxReaderWorkflow
from workflows.mailbox_types import (
    MailboxCursor,
    MailboxReaderInput,
    MailboxReaderStatus,
    mailbox_reader_id,
)


@pytest.fixture
def imap_options() -> dict[str, Any]:
    """The `imap` block's options beyond the box's own (a test parametrizes it)."""
    return {}


@pytest.fixture
def settings_overrides(imap_box: ImapBox, imap_options: dict[str, Any]) -> dict[str, Any]:
    """The test's settings read the test's own Dovecot mailbox, a sending mailbox of its own."""
    return {
        "mailboxes": {
            imap_box.user: MailboxLimits(account_groups="*", imap=imap_box.settings(**imap_options))
        }
    }


@pytest.fixture
async def mailbox_campaign(api: Api, imap_box: ImapBox) -> Campaign:
    """A two-step campaign sending from the test's mailbox (so its leads are that mailbox's)."""
    return await create_campaign(api, {**TWO_STEP_CAMPAIGN, "from": imap_box.user})


@asynccontextmanager
async def running_worker(client: Client, settings: Settings, store: Store) -> AsyncIterator[Worker]:
    """The production worker, for as long as the block runs (a test restarts it)."""
    async with build_worker(client, settings, store) as running:
        yield running


def reply(sender: str, text: str = "Thanks, let's talk on Friday.") -> bytes:
    """A person's reply from `sender`, with a fresh Message-ID and no threading headers (so it
    matches by its From address, against the enrolment)."""
    return message(
        f"From: Someone <{sender}>",
        "To: Sales <sales@example.test>",
        "Subject: Re: Hello",
        f"Message-ID: <{uuid.uuid4()}@example.com>",
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}",
        body=text,
    )


def reader_handle(temporal: Client, imap_box: ImapBox) -> WorkflowHandle[Any, Any]:
    """The handle of the test mailbox's reader."""
    return temporal.get_workflow_handle_for(
        MailboxReaderWorkflow.run, mailbox_reader_id(imap_box.user)
    )


async def reader_status(temporal: Client, imap_box: ImapBox) -> MailboxReaderStatus | None:
    """The reader's `status`, or None while it is not there yet."""
    try:
        return await reader_handle(temporal, imap_box).query(MailboxReaderWorkflow.status)
    except Exception:
        return None


async def wait_for_reader(
    temporal: Client,
    imap_box: ImapBox,
    until: Callable[[MailboxReaderStatus], bool],
    what: str = "the mailbox reader's status",
) -> MailboxReaderStatus:
    """Waits until the reader's `status` satisfies `until`; returns it."""
    status = await assert_eventually(
        lambda: reader_status(temporal, imap_box),
        lambda seen: seen is not None and until(seen),
        within=30,
        what=what,
    )
    assert status is not None
    return status


async def reader_waiting(temporal: Client, imap_box: ImapBox) -> MailboxReaderStatus:
    """Waits until the reader has finished a first read (it then waits for new mail)."""
    return await wait_for_reader(
        temporal, imap_box, lambda seen: seen.cursor is not None, "the reader's first read"
    )


async def logged(store: Store, imap_box: ImapBox) -> list[InboundMessageRow]:
    """The inbound log's rows of the mailbox's scope."""
    async with store.session() as session:
        rows = await session.scalars(
            select(InboundMessageRow).where(InboundMessageRow.scope == f"mailbox:{imap_box.user}")
        )
        return list(rows)


async def stopped_replied(api: Api, campaign: Campaign, instance_id: str) -> None:
    """Waits until the instance stopped `LEAD_REPLIED`."""
    status = await wait_for_status(api, campaign, instance_id, within=30, workflowStatus="stopped")
    assert status["workflowStopReason"] == "LEAD_REPLIED"


# --- the durable reader ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "imap_options",
    [{"idle": True}, {"idle": False, "poll_interval_seconds": 1}],
    ids=["idle", "polling"],
)
async def test_replies_stop_their_instances_once_across_a_worker_restart_and_stay_unread(
    api: Api,
    mailbox_campaign: Campaign,
    imap_box: ImapBox,
    temporal: Client,
    settings: Settings,
    store: Store,
    imap_options: dict[str, Any],
) -> None:
    campaign = mailbox_campaign
    async with running_worker(temporal, settings, store):
        ada = await enrol_to_gate(api, campaign)
        grace = await enrol(api, campaign, lead(email="grace@example.com", firstName="Grace"))
        await reader_waiting(temporal, imap_box)

        first_uid = await asyncio.to_thread(imap_box.append, reply("ada@example.com"))
        appended = time.monotonic()
        await stopped_replied(api, campaign, ada)
        latency = time.monotonic() - appended
        # The instance stops while the read is still under way: its count follows the read.
        status = await wait_for_reader(
            temporal, imap_box, lambda seen: seen.totals.applied >= 1, "the read's count"
        )
        assert status.totals.applied == 1

    # A new worker: the reader goes on from its cursor, the first reply is not applied again.
    async with running_worker(temporal, settings, store):
        second_uid = await asyncio.to_thread(imap_box.append, reply("grace@example.com"))
        await stopped_replied(api, campaign, grace)

        status = await wait_for_reader(
            temporal,
            imap_box,
            lambda seen: seen.cursor is not None and seen.cursor.last_uid >= second_uid,
        )
        # (A closed instance answers its GET through a worker's query: still in the block.)
        for instance_id in (ada, grace):
            [shown] = (await instance_data(api, campaign, instance_id))["inboundMessages"]
            assert (shown["classification"], shown["excerpt"]) == (
                "reply",
                "Thanks, let's talk on Friday.",
            )
    assert (status.totals.applied, status.totals.duplicates, status.totals.problems) == (2, 0, 0)
    rows = await logged(store, imap_box)
    assert (
        sorted((row.source, row.classification, row.action) for row in rows)
        == [("imap", "reply", "stopped")] * 2
    )
    assert {row.workflow_instance_id for row in rows} == {ada, grace}
    # Read-only: both still there, neither \Seen nor otherwise flagged by the reader.
    _, flags = imap_box.look()
    assert sorted(flags) == [first_uid, second_uid]
    assert all(b"\\Seen" not in f and b"\\Deleted" not in f for f in flags.values())
    print(
        f"\nAPPEND -> instance stopped ({'IDLE' if imap_options['idle'] else 'polling 1 s'}): "
        f"{latency * 1000:.0f} ms"
    )


async def test_a_killed_worker_process_reader_resumes_in_the_next_process(
    api: Api,
    mailbox_campaign: Campaign,
    imap_box: ImapBox,
    temporal: Client,
    settings: Settings,
    store: Store,
) -> None:
    """`campaign-engine worker` as deployed, the mailbox in `CAMPAIGN_ENGINE_MAILBOXES`: SIGKILLed
    while its read waits in IDLE, the next process's read takes over (Temporal notices the lost
    read by its heartbeat timeout) and goes on from the cursor."""
    campaign = mailbox_campaign
    imap = {"host": "127.0.0.1", "port": imap_box.dovecot.plain_port, "security": "none"}
    imap |= {"username": imap_box.user, "password": imap_box.password}
    mailboxes = json.dumps({imap_box.user: {"account_groups": "*", "imap": imap}})
    async with worker_process(settings, CAMPAIGN_ENGINE_MAILBOXES=mailboxes) as first:
        ada = await enrol_to_gate(api, campaign)
        grace = await enrol(api, campaign, lead(email="grace@example.com", firstName="Grace"))
        await reader_waiting(temporal, imap_box)
        await asyncio.to_thread(imap_box.append, reply("ada@example.com"))
        await stopped_replied(api, campaign, ada)
        # The instance stops inside the read; the read's own result (cursor past Ada's reply)
        # reaches the reader a moment later. Killed before that, the next process reads her
        # reply again and counts it seen before (right, but not the case tested here).
        await wait_for_reader(
            temporal, imap_box, lambda seen: seen.totals.applied == 1, "Ada's read recorded"
        )
        first.kill()
        await first.wait()
    async with worker_process(settings, CAMPAIGN_ENGINE_MAILBOXES=mailboxes):
        await asyncio.to_thread(imap_box.append, reply("grace@example.com"))
        appended = time.monotonic()
        await stopped_replied(api, campaign, grace)
        took = time.monotonic() - appended
        status = await wait_for_reader(
            temporal, imap_box, lambda seen: seen.totals.applied + seen.totals.duplicates == 2
        )
    assert (status.totals.applied, status.totals.duplicates) == (2, 0)
    assert len(await logged(store, imap_box)) == 2
    print(f"\nreply applied {took:.1f} s after APPEND, the last worker SIGKILLed in IDLE")


async def test_bytes_that_are_no_message_are_recorded_and_the_reader_goes_on(
    api: Api,
    mailbox_campaign: Campaign,
    imap_box: ImapBox,
    settings: Settings,
    store: Store,
) -> None:
    port = free_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}"))
    )
    client = await connect(settings, runtime=runtime)
    campaign = mailbox_campaign
    async with running_worker(client, settings, store):
        ada = await enrol_to_gate(api, campaign)
        grace = await enrol(api, campaign, lead(email="grace@example.com", firstName="Grace"))
        await reader_waiting(client, imap_box)
        # Appended as one batch: the reader meets them in one read, in this order.
        connection = imap_box.client()
        try:
            connection.multiappend(
                "INBOX",
                [
                    reply("ada@example.com"),
                    b"this is not a message\r\n",
                    reply("grace@example.com"),
                ],
            )
        finally:
            connection.logout()

        await stopped_replied(api, campaign, ada)
        await stopped_replied(api, campaign, grace)
        status = await wait_for_reader(client, imap_box, lambda seen: seen.totals.problems == 1)
        [problem] = status.recent_problems
        assert (problem.reason, problem.detail) == ("refused:not_a_message", "")
        assert status.totals.applied == 2
        # Still reading: a later reply is applied too.
        third = await enrol(api, campaign, lead(email="alan@example.com", firstName="Alan"))
        await asyncio.to_thread(imap_box.append, reply("alan@example.com"))
        await stopped_replied(api, campaign, third)

        async with httpx.AsyncClient() as http:
            scraped = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    counted = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name.startswith("campaign_inbound") and sample.value > 0
    }
    assert any(
        name == "campaign_inbound_messages_total"
        and ("source", "imap") in labels
        and ("classification", "reply") in labels
        and ("matched_by", "from_address") in labels
        and ("action", "stopped") in labels
        for name, labels in counted
    ), counted
    assert any(
        name == "campaign_inbound_imap_problems_total" and ("reason", "refused") in labels
        for name, labels in counted
    ), counted
    assert imap_box.user.split("@")[0] not in scraped.replace(settings.task_queue, "")


# --- poison and outages, with a pipeline that fails on purpose -----------------------------------


class FailingPipeline(InboundPipeline):
    """The real pipeline, except for a message with `X-Test-Fail: <kind>`: `poison` raises a
    ValueError every time; `outage` a database OperationalError its first two times; `hang` never
    answers (as if the worker had died on it)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.calls: dict[str, int] = {}

    async def process(self, raw: bytes, scope: Scope, **options: Any) -> Outcome:
        for kind in ("poison", "outage", "hang"):
            if f"X-Test-Fail: {kind}".encode() in raw:
                self.calls[kind] = self.calls.get(kind, 0) + 1
                if kind == "hang":
                    await asyncio.Event().wait()
                if kind == "poison":
                    raise ValueError("a message our code cannot take")
                if self.calls[kind] <= 2:
                    raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("down"))
        return await super().process(raw, scope, **options)


def failing(raw: bytes, kind: str) -> bytes:
    """`raw` with the header `X-Test-Fail: <kind>` (`FailingPipeline`)."""
    return raw.replace(b"\r\n\r\n", f"\r\nX-Test-Fail: {kind}\r\n\r\n".encode(), 1)


@dataclass
class FailingReader:
    """A reader worker whose pipeline fails on purpose (`FailingPipeline`), on a task queue of its
    own; `running()` runs it (again: a test shuts it down under an attempt)."""

    temporal: Client
    pipeline: FailingPipeline
    activities: MailboxActivities
    queue: str

    def running(self) -> Worker:
        """A new worker of the reader's queue; shut down at once, cancelling a running read."""
        return Worker(
            self.temporal,
            task_queue=self.queue,
            workflows=[MailboxReaderWorkflow],
            activities=[self.activities.read_mailbox],
            graceful_shutdown_timeout=timedelta(0),
        )


@asynccontextmanager
async def failing_reader(
    temporal: Client, settings: Settings, store: Store
) -> AsyncIterator[FailingReader]:
    """The production worker (for the campaign instances) and the test mailbox's reader started
    on a `FailingReader`'s queue (the caller runs a worker for it)."""
    pipeline = FailingPipeline(
        store, temporal, load_unsubscribe_key(settings), PipelineSettings.from_settings(settings)
    )
    imap = {address: m.imap for address, m in settings.mailboxes.items() if m.imap}
    reader = FailingReader(
        temporal,
        pipeline,
        MailboxActivities(pipeline, imap, max_message_bytes=1_000_000),
        f"{settings.task_queue}-reader",
    )
    # The production worker would start the reader on its own queue: it has no mailboxes here.
    production = settings.model_copy(update={"mailboxes": {}})
    async with build_worker(temporal, production, store):
        [mailbox] = imap
        await temporal.start_workflow(
            MailboxReaderWorkflow.run,
            MailboxReaderInput(mailbox=mailbox),
            id=mailbox_reader_id(mailbox),
            task_queue=reader.queue,
        )
        yield reader


async def test_a_poison_message_is_tried_three_times_then_passed_and_an_outage_never(
    api: Api,
    mailbox_campaign: Campaign,
    imap_box: ImapBox,
    temporal: Client,
    settings: Settings,
    store: Store,
) -> None:
    campaign = mailbox_campaign
    async with failing_reader(temporal, settings, store) as reader, reader.running():
        pipeline = reader.pipeline
        ada = await enrol_to_gate(api, campaign)
        grace = await enrol(api, campaign, lead(email="grace@example.com", firstName="Grace"))
        await reader_waiting(temporal, imap_box)
        poison = reply("nobody@example.net").replace(
            b"\r\n\r\n", b"\r\nX-Test-Fail: poison\r\n\r\n", 1
        )
        outage = reply("ada@example.com").replace(
            b"\r\n\r\n", b"\r\nX-Test-Fail: outage\r\n\r\n", 1
        )
        connection = imap_box.client()
        try:
            connection.multiappend("INBOX", [poison, outage, reply("grace@example.com")])
        finally:
            connection.logout()
        uids = sorted(imap_box.look()[1])

        await stopped_replied(api, campaign, ada)
        await stopped_replied(api, campaign, grace)
        status = await wait_for_reader(
            temporal,
            imap_box,
            lambda seen: seen.cursor is not None and seen.cursor.last_uid == uids[-1],
        )
    [problem] = status.recent_problems
    assert (problem.uid, problem.reason, problem.detail, problem.attempts) == (
        uids[0],
        "failed",
        "ValueError",
        3,
    )
    # The poison message: three attempts, then passed. The outage: retried until it was over,
    # never struck, then applied once.
    assert pipeline.calls == {"poison": 3, "outage": 3}
    assert (status.totals.applied, status.totals.problems) == (2, 1)
    assert [row.workflow_instance_id for row in await logged(store, imap_box)].count(ada) == 1


def hung_again_or_passed(pipeline: FailingPipeline) -> Callable[[MailboxReaderStatus], bool]:
    """Whether the reader has hung on the `hang` message once more since now, or passed it."""
    before = pipeline.calls.get("hang", 0)
    return lambda seen: bool(seen.recent_problems) or pipeline.calls.get("hang", 0) > before


async def test_a_message_a_read_is_lost_on_is_struck_by_the_next_reads_then_passed(
    api: Api,
    mailbox_campaign: Campaign,
    imap_box: ImapBox,
    temporal: Client,
    settings: Settings,
    store: Store,
) -> None:
    campaign = mailbox_campaign
    async with failing_reader(temporal, settings, store) as reader:
        ada = await enrol_to_gate(api, campaign)
        connection = imap_box.client()
        try:
            connection.multiappend(
                "INBOX", [failing(reply("nobody@example.net"), "hang"), reply("ada@example.com")]
            )
        finally:
            connection.logout()
        hung_uid = min(imap_box.look()[1])

        # Each read hangs on the message until its worker is shut down under it (the read is
        # lost, as when a worker dies); the next read, on a new worker, finds it in the heartbeat.
        lost = 0
        status: MailboxReaderStatus | None = None
        while status is None or not status.recent_problems:
            assert lost < 6, f"still not passed after {lost} lost reads: {status}"
            async with reader.running():
                status = await wait_for_reader(
                    temporal, imap_box, hung_again_or_passed(reader.pipeline)
                )
                if status.recent_problems:
                    await stopped_replied(api, campaign, ada)
                    break
                # The worker "dies" a moment into the message, as a real one would: its
                # "applying UID n" heartbeat has been sent (a worker dying within the same
                # millisecond may not have sent it: `HEARTBEAT_FLUSH_SECONDS`).
                await asyncio.sleep(0.5)
                await asyncio.sleep(0.5)  # let the "applying UID n" heartbeat reach the server
            lost += 1
    assert status is not None
    [problem] = status.recent_problems
    assert (problem.uid, problem.reason, problem.attempts) == (hung_uid, "failed", 3)
    assert "worker lost" in problem.detail
    assert (lost, reader.pipeline.calls["hang"]) == (3, 3)


# --- the mailbox's life -------------------------------------------------------------------------


async def test_a_recreated_folder_is_read_again_and_nothing_is_applied_twice(
    api: Api,
    mailbox_campaign: Campaign,
    imap_box: ImapBox,
    temporal: Client,
    settings: Settings,
    store: Store,
) -> None:
    imap_box.create_folder("Replies")
    folder = {
        address: m.model_copy(update={"imap": m.imap.model_copy(update={"folder": "Replies"})})
        for address, m in settings.mailboxes.items()
        if m.imap
    }
    settings = settings.model_copy(update={"mailboxes": folder})
    campaign = mailbox_campaign
    first = reply("ada@example.com")
    async with running_worker(temporal, settings, store):
        ada = await enrol_to_gate(api, campaign)
        grace = await enrol(api, campaign, lead(email="grace@example.com", firstName="Grace"))
        before = await reader_waiting(temporal, imap_box)
        await asyncio.to_thread(imap_box.append, first, folder="Replies")
        await stopped_replied(api, campaign, ada)

        # The owner deletes and recreates the folder (a new UIDVALIDITY) and the same reply
        # lands there again with a new one.
        imap_box.delete_folder("Replies")
        imap_box.create_folder("Replies")
        await asyncio.to_thread(imap_box.append, first, folder="Replies")
        await asyncio.to_thread(imap_box.append, reply("grace@example.com"), folder="Replies")
        await stopped_replied(api, campaign, grace)
        status = await wait_for_reader(
            temporal, imap_box, lambda seen: seen.totals.applied + seen.totals.duplicates == 3
        )
    assert status.cursor is not None and before.cursor is not None
    assert status.cursor.uidvalidity != before.cursor.uidvalidity
    assert (status.totals.applied, status.totals.duplicates) == (2, 1)
    assert len(await logged(store, imap_box)) == 2


async def test_a_reader_whose_mailbox_left_the_settings_ends_and_its_successor_goes_on(
    worker: Worker, temporal: Client, settings: Settings, imap_box: ImapBox
) -> None:
    # A reader of a mailbox that no worker's settings have (as after it was taken out).
    gone = f"gone-{uuid.uuid4().hex[:8]}@example.test"
    cursor = MailboxCursor(uidvalidity=7, last_uid=42, resume_date="2026-12-01")
    handle = await temporal.start_workflow(
        MailboxReaderWorkflow.run,
        MailboxReaderInput(
            mailbox=gone,
            cursor=cursor,
            unconfigured_checks_to_end=2,
            unconfigured_recheck_seconds=0.2,
        ),
        id=mailbox_reader_id(gone),
        task_queue=settings.task_queue,
    )

    ended = await handle.result()

    assert (ended.mailbox, ended.cursor) == (gone, cursor)
    # Configured again: the reader started for it picks up the cursor the last one reached.
    again = settings.model_copy(
        update={
            "mailboxes": {
                gone: MailboxLimits(account_groups="*", imap=imap_box.settings(username=gone))
            }
        }
    )
    assert await start_mailbox_readers(temporal, again) == [mailbox_reader_id(gone)]
    restarted = temporal.get_workflow_handle(mailbox_reader_id(gone))
    description = await restarted.describe()
    assert description.run_id != handle.result_run_id
    history = await restarted.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    [decoded] = await temporal.data_converter.decode([payload], [MailboxReaderInput])
    assert decoded.cursor == cursor
    await restarted.terminate("test over")


@pytest.mark.parametrize("imap_options", [{"password": "not-the-password"}], ids=["wrong_password"])
async def test_a_wrong_password_is_one_line_per_attempt_not_a_traceback(
    imap_box: ImapBox,
    temporal: Client,
    settings: Settings,
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)

    def failed_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("read_mailbox: Imap")]

    async with running_worker(temporal, settings, store):
        await assert_eventually(
            lambda: asyncio.sleep(0, failed_lines()),
            lambda found: bool(found),
            within=30,
            what="the reader's failed login logged",
        )
        await asyncio.sleep(1)  # the SDK logs the failed attempt after our line

    [line, *_] = failed_lines()
    assert line.exc_info is None
    assert "fix the mailbox's imap settings" in line.getMessage()
    assert "not-the-password" not in caplog.text
    # The SDK's own "Completing activity as failed" with the traceback: not at WARNING or above.
    assert not [
        r for r in caplog.records if r.name.startswith("temporalio") and r.exc_info is not None
    ]
