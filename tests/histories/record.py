"""Records workflow histories for the replay suite into the current release's folder
(`make histories`).

`python -m tests.histories.record [--release DAY] [--replace] [shape ...]` runs each shape (all, or
those named) with today's code on a fresh dev server and writes its history, payloads encrypted, to
`tests/histories/<DAY>/<shape>[_run<n>].json` (DAY: today, UTC). Older release folders are frozen:
today's code never writes into them, and no history is ever overwritten unless `--replace` is
given, which only the newest release allows (one still being prepared). Commit the JSON files; the
replay suite then fails CI for any change that would break running instances.

A history of the code *before* a patch (its old branch) is recorded with that code: check it out
(`git worktree add /tmp/old <commit>`) and run `python -m tests.histories.old_code /tmp/old
[--release DAY] shape ...` from this tree; it imports the application from the checkout and these
shapes from here, and names the file `<shape>_at_<commit>.json`. For code older than this recorder,
record with that commit's own recorder, copy the file into the release folder of that code and
encrypt it in place: `python -m tests.histories.record --encrypt FILE.json`.

The histories are recorded as production writes them: every payload encrypted (AES-256-GCM,
`campaign_engine.codec`), here under the test key checked in at `tests/keys.py`, with which
`tests/test_replay.py` decrypts them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields, make_dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import Header, Payload, SearchAttributes
from temporalio.api.history.v1 import MarkerRecordedEventAttributes
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.testing import TimeSkipper, TimeSkippingConfig

from api.instances import WorkflowInstances
from campaign_engine.codec import ENCODING, EncryptionCodec, codec_for
from campaign_engine.ids import new_object_id, workflow_id_for
from campaign_engine.key_usage import PATCH_MARKER
from campaign_engine.settings import Settings
from campaign_engine.store import Store, Suppression, utcnow
from campaign_engine.temporal import TemporalConnection, connect
from devsupport.servers import SmtpSink, WebhookReceiver
from entrypoints.devserver import DevServer

# Only the folder layout: it imports nothing of the application (which `old_code` swaps).
from tests.histories import RELEASE_NAME, ROOT, release_order, releases
from tests.keys import TEST_PAYLOAD_KEYS
from worker import build_worker
from workflows.campaign import CampaignWorkflow
from workflows.types import (
    ApproveRequest,
    CampaignInput,
    CampaignPauseEvent,
    CampaignSnapshot,
    CampaignStep,
    DiscardRequest,
    InboundEvent,
    Lead,
    LeadEvent,
    SendWindow,
    StopReason,
    StopRequest,
)

DAY = 24 * 3600.0
QUICK_STEPS = [
    CampaignStep(id="intro", subject="Hi {{ lead.firstName }}", body="Hello", delay_seconds=1),
    CampaignStep(id="follow-up", subject="Again", body="Hello again", requires_approval=False),
]
TWO_STEPS = [
    CampaignStep(id="intro", subject="Hi {{ lead.firstName }}", body="Hello", delay_seconds=DAY),
    CampaignStep(id="follow-up", subject="Again", body="Hello again", requires_approval=False),
]


@dataclass
class Context:
    """What a shape needs: clients (real-time and time-skipping), the settings, the store and the
    SMTP sink."""

    client: Client
    skipping: Client
    """Starts workflows with a virtual clock: timers fire as soon as nothing else is pending."""
    settings: Settings
    store: Store
    smtp: SmtpSink


Shape = Callable[[Context], Awaitable[list[WorkflowHandle[Any, Any]]]]


def _input(
    steps: list[CampaignStep],
    *,
    approval_timeout: float | None = 7 * DAY,
    webhook_url: str | None = None,
    continue_as_new_after_events: int | None = None,
) -> CampaignInput:
    return CampaignInput(
        account_group_id=new_object_id(),
        campaign_id=new_object_id(),
        workflow_instance_id=new_object_id(),
        lead=Lead(id=new_object_id(), email="ada@example.com", first_name="Ada"),
        campaign=CampaignSnapshot(
            name="Recorded",
            steps=steps,
            approval_timeout_seconds=approval_timeout,
            webhook_url=webhook_url,
        ),
        continue_as_new_after_events=continue_as_new_after_events,
    )


async def _start(
    client: Client, settings: Settings, input: CampaignInput
) -> WorkflowHandle[Any, Any]:
    started = await WorkflowInstances(client, settings.task_queue, timeout_seconds=10).enrol(
        input.account_group_id,
        input.campaign_id,
        input.lead,
        input.campaign,
        continue_as_new_after_events=input.continue_as_new_after_events,
    )
    workflow_id = workflow_id_for(
        input.account_group_id, input.campaign_id, started.workflow_instance_id
    )
    return client.get_workflow_handle_for(CampaignWorkflow.run, workflow_id)


async def _until(handle: WorkflowHandle[Any, Any], **expected: Any) -> None:
    status = None
    for _ in range(400):
        status = await handle.query(CampaignWorkflow.lead_status)
        if all(getattr(status, name) == value for name, value in expected.items()):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"never reached {expected}; last {status}")


async def _approve(handle: WorkflowHandle[Any, Any]) -> None:
    await _until(handle, has_pending_approval=True)
    await handle.signal(CampaignWorkflow.approve, ApproveRequest(uuid.uuid4().hex, "recorder"))


async def gate_approved(ctx: Context) -> list[Any]:
    """The first gate is approved; 1 s later the follow-up (no gate) is sent and the run ends."""
    handle = await _start(ctx.client, ctx.settings, _input(QUICK_STEPS))
    await _approve(handle)
    await handle.result()
    return [handle]


async def gate_expired(ctx: Context) -> list[Any]:
    """On the virtual clock: the first step's gate stays unanswered until it expires (7 days), which
    stops the instance."""
    handle = await _start(ctx.skipping, ctx.settings, _input(TWO_STEPS))
    await handle.result()
    return [handle]


async def discarded(ctx: Context) -> list[Any]:
    """The first gate is discarded, which stops the instance."""
    handle = await _start(ctx.client, ctx.settings, _input(TWO_STEPS))
    await _until(handle, has_pending_approval=True)
    await handle.signal(CampaignWorkflow.discard, DiscardRequest(decided_by="recorder"))
    await handle.result()
    return [handle]


async def replied_during_delay(ctx: Context) -> list[Any]:
    """Approved, then the lead replies during the 1-day delay after the first step: it stops."""
    handle = await _start(ctx.client, ctx.settings, _input(TWO_STEPS))
    await _approve(handle)
    await _until(handle, workflow_status="pending", has_pending_approval=False)
    await handle.signal(CampaignWorkflow.lead_replied, LeadEvent(note="interested"))
    await handle.result()
    return [handle]


async def delivery_failed(ctx: Context) -> list[Any]:
    """Approved, then the SMTP server refuses the recipient (550 5.1.1): the delivery fails, and so
    may the workflow."""
    input = _input(TWO_STEPS)
    input.lead.email = "refused@example.com"
    handle = await _start(ctx.client, ctx.settings, input)
    await _approve(handle)
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    return [handle]


async def stopped_during_delivery(ctx: Context) -> list[Any]:
    """Approved; every DATA gets a 451, so delivery retries until a stop signal cancels it."""
    # The server answers 451 to DATA: the delivery retries, and the stop cancels it.
    ctx.smtp.transient_failures = 1_000_000
    try:
        handle = await _start(ctx.client, ctx.settings, _input(TWO_STEPS))
        await _approve(handle)
        while ctx.smtp.data_attempts < 2:  # noqa: ASYNC110 - another thread's doing
            await asyncio.sleep(0.05)
        await handle.signal(CampaignWorkflow.stop, StopRequest(reason="recorded"))
        await handle.result()
    finally:
        ctx.smtp.transient_failures = 0
    return [handle]


async def notified_then_approved(ctx: Context) -> list[Any]:
    """The webhook (answering 503) is called when the gate opens; the gate is then approved, which
    cancels the pending notice's retries. The receiver then answers 200: since `approval-events`
    the resolution is notified too, and would otherwise be retried for an hour."""
    receiver = WebhookReceiver(status=503)
    await receiver.start()
    try:
        input = _input([CampaignStep(id="only", subject="S", body="B")], webhook_url=receiver.url)
        await ctx.store.put_campaign(
            input.account_group_id,
            input.campaign_id,
            {"webhook": {"url": receiver.url, "secret": "recorded-signing-secret"}},
        )
        handle = await _start(ctx.client, ctx.settings, input)
        while not receiver.requests:  # noqa: ASYNC110 - another process's doing
            await asyncio.sleep(0.05)
        receiver.status = 200
        await _approve(handle)
        await handle.result()
    finally:
        await receiver.stop()
    return [handle]


async def continued_as_new(ctx: Context) -> list[Any]:
    """60 stray signals at the gate push the run past 40 events: it continues as new, then is
    approved.

    Returns both runs' handles, first run first.
    """
    handle = await _start(
        ctx.client, ctx.settings, _input(QUICK_STEPS, continue_as_new_after_events=40)
    )
    await _until(handle, has_pending_approval=True)
    first_run = (await handle.describe()).run_id
    await asyncio.gather(*(handle.signal("stray", i) for i in range(60)))
    while (await handle.describe()).run_id == first_run:  # noqa: ASYNC110 - the server's doing
        await asyncio.sleep(0.05)
    await _approve(handle)
    await handle.result()
    return [ctx.client.get_workflow_handle(handle.id, run_id=first_run), handle]


async def continued_as_new_in_delay(ctx: Context) -> list[Any]:
    """40 stray signals during the first step's 2 s delay (no gates) push the run past 30 events,
    so it continues as new.

    Returns both runs' handles, first run first.
    """
    steps = [
        CampaignStep(
            id="intro", subject="Hi", body="Hello", requires_approval=False, delay_seconds=2
        ),
        CampaignStep(id="follow-up", subject="Again", body="Hello again", requires_approval=False),
    ]
    handle = await _start(ctx.client, ctx.settings, _input(steps, continue_as_new_after_events=30))
    await _until(handle, workflow_status="pending")
    first_run = (await handle.describe()).run_id
    await asyncio.gather(*(handle.signal("stray", i) for i in range(40)))
    await handle.result()
    return [ctx.client.get_workflow_handle(handle.id, run_id=first_run), handle]


async def gate_changed_then_approved(ctx: Context) -> list[Any]:
    """Conditional approvals (`If-Match`): the first gate is approved naming its id; a second
    approval naming the same, now closed, gate is refused `GATE_CHANGED` at the next gate, which is
    then approved with `*`."""
    steps = [
        CampaignStep(id="intro", subject="Hi", body="Hello"),
        CampaignStep(id="follow-up", subject="Again", body="Hello again"),
    ]
    handle = await _start(ctx.client, ctx.settings, _input(steps))
    await _until(handle, has_pending_approval=True)
    first_gate = (await handle.query(CampaignWorkflow.lead_status)).gate_id
    assert first_gate is not None
    approve = CampaignWorkflow.approve
    await handle.signal(approve, ApproveRequest(uuid.uuid4().hex, "recorder", [first_gate]))
    await _until(handle, has_pending_approval=True, latest_step="follow-up")
    await handle.signal(approve, ApproveRequest(uuid.uuid4().hex, "recorder", [first_gate]))
    await handle.signal(approve, ApproveRequest(uuid.uuid4().hex, "recorder", ["*"]))
    await handle.result()
    return [handle]


async def sent_in_window(ctx: Context) -> list[Any]:
    """A send window closed today (UTC): the approved intro waits for tomorrow's window (virtual
    time), then a one-business-day delay, then the follow-up is sent in its window."""
    today = datetime.now(UTC).weekday()
    days = [day for number, day in enumerate(WEEKDAY_NAMES) if number != today]
    steps = [
        CampaignStep(id="intro", subject="Hi", body="Hello", delay_business_days=1),
        CampaignStep(id="follow-up", subject="Again", body="Hello again", requires_approval=False),
    ]
    input = _input(steps, approval_timeout=None)
    input.campaign.send_window = SendWindow(days=days, start="00:00", end="24:00")
    handle = await _start(ctx.skipping, ctx.settings, input)
    await _approve(handle)
    await handle.result()
    return [handle]


async def paused_then_resumed(ctx: Context) -> list[Any]:
    """The campaign is paused: the approved intro is held (`campaign_paused` signal, then the
    store's flag at hand-over); on `campaign_resumed` it is sent."""
    input = _input([CampaignStep(id="intro", subject="Hi", body="Hello")], approval_timeout=None)
    await ctx.store.put_campaign(input.account_group_id, input.campaign_id, {"name": "Recorded"})
    await ctx.store.set_campaign_paused(
        input.account_group_id, input.campaign_id, paused_by="recorder"
    )
    handle = await _start(ctx.client, ctx.settings, input)
    await _until(handle, has_pending_approval=True)
    await handle.signal(CampaignWorkflow.campaign_paused, CampaignPauseEvent("recorder"))
    await _approve(handle)
    for _ in range(400):
        status = await handle.query(CampaignWorkflow.lead_status)
        if status.scheduled is not None:
            break
        await asyncio.sleep(0.05)
    await ctx.store.set_campaign_paused(input.account_group_id, input.campaign_id, paused_by=None)
    await handle.signal(CampaignWorkflow.campaign_resumed, CampaignPauseEvent("recorder"))
    await handle.result()
    return [handle]


async def approval_events_approved(ctx: Context) -> list[Any]:
    """Approval events with a webhook (answering 200): `approval.pending` with the gate id, the
    reminders' timers set (12 h and 1 h before the gate's 1-day expiry), then the gate approved:
    the timers cancelled and `approval.resolved` sent beside the delivery."""
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        steps = [CampaignStep(id="only", subject="S", body="B")]
        input = _input(steps, approval_timeout=DAY, webhook_url=receiver.url)
        input.campaign.approval_reminder_seconds = [3600.0, 12 * 3600.0]
        await _webhook_secret(ctx, input, receiver)
        handle = await _start(ctx.client, ctx.settings, input)
        while not receiver.requests:  # noqa: ASYNC110 - another process's doing
            await asyncio.sleep(0.05)
        await _approve(handle)
        await handle.result()
        _expect_events(receiver, ["approval.pending", "approval.resolved"])
    finally:
        await receiver.stop()
    return [handle]


async def approval_events_reminded_then_expired(ctx: Context) -> list[Any]:
    """On the virtual clock, a gate with a webhook and a 1-day expiry: `approval.pending`, the
    reminders 12 h and 1 h before, then the expiry stops the instance and `approval.resolved`
    (expired) is sent."""
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        steps = [CampaignStep(id="only", subject="S", body="B")]
        input = _input(steps, approval_timeout=DAY, webhook_url=receiver.url)
        input.campaign.approval_reminder_seconds = [3600.0, 12 * 3600.0]
        await _webhook_secret(ctx, input, receiver)
        handle = await _start(ctx.skipping, ctx.settings, input)
        await handle.result()
        _expect_events(
            receiver,
            ["approval.pending", "approval.reminder", "approval.reminder", "approval.resolved"],
        )
    finally:
        await receiver.stop()
    return [handle]


async def _webhook_secret(ctx: Context, input: CampaignInput, receiver: WebhookReceiver) -> None:
    """The campaign's webhook and signing secret, in the store (the secret stays out of the
    history: the notify activity reads it there)."""
    await ctx.store.put_campaign(
        input.account_group_id,
        input.campaign_id,
        {"webhook": {"url": receiver.url, "secret": "recorded-signing-secret"}},
    )


def _expect_events(receiver: WebhookReceiver, expected: list[str]) -> None:
    events = [json.loads(request.body)["event"] for request in receiver.requests]
    if events != expected:
        raise AssertionError(f"webhook events {events}, expected {expected}")


async def continued_as_new_while_scheduled(ctx: Context) -> list[Any]:
    """A send window closed today (UTC): the approved intro is deferred to tomorrow's window; 40
    stray signals while it waits push the run past 30 events, so it continues as new with the
    delivery due (`ResumeAt.DELIVERY`); the new run is deferred again and, its clock then made
    virtual, sends in the window.

    Returns both runs' handles, first run first.
    """
    today = datetime.now(UTC).weekday()
    days = [day for number, day in enumerate(WEEKDAY_NAMES) if number != today]
    steps = [CampaignStep(id="intro", subject="Hi", body="Hello")]
    input = _input(steps, approval_timeout=None, continue_as_new_after_events=30)
    input.campaign.send_window = SendWindow(days=days, start="00:00", end="24:00")
    handle = await _start(ctx.client, ctx.settings, input)
    first_run = (await handle.describe()).run_id
    await _approve(handle)
    await _until_scheduled(handle)
    await asyncio.gather(*(handle.signal("stray", i) for i in range(40)))
    while (await handle.describe()).run_id == first_run:  # noqa: ASYNC110 - the server's doing
        await asyncio.sleep(0.05)
    await _until_scheduled(handle)
    # The new run waits for tomorrow's window: from here on its clock is virtual.
    await TimeSkipper(ctx.client).fast_forward(ctx.client.get_workflow_handle(handle.id), None)
    await handle.result()
    return [ctx.client.get_workflow_handle(handle.id, run_id=first_run), handle]


async def _until_scheduled(handle: WorkflowHandle[Any, Any]) -> None:
    for _ in range(400):
        if (await handle.query(CampaignWorkflow.lead_status)).scheduled is not None:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the delivery was never scheduled")


async def suppressed_at_send(ctx: Context) -> list[Any]:
    """The lead is put on its account group's suppression list while its message waits at the
    gate (straight into the store, as when the signal cannot reach it); once approved, the
    delivery finds it there (`LeadSuppressed`), sends nothing, and the instance stops
    `LEAD_UNSUBSCRIBED`."""
    input = _input(TWO_STEPS)
    handle = await _start(ctx.client, ctx.settings, input)
    await _until(handle, has_pending_approval=True)
    await ctx.store.add_suppression(
        Suppression(
            account_group_id=input.account_group_id,
            lead_id=input.lead.id,
            email_hash=None,
            source="api",
            decided_by="recorder",
            note="",
            created_at=utcnow(),
        )
    )
    await handle.signal(CampaignWorkflow.approve, ApproveRequest(uuid.uuid4().hex, "recorder"))
    status = await handle.result()
    if status.workflow_stop_reason != StopReason.LEAD_UNSUBSCRIBED:
        raise AssertionError(f"stopped {status.workflow_stop_reason}, expected LEAD_UNSUBSCRIBED")
    return [handle]


async def canceled_at_gate(ctx: Context) -> list[Any]:
    """Cancellation is requested in Temporal (as the Web UI's button and `temporal workflow
    cancel` do) while the first gate waits: since `cancel-as-stop` the instance stops `CANCELED`
    (the gate resolved, nothing sent) and the execution closes Canceled; before, the
    cancellation was raised at the gate."""
    handle = await _start(ctx.client, ctx.settings, _input(TWO_STEPS))
    await _until(handle, has_pending_approval=True)
    await handle.cancel()
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    return [handle]


async def canceled_while_scheduled(ctx: Context) -> list[Any]:
    """A send window closed today (UTC): the approved intro waits for tomorrow's window; then
    cancellation is requested: the instance stops `CANCELED` without sending."""
    today = datetime.now(UTC).weekday()
    days = [day for number, day in enumerate(WEEKDAY_NAMES) if number != today]
    input = _input([CampaignStep(id="intro", subject="Hi", body="Hello")], approval_timeout=None)
    input.campaign.send_window = SendWindow(days=days, start="00:00", end="24:00")
    handle = await _start(ctx.client, ctx.settings, input)
    await _approve(handle)
    await _until_scheduled(handle)
    await handle.cancel()
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    return [handle]


async def draft_failed(ctx: Context) -> list[Any]:
    """The intro divides by the length of the lead's company, which is empty: rendering fails
    (`TemplateRenderError`, never retried) and the instance fails `DRAFT_FAILED`."""
    steps = [CampaignStep(id="intro", subject="Hi", body="{{ 100 // (lead.company | length) }}")]
    handle = await _start(ctx.client, ctx.settings, _input(steps))
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    status = await handle.query(CampaignWorkflow.lead_status)
    if status.workflow_stop_reason != StopReason.DRAFT_FAILED:
        raise AssertionError(f"ended {status.workflow_stop_reason}, expected DRAFT_FAILED")
    return [handle]


async def continued_as_new_carrying_a_notice(ctx: Context) -> list[Any]:
    """The webhook answers the gate's `approval.pending`, then 503: the `approval.resolved` of the
    approved intro is being retried when 40 stray signals in the 2 s delay push the run past 40
    events. The run continues as new at once (patch `carry-notices`), handing the notice over;
    the new run sends it (the receiver answers 200 again) and goes on.

    Returns both runs' handles, first run first.
    """
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        steps = [
            CampaignStep(id="intro", subject="Hi", body="Hello", delay_seconds=2),
            CampaignStep(id="follow-up", subject="Again", body="Hi", requires_approval=False),
        ]
        input = _input(steps, webhook_url=receiver.url, continue_as_new_after_events=40)
        await _webhook_secret(ctx, input, receiver)
        handle = await _start(ctx.client, ctx.settings, input)
        first_run = (await handle.describe()).run_id
        while not receiver.requests:  # noqa: ASYNC110 - another process's doing
            await asyncio.sleep(0.05)
        receiver.status = 503
        await _approve(handle)
        await _until(handle, workflow_status="pending", has_pending_approval=False)
        await asyncio.gather(*(handle.signal("stray", i) for i in range(40)))
        while (await handle.describe()).run_id == first_run:  # noqa: ASYNC110 - the server's doing
            await asyncio.sleep(0.05)
        receiver.status = 200
        await handle.result()
        events = [json.loads(request.body)["event"] for request in receiver.requests]
        if events[0] != "approval.pending" or events[-1] != "approval.resolved":
            raise AssertionError(f"webhook events {events}")
    finally:
        await receiver.stop()
    return [ctx.client.get_workflow_handle(handle.id, run_id=first_run), handle]


async def held_out_of_office(ctx: Context) -> list[Any]:
    """A campaign with `outOfOfficeHold` (14 days; patch `out-of-office-hold`), on a virtual
    clock that stands still until the end: at the intro's gate an out-of-office answer says the
    lead is back in 5 days; the approved intro is held for it; a newer answer says 3 days,
    which moves the hold; then time runs: the intro is sent when the hold ends, the follow-up
    (no gate) after it.

    Code from before the patch ignores the option (an instance the new API enrolled while the
    old workers still ran; the input carries it all the same): it records the answers and sends
    at once.
    """
    steps = [
        CampaignStep(id="intro", subject="Hi", body="Hello", delay_seconds=1),
        CampaignStep(id="follow-up", subject="Again", body="Hello again", requires_approval=False),
    ]
    input = _input(steps, approval_timeout=None)
    input.campaign = _with_out_of_office_hold(input.campaign, 14 * DAY)
    still = TimeSkipper(ctx.client, config=TimeSkippingConfig(enabled=False))
    handle = await _start(still.client, ctx.settings, input)
    await _until(handle, has_pending_approval=True)
    await _out_of_office(handle, "ooo-first", days=5)
    await _approve(handle)
    held = await _until_held_or_sent(handle)
    await _out_of_office(handle, "ooo-newer", days=3)
    if held:
        back = (datetime.now(UTC) + timedelta(days=3)).date()
        for _ in range(400):
            scheduled = (await handle.query(CampaignWorkflow.lead_status)).scheduled
            if scheduled and scheduled.send_at and scheduled.send_at.date() == back:
                break
            await asyncio.sleep(0.05)
        else:
            raise TimeoutError("the newer answer never moved the hold")
    await still.fast_forward(ctx.client.get_workflow_handle(handle.id), None)
    await handle.result()
    return [handle]


def _with_out_of_office_hold(snapshot: CampaignSnapshot, seconds: float) -> CampaignSnapshot:
    """`snapshot` with `out_of_office_hold_seconds`: for older code, whose snapshot type lacks
    the field, a subclass that has it, so the input carries it as the new API writes it (the
    older worker's converter ignores it)."""
    if "out_of_office_hold_seconds" in {f.name for f in fields(CampaignSnapshot)}:
        return replace(snapshot, out_of_office_hold_seconds=seconds)
    with_option = make_dataclass(
        "CampaignSnapshot",
        [("out_of_office_hold_seconds", float | None, None)],
        bases=(CampaignSnapshot,),
    )
    values = {f.name: getattr(snapshot, f.name) for f in fields(CampaignSnapshot)}
    with_hold: CampaignSnapshot = with_option(**values, out_of_office_hold_seconds=seconds)
    return with_hold


async def _out_of_office(handle: WorkflowHandle[Any, Any], message_id: str, *, days: int) -> None:
    """The inbound pipeline's signal for an out-of-office answer, received now, back in `days`
    days (UTC)."""
    now = datetime.now(UTC)
    back = (now + timedelta(days=days)).date().isoformat()
    await handle.signal(
        CampaignWorkflow.inbound_message,
        InboundEvent(message_id, "auto_reply", now.isoformat(), return_date=back),
    )


async def _until_held_or_sent(handle: WorkflowHandle[Any, Any]) -> bool:
    """Waits until the approved intro is held (True) or sent (False: older code)."""
    for _ in range(400):
        status = await handle.query(CampaignWorkflow.lead_status)
        if status.scheduled is not None:
            return True
        if status.deliveries:
            return False
        await asyncio.sleep(0.05)
    raise TimeoutError("the approved intro was neither held nor sent")


async def mailbox_read(ctx: Context) -> list[Any]:
    """The IMAP reader of a mailbox on a private Dovecot (installed when missing): its first read
    applies a reply (matching nothing) and records bytes that are no message; the mailbox then
    leaves the settings (a worker without it), and after two reads that find it gone the reader
    ends with its cursor."""
    # Imported here: `old_code` runs these shapes against older checkouts without the reader.
    from temporalio.worker import Worker

    from activities.inbound import MailboxActivities
    from campaign_engine.unsubscribe import load_unsubscribe_key
    from devsupport.dovecot import Dovecot, ImapBox
    from devsupport.dovecot import message as imap_message
    from inbound.pipeline import InboundPipeline, PipelineSettings
    from workflows.mailbox_reader import MailboxReaderWorkflow
    from workflows.mailbox_types import MailboxReaderInput, mailbox_reader_id

    directory = Path(tempfile.mkdtemp(prefix="ce-record-dovecot-"))
    dovecot = Dovecot(directory)
    dovecot.start()
    try:
        box = ImapBox(dovecot, f"r{uuid.uuid4().hex[:12]}@example.test", uuid.uuid4().hex)
        dovecot.add_user(box.user, box.password)
        box.append(imap_message(1))
        box.append(b"this is not a message\r\n")
        pipeline = InboundPipeline(
            ctx.store,
            ctx.client,
            load_unsubscribe_key(ctx.settings),
            PipelineSettings.from_settings(ctx.settings),
        )
        queue = f"{ctx.settings.task_queue}-mailbox"

        def reader_worker(mailboxes: dict[str, Any]) -> Worker:
            activities = MailboxActivities(pipeline, mailboxes, max_message_bytes=1_000_000)
            return Worker(
                ctx.client,
                task_queue=queue,
                workflows=[MailboxReaderWorkflow],
                activities=[activities.read_mailbox],
            )

        async with reader_worker({box.user: box.settings()}):
            handle = await ctx.client.start_workflow(
                MailboxReaderWorkflow.run,
                MailboxReaderInput(
                    mailbox=box.user, unconfigured_checks_to_end=2, unconfigured_recheck_seconds=1
                ),
                id=mailbox_reader_id(box.user),
                task_queue=queue,
            )
            for _ in range(400):
                status = await handle.query(MailboxReaderWorkflow.status)
                if status.totals.applied + status.totals.problems == 2:
                    break
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError(f"the reader never read both messages: {status}")
        async with reader_worker({}):
            ended = await handle.result()
        if ended.cursor is None or ended.cursor.last_uid != 2:
            raise AssertionError(f"ended at {ended.cursor}, expected after UID 2")
    finally:
        dovecot.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return [handle]


WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

SHAPES: dict[str, Shape] = {
    "gate_approved": gate_approved,
    "gate_expired": gate_expired,
    "discarded": discarded,
    "replied_during_delay": replied_during_delay,
    "delivery_failed": delivery_failed,
    "stopped_during_delivery": stopped_during_delivery,
    "notified_then_approved": notified_then_approved,
    "continued_as_new": continued_as_new,
    "continued_as_new_in_delay": continued_as_new_in_delay,
    "gate_changed_then_approved": gate_changed_then_approved,
    "sent_in_window": sent_in_window,
    "paused_then_resumed": paused_then_resumed,
    "approval_events_approved": approval_events_approved,
    "approval_events_reminded_then_expired": approval_events_reminded_then_expired,
    "continued_as_new_while_scheduled": continued_as_new_while_scheduled,
    "suppressed_at_send": suppressed_at_send,
    "draft_failed": draft_failed,
    "continued_as_new_carrying_a_notice": continued_as_new_carrying_a_notice,
    "held_out_of_office": held_out_of_office,
    "mailbox_read": mailbox_read,
    "canceled_at_gate": canceled_at_gate,
    "canceled_while_scheduled": canceled_while_scheduled,
}


class Refused(Exception):
    """A recording that would write where it must not (a frozen release, an existing history)."""


def today(root: Path = ROOT) -> str:
    """The current release's name: the newest release folder of today (UTC), `2026-12-04.2`
    after a second release that day, else today's date."""
    day = datetime.now(UTC).date().isoformat()
    same_day = [release for release in releases(root) if release.split(".")[0] == day]
    return same_day[-1] if same_day else day


def _recorded_files(folder: Path, name: str) -> list[Path]:
    """The files of `name` (a shape, with its note if any) in `folder`: `<name>.json` and
    `<name>_run<n>.json`."""
    return sorted(
        path
        for path in folder.glob(f"{name}*.json")
        if path.stem == name
        or (path.stem.startswith(f"{name}_run") and path.stem[len(name) + 4 :].isdigit())
    )


def check_target(
    release: str, names: Sequence[str], *, replace: bool, older_code: bool, root: Path = ROOT
) -> Path:
    """The folder to record `names` into, or `Refused` saying why not.

    Today's code records into a release no older than the newest (older folders are frozen); the
    code of an older release (`older_code`) may add to its own folder. An existing history is
    overwritten only with `replace`, and only in the newest release, by today's code.
    """
    if not RELEASE_NAME.match(release):
        raise Refused(f"release {release!r}: its UTC day, YYYY-MM-DD (YYYY-MM-DD.2 for a second)")
    newest = releases(root)[-1] if releases(root) else None
    if newest and release_order(release) < release_order(newest) and not older_code:
        raise Refused(
            f"release {release} is older than {newest}: its histories are frozen; today's code "
            f"records into {newest} or a newer release (--release {newest}, or the next day's "
            "or number's)"
        )
    folder = root / release
    existing = [path for name in names for path in _recorded_files(folder, name)]
    # Today's code got here only for the newest release (or a newer one).
    if existing and (older_code or not replace):
        listed = ", ".join(f"{release}/{path.name}" for path in existing)
        advice = (
            "older code never overwrites a history"
            if older_code
            else "pass --replace to record them again (only while this release is unreleased)"
        )
        raise Refused(f"already recorded: {listed}; {advice}")
    return folder


async def record(
    only: Sequence[str], *, release: str, replace: bool = False, note: str | None = None
) -> list[Path]:
    """Runs each shape in `SHAPES` (only those named in `only`, when given) on a fresh dev server
    and writes each run's history, payloads encrypted under the test key, to
    `tests/histories/<release>/<shape>[_<note>][_run<n>].json`; returns the files written.

    `note` names older code (`old_code`): its histories may go into that code's own, older,
    release folder, never over an existing file. Raises `Refused` before recording anything when
    a file would land where it must not (`check_target`), KeyError for an unknown shape.
    """
    shapes = {name: SHAPES[name] for name in only} if only else dict(SHAPES)
    names = [f"{name}_{note}" if note else name for name in shapes]
    folder = check_target(release, names, replace=replace, older_code=note is not None)
    written: list[Path] = []
    server = DevServer(time_skipping=True)
    await server.start()
    smtp = SmtpSink(reject_recipient_with="550 5.1.1 no such mailbox", refused_prefix="refused@")
    smtp.start()
    try:
        with tempfile.TemporaryDirectory() as state:
            settings = Settings(
                state_dir=Path(state),
                temporal_address=server.address,
                task_queue=f"record-{uuid.uuid4()}",
                delivery="smtp",
                smtp_port=smtp.port,
                payload_keys=TEST_PAYLOAD_KEYS,
                # The webhook receiver listens on loopback (refused by default since the SSRF
                # rule; without this the webhook shapes waited forever).
                webhook_allow_private_addresses=True,
            )
            # Its own dev server, whatever TEMPORAL_* the shell has set.
            client = await connect(settings, connection=TemporalConnection.plain(settings))
            skipping = TimeSkipper(client).client
            store = await Store.open(settings.resolved_database_url)
            folder.mkdir(exist_ok=True)
            async with build_worker(client, settings, store):
                for (name, shape), stem in zip(shapes.items(), names, strict=True):
                    handles = await shape(Context(client, skipping, settings, store, smtp))
                    for stale in _recorded_files(folder, stem):
                        stale.unlink()  # `--replace`: a re-recording may have fewer runs
                    for run, handle in enumerate(handles, start=1):
                        history = await handle.fetch_history()
                        suffix = f"_run{run}" if len(handles) > 1 else ""
                        path = folder / f"{stem}{suffix}.json"
                        path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
                        written.append(path)
                        events = len(history.events)
                        print(f"recorded {release}/{path.name} ({name}): {events} events")
            await store.close()
    finally:
        smtp.stop()
        await server.stop()
    return written


def _encrypt_payloads(message: Message, codec: EncryptionCodec) -> None:
    """Encrypts, in place, every payload in `message` the codec would have encrypted (all but
    search attributes, headers and the SDK core's patch markers, which it never passes through a
    codec)."""
    if isinstance(message, MarkerRecordedEventAttributes) and message.marker_name == PATCH_MARKER:
        return
    for descriptor, value in message.ListFields():
        kind = descriptor.message_type
        if kind is None or kind.full_name in {
            SearchAttributes.DESCRIPTOR.full_name,
            Header.DESCRIPTOR.full_name,
        }:
            continue
        if kind.GetOptions().map_entry:
            items = list(value.values()) if kind.fields_by_name["value"].message_type else []
        elif descriptor.is_repeated:
            items = list(value)
        else:
            items = [value]
        for item in items:
            if isinstance(item, Payload):
                if item.metadata.get("encoding") != ENCODING:
                    item.CopyFrom(codec.encrypt(item))
            else:
                _encrypt_payloads(item, codec)


def encrypt_recorded(paths: list[Path]) -> None:
    """Encrypts the payloads of histories recorded in clear, under the test key: for a history
    that cannot be recorded again (one recorded with older workflow code, to replay a patch's old
    branch). Payloads already encrypted are left as they are."""
    codec = codec_for(Settings(payload_keys=TEST_PAYLOAD_KEYS))
    for path in paths:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        for event in history.events:
            _encrypt_payloads(event, codec)
        path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
        print(f"encrypted {path.name}", flush=True)


def encrypt_elsewhere(paths: Sequence[Path]) -> None:
    """`encrypt_recorded` in a new process of this tree's code: what `old_code` uses, as the
    older code it imported may not encrypt (or not as today's does)."""
    subprocess.run(
        [sys.executable, "-m", "tests.histories.record", "--encrypt", *map(str, paths)],
        cwd=ROOT.parent.parent,
        check=True,
    )


def parser() -> argparse.ArgumentParser:
    """The recorder's arguments (also `old_code`'s, after its checkout)."""
    root = argparse.ArgumentParser(prog="python -m tests.histories.record", description=__doc__)
    root.add_argument("shapes", nargs="*", metavar="shape", help=f"of: {', '.join(SHAPES)}")
    root.add_argument(
        "--release",
        help="the release folder: YYYY-MM-DD, or YYYY-MM-DD.2 for a second release that day "
        "(default: today, UTC)",
    )
    root.add_argument(
        "--replace", action="store_true", help="record again over this (newest) release's files"
    )
    root.add_argument(
        "--encrypt",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="encrypt these recorded histories' payloads in place, and record nothing",
    )
    return root


def main(argv: Sequence[str] | None = None, *, older_code: tuple[str, str] | None = None) -> int:
    """Runs the recorder; returns the exit code (2 when the recording is refused). Prints as it
    goes (line-buffered).

    `older_code`: (note, release day) of the code `old_code` imported instead of today's.
    """
    args = parser().parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if args.encrypt:
        encrypt_recorded(args.encrypt)
        return 0
    unknown = [name for name in args.shapes if name not in SHAPES]
    if unknown:
        print(
            f"unknown shape(s): {', '.join(unknown)}; known: {', '.join(SHAPES)}", file=sys.stderr
        )
        return 2
    note, default_release = older_code if older_code else (None, today())
    if older_code:
        module = Path(sys.modules[CampaignWorkflow.__module__].__file__ or "?")
        application = module.resolve().parent.parent
        print(f"recording with the application in {application} ({note})")
    try:
        written = asyncio.run(
            record(
                args.shapes,
                release=args.release or default_release,
                replace=args.replace,
                note=note,
            )
        )
    except Refused as refused:
        print(f"not recorded: {refused}", file=sys.stderr)
        return 2
    if older_code and written:
        encrypt_elsewhere(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
