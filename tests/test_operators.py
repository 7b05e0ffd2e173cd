"""What operators see: search attributes, summaries and details; long lives via continue-as-new."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.worker import Worker

from api.instances import WorkflowInstances
from campaign_engine.ids import new_object_id, workflow_id_for
from tests.helpers import (
    Api,
    Campaign,
    approve,
    approve_ok,
    assert_eventually,
    enrol_to_gate,
    handle_of,
    lead_status,
    wait_for_status,
)
from workflows import search_attributes
from workflows.types import (
    CampaignSnapshot,
    CampaignStep,
    Lead,
)


async def test_pending_instances_are_listed_by_search_attributes(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    waiting = await enrol_to_gate(api, campaign)
    approved = await enrol_to_gate(api, campaign)
    assert (await approve(api, campaign, approved)).status_code == 200
    query = f"HasPendingApproval = true AND CampaignId = '{campaign.campaign_id}'"
    listed: list[str] = []

    async def only_the_waiting_one() -> bool:
        nonlocal listed
        listed = [execution.id async for execution in temporal.list_workflows(query)]
        return listed == [workflow_id_for(campaign.account_group_id, campaign.campaign_id, waiting)]

    await assert_eventually(only_the_waiting_one)
    description = await handle_of(temporal, campaign, approved).describe()
    attributes = description.typed_search_attributes
    assert attributes.get(search_attributes.ACCOUNT_GROUP_ID) == campaign.account_group_id
    assert attributes.get(search_attributes.HAS_PENDING_APPROVAL) is False
    assert attributes.get(search_attributes.LEAD_WORKFLOW_STATUS) in {"running", "pending"}
    # Search attributes are stored unencrypted: ids and states only.
    assert all("@" not in str(pair.value) for pair in attributes)


async def test_ui_shows_summary_and_what_the_gate_waits_for(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    handle = handle_of(temporal, campaign, instance_id)

    description = await handle.describe()
    details = await current_details(handle)

    lead_id = (await lead_status(api, campaign, instance_id))["leadId"]
    assert await description.static_summary() == f"Two steps · lead {lead_id}"
    assert "**Waiting for approval** of step `intro`" in details
    assert "**Subject** Hello Ada" in details
    assert "> Hi Ada at Analytical Engines" in details
    assert "**Expires** 20" in details


async def current_details(handle: WorkflowHandle[Any, Any]) -> str:
    """What the UI shows as the instance's current details."""
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    details: str = metadata.current_details
    return details


async def flood_until_continued_as_new(handle: WorkflowHandle[Any, Any]) -> str:
    """Stray signals grow the history past the threshold; returns the run that continued."""
    first_run = (await handle.describe()).run_id
    assert first_run is not None
    await asyncio.gather(*(handle.signal("stray", i) for i in range(60)))

    async def continued() -> bool:
        return (await handle.describe()).run_id != first_run

    await assert_eventually(continued)
    return first_run


async def start_long_lived(
    api: Api,
    campaign: Campaign,
    temporal: Client,
    *,
    intro_delay_seconds: float,
    continue_as_new_after_events: int,
) -> str:
    """Starts an instance the way the API does, plus the continue-as-new knob it does not expose."""
    started = await WorkflowInstances(temporal, api.settings.task_queue, timeout_seconds=5).enrol(
        campaign.account_group_id,
        campaign.campaign_id,
        Lead(id=new_object_id(), email="ada@example.com", first_name="Ada"),
        CampaignSnapshot(
            name="Long lived",
            steps=[
                CampaignStep(
                    id="intro", subject="Hi", body="Hello", delay_seconds=intro_delay_seconds
                ),
                CampaignStep(id="follow-up", subject="Again", body="Hello again"),
            ],
            approval_timeout_seconds=7 * 24 * 3600,
        ),
        continue_as_new_after_events=continue_as_new_after_events,
    )
    return started.workflow_instance_id


async def test_continue_as_new_keeps_the_instance_and_its_gate(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    instance_id = await start_long_lived(
        api, campaign, temporal, intro_delay_seconds=0, continue_as_new_after_events=40
    )
    handle = handle_of(temporal, campaign, instance_id)
    await wait_for_status(api, campaign, instance_id, hasPendingApproval=True)
    before = await current_details(handle)

    first_run = await flood_until_continued_as_new(handle)
    old_run = temporal.get_workflow_handle(handle.id, run_id=first_run)
    assert (await old_run.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    status = await wait_for_status(api, campaign, instance_id, hasPendingApproval=True)
    assert (status["workflowStatus"], status["latestStep"]) == ("pending", "intro")
    assert await current_details(handle) == before

    approved = await approve(api, campaign, instance_id)
    assert approved.status_code == 200
    status = await wait_for_status(
        api, campaign, instance_id, hasPendingApproval=True, latestStep="follow-up"
    )
    result = await handle.query("lead_status")
    assert [d["step_id"] for d in result["gate_decisions"]] == ["intro"]


async def test_continue_as_new_during_a_delay_keeps_its_deadline(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    instance_id = await start_long_lived(
        api, campaign, temporal, intro_delay_seconds=3600, continue_as_new_after_events=60
    )
    handle = handle_of(temporal, campaign, instance_id)
    await wait_for_status(api, campaign, instance_id, hasPendingApproval=True)
    await approve_ok(api, campaign, instance_id)
    await wait_for_status(
        api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
    )
    before = await current_details(handle)

    await flood_until_continued_as_new(handle)

    after = await current_details(handle)
    assert after == before
    assert after.startswith("**Waiting** after step `intro` until ")
    status = await lead_status(api, campaign, instance_id)
    assert (status["workflowStatus"], status["latestStep"]) == ("pending", "intro")
    # The approval made before continue-as-new is still answered as such.
    again = await approve(api, campaign, instance_id)
    assert again.status_code == 409
    assert again.json()["error"]["details"] == "ALREADY_APPROVED"
