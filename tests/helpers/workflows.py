"""Instances as Temporal sees them: handles, what the UI shows, typed failures, worker processes."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from campaign_engine.ids import workflow_id_for
from campaign_engine.settings import Settings
from entrypoints.children import die_with_parent
from tests.helpers.campaigns import Campaign
from workflows.campaign import CampaignWorkflow
from workflows.types import CampaignInput, LeadStatus, ResumeAt, StopReason


def handle_of(
    temporal: Client, campaign: Campaign, instance_id: str
) -> WorkflowHandle[CampaignWorkflow, LeadStatus]:
    """A typed handle on the instance's Temporal workflow (`result()` is its `LeadStatus`)."""
    return temporal.get_workflow_handle_for(
        CampaignWorkflow.run,
        workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id),
    )


async def current_details(handle: WorkflowHandle[Any, Any]) -> str:
    """What the UI shows as the instance's current details."""
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    details: str = metadata.current_details
    return details


async def resumed_at(temporal: Client, workflow_id: str) -> list[ResumeAt]:
    """Where each run after the first picked up (`CampaignInput.state.at`), oldest first.

    Follows the chain of runs through their histories (each `ContinuedAsNew` event names the
    next run), not visibility, which may not list a run just started or closed."""
    description = await temporal.get_workflow_handle(workflow_id).describe()
    run_id = description.raw_description.workflow_execution_info.first_run_id
    picked_up: list[ResumeAt] = []
    while run_id:
        history = await temporal.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        [input] = await temporal.data_converter.decode(started.input.payloads, [CampaignInput])
        if input.state is not None:
            picked_up.append(input.state.at)
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else ""
        )
    return picked_up


async def assert_failed_with(
    handle: WorkflowHandle[Any, Any], reason: StopReason
) -> ApplicationError:
    """Asserts the instance failed, through the typed chain the SDK gives: the result raises
    `WorkflowFailureError` whose cause is the workflow's non-retryable `ApplicationError` of type
    `reason`; returns that cause."""
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), cause
    assert (cause.type, cause.non_retryable) == (reason.value, True), cause
    return cause


@asynccontextmanager
async def worker_process(
    settings: Settings, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real `campaign-engine worker` process, to kill for real; gone with the test process
    even if that is SIGKILLed (`die_with_parent`)."""
    variables = {
        **os.environ,
        "CAMPAIGN_ENGINE_TEMPORAL_ADDRESS": settings.temporal_address,
        "CAMPAIGN_ENGINE_TASK_QUEUE": settings.task_queue,
        "CAMPAIGN_ENGINE_STATE_DIR": str(settings.state_dir),
        "CAMPAIGN_ENGINE_DATABASE_URL": settings.resolved_database_url,
        "CAMPAIGN_ENGINE_DELIVERY": settings.delivery,
        "CAMPAIGN_ENGINE_SMTP_PORT": str(settings.smtp_port),
        "CAMPAIGN_ENGINE_PAYLOAD_KEYS": (
            settings.payload_keys.get_secret_value() if settings.payload_keys else ""
        ),
        # The default metrics port is one per machine: parallel workers would fight over it.
        "CAMPAIGN_ENGINE_WORKER_METRICS_PORT": "0",
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        *die_with_parent([str(Path(sys.executable).with_name("campaign-engine")), "worker"]),
        env=variables,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
