"""The Web UI's own buttons, pressed with Temporal's own CLI (`temporal workflow cancel`,
`terminate`, `reset`) against the real dev server, at each phase of an instance: what the REST
caller then reads, what approve answers, what the review queue lists, and what happens to the
mailbox slot the instance held."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from campaign_engine.deliveries import Delivery
from campaign_engine.ids import (
    InstanceRef,
    message_id_for,
    new_object_id,
    workflow_id_for,
    workflow_id_of_message_id,
)
from campaign_engine.mailboxes import MailboxReservations
from campaign_engine.settings import MailboxLimits
from campaign_engine.store import Store
from devsupport.servers import SmtpSink
from entrypoints.devserver import DevServer
from tests.helpers import (
    TWO_STEP_CAMPAIGN,
    Api,
    Campaign,
    approve,
    approve_ok,
    assert_eventually,
    create_campaign,
    enrol,
    enrol_to_gate,
    handle_of,
    instance_data,
    message_id_of,
    outbox_files,
    wait_for_status,
)
from worker import build_worker
from workflows.campaign import CampaignWorkflow
from workflows.types import CampaignInput, CampaignSnapshot, CampaignStep, Lead

TEMPORAL = str(Path(sys.executable).with_name("temporal"))
MAILBOX = "sales@acme.example"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


async def press(server: DevServer, button: str, workflow_id: str, *extra: str) -> None:
    """Runs `temporal workflow <button> --workflow-id …` as an operator types it."""
    process = await asyncio.create_subprocess_exec(
        TEMPORAL, "workflow", button, "--address", server.address,
        "--workflow-id", workflow_id, *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, (out + err).decode()


def workflow_id_of(campaign: Campaign, instance_id: str) -> str:
    return workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id)


async def queue(api: Api, campaign: Campaign, **filters: str) -> dict[str, dict[str, Any]]:
    """The review queue's items by instance id, with `filters` as query parameters."""
    response = await api.http.get(
        f"{campaign.url}/workflow-instances", params=filters, headers=campaign.auth
    )
    assert response.status_code == 200, response.text
    return {item["workflowInstanceId"]: item for item in response.json()["data"]["items"]}


async def assert_closed_and_refused(
    api: Api, campaign: Campaign, instance_id: str, reason: str, workflow_status: str = "stopped"
) -> dict[str, Any]:
    """The GET says the instance is closed for `reason` with nothing pending, and approve is a
    409 `WORKFLOW_CLOSED` in the reference envelope; returns the GET's data."""
    await wait_for_status(
        api, campaign, instance_id, workflowStatus=workflow_status, workflowStopReason=reason
    )
    response = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
    data: dict[str, Any] = response.json()["data"]
    assert data["leadStatus"]["hasPendingApproval"] is False
    assert data["pendingContent"] is None
    assert "etag" not in response.headers
    refused = await approve(api, campaign, instance_id)
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["success"] is False and body["data"] is None
    assert body["error"]["code"] == "NO_PENDING_APPROVAL"
    assert body["error"]["details"] == "WORKFLOW_CLOSED"
    assert body["traceId"]
    return data


async def test_terminate_at_the_gate_reads_stopped_and_leaves_the_review_queue(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client, temporal_server: DevServer
) -> None:
    # The reproduction: before, the GET still answered `pending` with the content,
    # and the review queue still listed the instance as waiting for review.
    instance_id = await enrol_to_gate(api, campaign)
    waiting = await queue(api, campaign, hasPendingApproval="true")
    assert waiting[instance_id]["hasPendingApproval"] is True

    await press(temporal_server, "terminate", workflow_id_of(campaign, instance_id),
                "--reason", "wrong list")  # fmt: skip

    description = await handle_of(temporal, campaign, instance_id).describe()
    assert description.status == WorkflowExecutionStatus.TERMINATED
    data = await assert_closed_and_refused(api, campaign, instance_id, "TERMINATED")
    assert data["leadStatus"]["latestStep"] == "intro"
    assert data["delivery"] is None

    async def listed() -> tuple[bool, dict[str, Any] | None, bool, bool]:
        pending = await queue(api, campaign, hasPendingApproval="true")
        everything = await queue(api, campaign)
        stopped = await queue(api, campaign, workflowStatus="stopped")
        still_pending = await queue(api, campaign, workflowStatus="pending")
        return (
            instance_id in pending,
            everything.get(instance_id),
            instance_id in stopped,
            instance_id in still_pending,
        )

    in_pending, item, in_stopped, in_still_pending = await assert_eventually(
        listed, lambda seen: not seen[0] and seen[2], what="the queue to drop the instance"
    )
    assert not in_pending and in_stopped and not in_still_pending
    assert item is not None
    assert (item["workflowStatus"], item["hasPendingApproval"]) == ("stopped", False)
    assert instance_id in await queue(api, campaign, hasPendingApproval="false")
    assert outbox_files(api.settings) == []


