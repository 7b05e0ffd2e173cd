"""The `inbound_message` signal on a real instance: what each kind does, as a REST caller and an
operator see it (the pipeline that classifies and matches mail sends this signal)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from tests.helpers import (
    Api,
    Campaign,
    approve,
    current_details,
    enrol_to_gate,
    handle_of,
    instance_data,
    outbox_files,
    wait_for_status,
)
from workflows.campaign import CampaignWorkflow
from workflows.types import InboundEvent


async def test_a_reply_at_the_gate_stops_and_shows_its_excerpt(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    handle = handle_of(temporal, campaign, instance_id)
    reply = InboundEvent(
        "in-7", "reply", "2026-12-04T10:15:00+00:00", "Sounds good — can we talk Friday?"
    )

    # Sent once: a resent one could reach a closed run (tested below on a kind that stops nothing).
    await handle.signal(CampaignWorkflow.inbound_message, reply)

    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
    assert (status["workflowStopReason"], status["hasPendingApproval"]) == ("LEAD_REPLIED", False)
    data = await instance_data(api, campaign, instance_id)
    assert data["inboundMessages"] == [
        {
            "inboundMessageId": "in-7",
            "classification": "reply",
            "receivedAt": "2026-12-04T10:15:00Z",
            "excerpt": "Sounds good — can we talk Friday?",
            "returnDate": None,
        }
    ]
    refused = await approve(api, campaign, instance_id)
    assert refused.status_code == 409
    assert refused.json()["error"] == {
        **refused.json()["error"],
        "code": "NO_PENDING_APPROVAL",
        "details": "WORKFLOW_CLOSED",
    }
    assert outbox_files(api.settings) == []
    assert "Sounds good" in await current_details(handle)


async def test_an_auto_reply_is_recorded_and_stops_nothing(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    handle = handle_of(temporal, campaign, instance_id)

    answer = InboundEvent("ooo-1", "auto_reply", excerpt="I am away", return_date="2026-12-14")
    await handle.signal(CampaignWorkflow.inbound_message, answer)
    await handle.signal(CampaignWorkflow.inbound_message, answer)  # resent: applies once
    await handle.signal(CampaignWorkflow.inbound_message, InboundEvent("x-1", "not-a-kind"))

    data = await instance_data(api, campaign, instance_id)
    assert data["leadStatus"]["workflowStatus"] == "pending"
    assert data["leadStatus"]["hasPendingApproval"] is True
    [recorded] = data["inboundMessages"]
    assert (recorded["classification"], recorded["returnDate"], recorded["excerpt"]) == (
        "auto_reply",
        "2026-12-14",
        None,
    )
    details = await current_details(handle)
    assert "back on 2026-12-14" in details
    assert "`kind` 'not-a-kind' is none of reply, auto_reply" in details
    assert (await approve(api, campaign, instance_id)).status_code == 200


async def test_a_hard_bounce_and_a_complaint_stop_with_their_reasons(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    bounced = await enrol_to_gate(api, campaign)
    complained = await enrol_to_gate(api, campaign)

    await handle_of(temporal, campaign, bounced).signal(
        CampaignWorkflow.inbound_message, InboundEvent("b-1", "hard_bounce")
    )
    await handle_of(temporal, campaign, complained).signal(
        CampaignWorkflow.inbound_message, InboundEvent("c-1", "complaint")
    )

    first = await wait_for_status(api, campaign, bounced, workflowStatus="stopped")
    second = await wait_for_status(api, campaign, complained, workflowStatus="stopped")
    assert (first["workflowStopReason"], second["workflowStopReason"]) == (
        "LEAD_BOUNCED",
        "LEAD_COMPLAINED",
    )
