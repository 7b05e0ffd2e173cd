"""Webhook events of a gate: pending, reminders before expiry, resolved — in order, signed, with
stable event ids; day-long gates in virtual time (per-workflow time skipping, real server)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import TimeSkipper
from temporalio.worker import Worker

from activities.campaign import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    webhook_signature,
)
from api.campaigns import campaign_of, snapshot_of
from api.instances import WorkflowInstances
from campaign_engine.ids import workflow_id_for
from devsupport.servers import WebhookReceiver
from tests.helpers import Api, Campaign, assert_eventually, lead
from workflows.campaign import CampaignWorkflow
from workflows.types import ApproveRequest, Lead, StopReason, WorkflowStatus

SECRET = "s3cret-signing-key-of-the-campaign"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"webhook_allow_private_addresses": True}


async def start_slow(api: Api, campaign: Campaign, temporal: Client, url: str) -> tuple[str, Any]:
    """A one-gate campaign (expires in a day, reminders 12 h and 1 h before) started on a
    virtual clock; returns (workflow id, handle)."""
    definition = {
        "name": "Day-long gate",
        "approvalTimeout": "P1D",
        "approvalReminder": ["PT1H", "PT12H"],
        "webhook": {"url": url, "secret": SECRET},
        "steps": [{"id": "intro", "subject": "Hi", "body": "Hello", "requiresApproval": True}],
    }
    put = await api.http.put(campaign.url, json=definition, headers=campaign.auth)
    assert put.status_code == 200, put.text
    record = await api.store.get_campaign(campaign.account_group_id, campaign.campaign_id)
    assert record is not None
    skipping = TimeSkipper(temporal).client
    enrolled = lead()
    started = await WorkflowInstances(skipping, api.settings.task_queue, 5).enrol(
        campaign.account_group_id,
        campaign.campaign_id,
        Lead(id=enrolled["id"], email=enrolled["email"]),
        snapshot_of(campaign_of(record)),
    )
    workflow_id = workflow_id_for(
        campaign.account_group_id, campaign.campaign_id, started.workflow_instance_id
    )
    return workflow_id, skipping.get_workflow_handle_for(CampaignWorkflow.run, workflow_id)


def events_of(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """Each request's payload, after checking its signature."""
    payloads = []
    for request in receiver.requests:
        timestamp = request.headers[TIMESTAMP_HEADER.lower()]
        assert request.headers[SIGNATURE_HEADER.lower()] == webhook_signature(
            SECRET, request.headers[EVENT_ID_HEADER.lower()], timestamp, request.body
        )
        payload = json.loads(request.body)
        payload["eventId"] = request.headers[EVENT_ID_HEADER.lower()]
        payloads.append(payload)
    return payloads


async def test_pending_reminders_and_expiry_arrive_in_order(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client, receiver: WebhookReceiver
) -> None:
    workflow_id, handle = await start_slow(api, campaign, temporal, receiver.url)

    result = await handle.result()

    assert result.workflow_stop_reason == StopReason.APPROVAL_EXPIRED
    events = events_of(receiver)
    assert [(e["event"], e.get("reminderSecondsBeforeExpiry")) for e in events] == [
        ("approval.pending", None),
        ("approval.reminder", 43200),
        ("approval.reminder", 3600),
        ("approval.resolved", None),
    ]
    gate_ids = {e["gateId"] for e in events}
    assert len(gate_ids) == 1
    [gate_id] = gate_ids
    assert events[-1]["resolution"] == "expired"
    assert events[-1]["decidedBy"] == "system"
    assert events[-1]["decidedAt"] >= events[-1]["expiresAt"]
    assert [e["eventId"] for e in events] == [
        f"{workflow_id}:{gate_id}:approval.pending",
        f"{workflow_id}:{gate_id}:approval.reminder:43200",
        f"{workflow_id}:{gate_id}:approval.reminder:3600",
        f"{workflow_id}:{gate_id}:approval.resolved",
    ]
    assert "ada@example.com" not in str(events)


async def test_approval_sends_resolved_without_holding_delivery(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client, receiver: WebhookReceiver
) -> None:
    _, handle = await start_slow(api, campaign, temporal, receiver.url)

    async def pending() -> bool:
        return len(receiver.requests) >= 1

    await assert_eventually(pending)
    await handle.signal(
        CampaignWorkflow.approve, ApproveRequest(request_id="r1", decided_by="key-1")
    )

    result = await handle.result()

    assert result.workflow_status == WorkflowStatus.COMPLETED
    events = events_of(receiver)
    assert [e["event"] for e in events] == ["approval.pending", "approval.resolved"]
    resolved = events[-1]
    assert (resolved["resolution"], resolved["decidedBy"]) == ("approved", "key-1")
    assert [d.decision.value for d in result.gate_decisions] == ["approved"]
