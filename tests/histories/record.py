"""Records one history per workflow shape, for the replay suite (`make histories`).

Run it after a deliberate, compatible change to the workflow (or when adding a shape); commit the
JSON files. The replay test then fails CI for any change that would break running instances.

The histories are recorded as production writes them: every payload encrypted (AES-256-GCM,
`campaign_engine.codec`), here under the test key checked in at `tests/keys.py`, with which
`tests/test_replay.py` decrypts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import Header, Payload, SearchAttributes
from temporalio.api.history.v1 import MarkerRecordedEventAttributes
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.testing import TimeSkipper

from api.instances import WorkflowInstances
from campaign_engine.codec import ENCODING, EncryptionCodec, codec_for
from campaign_engine.ids import new_object_id, workflow_id_for
from campaign_engine.key_usage import PATCH_MARKER
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from campaign_engine.temporal import connect
from devsupport.servers import SmtpSink, WebhookReceiver
from entrypoints.devserver import DevServer
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
    Lead,
    LeadEvent,
    SendWindow,
    StopRequest,
)

HERE = Path(__file__).parent
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
    """The webhook (answering 503) is called when the gate opens; the gate is then approved."""
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
}


async def record(only: list[str]) -> None:
    """Runs each shape in `SHAPES` (only those named in `only`, when given) on a fresh dev server
    and writes each run's history, payloads encrypted under the test key, to
    `tests/histories/<shape>[_run<n>].json`."""
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
                # rule; without this the `notified_then_approved` shape waited forever).
                webhook_allow_private_addresses=True,
            )
            client = await connect(settings)
            skipping = TimeSkipper(client).client
            store = await Store.open(settings.resolved_database_url)
            async with build_worker(client, settings, store):
                for name, shape in SHAPES.items():
                    if only and name not in only:
                        continue
                    handles = await shape(Context(client, skipping, settings, store, smtp))
                    for run, handle in enumerate(handles, start=1):
                        history = await handle.fetch_history()
                        suffix = f"_run{run}" if len(handles) > 1 else ""
                        path = HERE / f"{name}{suffix}.json"
                        path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
                        print(f"recorded {path.name}: {len(history.events)} events", flush=True)
            await store.close()
    finally:
        smtp.stop()
        await server.stop()


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


if __name__ == "__main__":
    # `python -m tests.histories.record [shape ...]`: all shapes, or just those named.
    # `python -m tests.histories.record --encrypt FILE.json ...`: encrypt histories in place.
    if sys.argv[1:2] == ["--encrypt"]:
        encrypt_recorded([Path(arg) for arg in sys.argv[2:]])
    else:
        asyncio.run(record(sys.argv[1:]))