async def test_cancel_at_the_gate_stops_canceled(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client, temporal_server: DevServer
) -> None:
    instance_id = await enrol_to_gate(api, campaign)

    await press(temporal_server, "cancel", workflow_id_of(campaign, instance_id))

    data = await assert_closed_and_refused(api, campaign, instance_id, "CANCELED")
    handle = handle_of(temporal, campaign, instance_id)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert all(decision["decision"] != "approved" for decision in data["approvals"])
    assert outbox_files(api.settings) == []
    pending = await queue(api, campaign, hasPendingApproval="true")
    assert instance_id not in pending


async def test_cancel_during_the_delay_stops_before_the_next_draft(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client, temporal_server: DevServer
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    await approve_ok(api, campaign, instance_id)
    await wait_for_status(
        api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
    )

    await press(temporal_server, "cancel", workflow_id_of(campaign, instance_id))

    data = await assert_closed_and_refused(api, campaign, instance_id, "CANCELED")
    assert data["leadStatus"]["latestStep"] == "intro"
    assert len(outbox_files(api.settings)) == 1
    history = await handle_of(temporal, campaign, instance_id).fetch_history()
    drafts = [
        event
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name == "draft_content"
    ]
    assert len(drafts) == 1


async def test_cancel_before_the_first_draft_cancels_the_draft(
    api: Api, campaign: Campaign, temporal: Client, temporal_server: DevServer, store: Store
) -> None:
    # No worker yet: the cancellation arrives with the start, while the instance is drafting.
    instance_id = await enrol(api, campaign)
    await press(temporal_server, "cancel", workflow_id_of(campaign, instance_id))

    async with build_worker(temporal, api.settings, store):
        await assert_closed_and_refused(api, campaign, instance_id, "CANCELED")
        handle = handle_of(temporal, campaign, instance_id)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
        history = await handle.fetch_history()
    completed_drafts = [
        event
        for event in history.events
        if event.HasField("activity_task_completed_event_attributes")
    ]
    assert completed_drafts == []
    assert outbox_files(api.settings) == []


async def test_cancel_while_the_message_waits_for_its_window_sends_nothing(
    api: Api, worker: Worker, temporal: Client, temporal_server: DevServer
) -> None:
    today = WEEKDAYS[datetime.now(UTC).weekday()]
    closed_today = {
        **TWO_STEP_CAMPAIGN,
        "sendWindow": {"days": [day for day in WEEKDAYS if day != today], "start": "00:00",
                       "end": "24:00"},
    }  # fmt: skip
    campaign = await create_campaign(api, closed_today)
    instance_id = await enrol_to_gate(api, campaign)
    await approve_ok(api, campaign, instance_id)

    async def delivery() -> dict[str, Any] | None:
        found: dict[str, Any] | None = (await instance_data(api, campaign, instance_id))["delivery"]
        return found

    await assert_eventually(delivery, lambda d: d is not None and d["state"] == "scheduled")

    await press(temporal_server, "cancel", workflow_id_of(campaign, instance_id))

    data = await assert_closed_and_refused(api, campaign, instance_id, "CANCELED")
    assert data["delivery"] is None
    assert outbox_files(api.settings) == []


@pytest.mark.parametrize(
    ("button", "reason"), [("cancel", "CANCELED"), ("terminate", "TERMINATED")]
)
async def test_a_button_during_delivery_retries_sends_nothing(
    button: str,
    reason: str,
    smtp: SmtpSink,
    api: Api,
    campaign: Campaign,
    worker: Worker,
    temporal_server: DevServer,
    store: Store,
) -> None:
    smtp.transient_failures = 1_000_000  # every DATA answered 451: the delivery retries
    instance_id = await enrol_to_gate(api, campaign)
    await approve_ok(api, campaign, instance_id)

    async def attempts() -> int:
        return smtp.data_attempts

    await assert_eventually(attempts, lambda n: n >= 1, what="a delivery attempt")

    await press(temporal_server, button, workflow_id_of(campaign, instance_id))
    # From now on the server accepts: a retry that the button did not stop would be delivered
    # (a cancelled delivery is waited for, so the instance closes only after its verdict).
    smtp.transient_failures = 0

    await assert_closed_and_refused(api, campaign, instance_id, reason)
    assert smtp.received() == []
    async with store.session() as session:
        row = await session.get(Delivery, message_id_of(campaign, instance_id, "intro"))
    assert row is None or row.state == "claimed"


async def test_reset_replays_the_lead_without_sending_twice(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client, temporal_server: DevServer
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    await approve_ok(api, campaign, instance_id)
    await wait_for_status(
        api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
    )
    assert len(outbox_files(api.settings)) == 1

    await press(temporal_server, "reset", workflow_id_of(campaign, instance_id),
                "--type", "FirstWorkflowTask", "--reason", "replay the lead")  # fmt: skip

    # The new run starts over: it drafts again and waits at the first gate.
    await wait_for_status(api, campaign, instance_id, hasPendingApproval=True)
    await approve_ok(api, campaign, instance_id)
    await wait_for_status(
        api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
    )
    data = await instance_data(api, campaign, instance_id)
    assert data["leadStatus"]["latestStep"] == "intro"
    assert len(outbox_files(api.settings)) == 1  # the ledger knew it was sent


SPACED = {MAILBOX: MailboxLimits(account_groups="*", minimum_spacing_seconds=3600)}
SPACED_CAMPAIGN = {**TWO_STEP_CAMPAIGN, "from": f"Sales <{MAILBOX}>"}


async def approved_and_waiting(api: Api, campaign: Campaign) -> tuple[str, datetime]:
    """A fresh lead approved; waits until its message is scheduled; returns its instance id and
    send time."""
    instance_id = await enrol_to_gate(api, campaign)
    await approve_ok(api, campaign, instance_id)

    async def delivery() -> dict[str, Any] | None:
        found: dict[str, Any] | None = (await instance_data(api, campaign, instance_id))["delivery"]
        return found

    seen = await assert_eventually(delivery, lambda d: d is not None and d["state"] == "scheduled")
    assert seen is not None and seen["deferredBecause"] == "mailbox_spacing"
    return instance_id, datetime.fromisoformat(seen["nextAttemptAt"])


@pytest.mark.parametrize("settings_overrides", [{"mailboxes": SPACED}])
@pytest.mark.parametrize("button", ["terminate", "cancel"])
async def test_a_closed_instances_slot_goes_to_the_next_lead(
    button: str, api: Api, worker: Worker, temporal_server: DevServer, store: Store
) -> None:
    # The reproduction: a message waiting for its slot was terminated, kept the slot,
    # and the next lead's was pushed an hour later.
    campaign = await create_campaign(api, SPACED_CAMPAIGN)
    first = await enrol_to_gate(api, campaign)
    await approve_ok(api, campaign, first)
    await wait_for_status(api, campaign, first, workflowStatus="pending", hasPendingApproval=False)
    second, second_slot = await approved_and_waiting(api, campaign)
    reservations = MailboxReservations(store)
    assert await reservations.get(message_id_of(campaign, second, "intro")) is not None

    await press(temporal_server, button, workflow_id_of(campaign, second))
    await wait_for_status(api, campaign, second, workflowStatus="stopped")
    third, third_slot = await approved_and_waiting(api, campaign)

    assert abs(third_slot - second_slot) < timedelta(seconds=5), (second_slot, third_slot)
    assert await reservations.get(message_id_of(campaign, second, "intro")) is None
    assert await reservations.get(message_id_of(campaign, third, "intro")) is not None


@pytest.mark.parametrize("settings_overrides", [{"mailboxes": SPACED}])
async def test_a_running_instances_slot_is_kept(api: Api, worker: Worker, store: Store) -> None:
    campaign = await create_campaign(api, SPACED_CAMPAIGN)
    first = await enrol_to_gate(api, campaign)
    await approve_ok(api, campaign, first)
    await wait_for_status(api, campaign, first, workflowStatus="pending", hasPendingApproval=False)
    _, second_slot = await approved_and_waiting(api, campaign)

    _, third_slot = await approved_and_waiting(api, campaign)

    assert third_slot - second_slot >= timedelta(seconds=3599)


async def test_a_timed_out_execution_reads_failed_timed_out(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    # Our enrolment sets no execution timeout; an operator's start (or another tool's) may.
    lead_id = new_object_id()
    ref = InstanceRef.of_lead(campaign.account_group_id, campaign.campaign_id, lead_id)
    await temporal.start_workflow(
        CampaignWorkflow.run,
        CampaignInput(
            account_group_id=campaign.account_group_id,
            campaign_id=campaign.campaign_id,
            workflow_instance_id=ref.workflow_instance_id,
            lead=Lead(id=lead_id, email="ada@example.com", first_name="Ada"),
            campaign=CampaignSnapshot(
                name="Timed", steps=[CampaignStep(id="intro", subject="Hi", body="Hello")]
            ),
        ),
        id=ref.workflow_id,
        task_queue=api.settings.task_queue,
        execution_timeout=timedelta(seconds=3),
    )
    await wait_for_status(api, campaign, ref.workflow_instance_id, hasPendingApproval=True)

    await assert_closed_and_refused(
        api, campaign, ref.workflow_instance_id, "TIMED_OUT", workflow_status="failed"
    )


def test_a_message_id_names_its_workflow() -> None:
    workflow_id = workflow_id_for("a" * 24, "b" * 24, "c" * 24)
    assert workflow_id_of_message_id(message_id_for(workflow_id, "follow-up_2")) == workflow_id
    assert workflow_id_of_message_id("<someone.else@example.com>") is None
