"""Gates that end and operator-only signals, each at the phase where it matters."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.worker import Worker

from campaign_engine.codec import data_converter
from campaign_engine.ids import workflow_id_for
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from devsupport.servers import SmtpSink
from entrypoints.devserver import DevServer
from tests.helpers import (
    TWO_STEP_CAMPAIGN,
    Api,
    Campaign,
    approve,
    assert_eventually,
    assert_failed_with,
    enrol,
    enrol_to_gate,
    handle_of,
    lead_status,
    outbox_files,
    replace_campaign,
    wait_for_status,
)
from tests.keys import TEST_PAYLOAD_KEYS
from worker import build_worker
from workflows.campaign import CampaignWorkflow
from workflows.types import DiscardRequest, LeadEvent, LeadStatus, StopReason, StopRequest


async def drafted_steps(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Step ids whose draft activity was scheduled, read from the workflow's history (whose
    payloads are encrypted: decoded as our clients decode them, under the test keys)."""
    converter = data_converter(Settings(payload_keys=TEST_PAYLOAD_KEYS))
    history = await handle.fetch_history()
    steps = []
    for event in history.events:
        if not event.HasField("activity_task_scheduled_event_attributes"):
            continue
        attributes = event.activity_task_scheduled_event_attributes
        if attributes.activity_type.name == "draft_content":
            [draft_input] = await converter.decode(attributes.input.payloads)
            steps.append(draft_input["step"]["id"])
    return steps


async def test_discard_at_gate_stops_without_delivery(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    handle = handle_of(temporal, campaign, instance_id)

    await handle.signal(CampaignWorkflow.discard, DiscardRequest(decided_by="ops@acme.test"))

    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
    assert status["workflowStopReason"] == "CONTENT_DISCARDED"
    assert status["hasPendingApproval"] is False
    result: LeadStatus = await handle.result()
    [decision] = result.gate_decisions
    assert (decision.step_id, decision.decision, decision.decided_by) == (
        "intro",
        "discarded",
        "ops@acme.test",
    )
    assert outbox_files(api.settings) == []
    approved = await approve(api, campaign, instance_id)
    assert approved.status_code == 409
    assert approved.json()["error"]["details"] == "WORKFLOW_CLOSED"


async def test_gate_expires_after_approval_timeout(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    quick_expiry = {**TWO_STEP_CAMPAIGN, "approvalTimeout": 1}
    await replace_campaign(api, campaign, quick_expiry)
    instance_id = await enrol(api, campaign, {"id": "a" * 24, "email": "ada@example.com"})

    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")

    assert status["workflowStopReason"] == "APPROVAL_EXPIRED"
    assert status["latestStep"] == "intro"
    assert outbox_files(api.settings) == []


async def test_lead_replied_during_delay_ends_before_next_draft(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    approved = await approve(api, campaign, instance_id)
    assert approved.status_code == 200
    await wait_for_status(
        api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
    )
    handle = handle_of(temporal, campaign, instance_id)

    await handle.signal(CampaignWorkflow.lead_replied, LeadEvent(note="asked for a call"))

    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
    assert status["workflowStopReason"] == "LEAD_REPLIED"
    assert status["latestStep"] == "intro"
    assert await drafted_steps(handle) == ["intro"]
    assert len(outbox_files(api.settings)) == 1
    result: LeadStatus = await handle.result()
    assert result.stop is not None and result.stop.note == "asked for a call"


async def test_lead_unsubscribed_at_gate_stops(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    instance_id = await enrol_to_gate(api, campaign)

    await handle_of(temporal, campaign, instance_id).signal(CampaignWorkflow.lead_unsubscribed)

    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
    assert status["workflowStopReason"] == "LEAD_UNSUBSCRIBED"
    assert outbox_files(api.settings) == []


async def test_stop_during_delivery_lets_the_message_go_once(
    smtp: SmtpSink, api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    smtp.data_delay_seconds = 1.5
    instance_id = await enrol_to_gate(api, campaign)
    approved = await approve(api, campaign, instance_id)
    assert approved.status_code == 200

    async def sending() -> bool:
        return smtp.data_attempts >= 1

    await assert_eventually(sending)
    handle = handle_of(temporal, campaign, instance_id)
    await handle.signal(
        CampaignWorkflow.stop, StopRequest(reason="paused by ops", decided_by="ops")
    )
    mid_delivery = await lead_status(api, campaign, instance_id)

    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")

    assert mid_delivery["workflowStatus"] == "running"
    assert status["workflowStopReason"] == "STOPPED_BY_OPERATOR"
    assert len(smtp.received()) == 1
    assert await drafted_steps(handle) == ["intro"]


async def test_stray_signals_change_nothing(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    handle = handle_of(temporal, campaign, instance_id)

    await asyncio.gather(*(handle.signal("not_a_signal", {"x": i}) for i in range(20)))

    status = await lead_status(api, campaign, instance_id)
    assert status["hasPendingApproval"] is True
    approved = await approve(api, campaign, instance_id)
    assert approved.status_code == 200


async def test_operator_signal_from_temporal_cli(
    api: Api, campaign: Campaign, worker: Worker, temporal_server: DevServer
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    workflow_id = workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id)
    # The README's command, as an operator would type it.
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("temporal")),
        "workflow", "signal", "--address", temporal_server.address,
        "--workflow-id", workflow_id, "--name", "discard",
        "--input", '{"discarded_by": "cli-operator", "note": "off-brand copy"}',
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()

    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")

    assert status["workflowStopReason"] == "CONTENT_DISCARDED"


async def test_lead_status_query_carries_the_audit_record(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    await approve(api, campaign, instance_id)

    status = await handle_of(temporal, campaign, instance_id).query(CampaignWorkflow.lead_status)

    [decision] = status.gate_decisions
    assert decision.decision == "approved"
    assert decision.decided_by == campaign.key.id
    assert len(decision.request_id) == 32


async def test_draft_failure_fails_instance(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    # Valid for the sample lead at PUT, but divides by zero for a lead without a company.
    fragile = {
        **TWO_STEP_CAMPAIGN,
        "steps": [
            {**TWO_STEP_CAMPAIGN["steps"][0], "body": "{{ 100 // (lead.company | length) }}"}
        ],
    }
    await replace_campaign(api, campaign, fragile)
    instance_id = await enrol(api, campaign, {"id": "b" * 24, "email": "bo@example.com"})

    status = await wait_for_status(api, campaign, instance_id, workflowStatus="failed")

    assert status["workflowStopReason"] == "DRAFT_FAILED"
    handle = handle_of(temporal, campaign, instance_id)
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    cause = await assert_failed_with(handle, StopReason.DRAFT_FAILED)
    assert "ZeroDivisionError" in cause.message


async def test_stop_before_drafting_ends_without_a_gate(
    api: Api, campaign: Campaign, temporal: Client, store: Store, settings: Settings
) -> None:
    # No worker yet: the instance has not drafted anything when the stop arrives.
    instance_id = await enrol(api, campaign, {"id": "c" * 24, "email": "cy@example.com"})
    handle = handle_of(temporal, campaign, instance_id)
    await handle.signal(CampaignWorkflow.stop, StopRequest(reason="wrong list"))

    async with build_worker(temporal, settings, store):
        result = await handle.result()

    assert result.workflow_status.value == "stopped"
    assert result.workflow_stop_reason is not None
    assert result.workflow_stop_reason.value == "STOPPED_BY_OPERATOR"
    assert result.gate_decisions == []
    assert outbox_files(api.settings) == []
