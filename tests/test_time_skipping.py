"""Day-long delays and week-long expiries in seconds: per-workflow virtual time, real server."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.testing import TimeSkipper
from temporalio.worker import Worker

from api.instances import WorkflowInstances
from campaign_engine.ids import new_object_id, workflow_id_for
from campaign_engine.settings import Settings
from devsupport.servers import SmtpSink
from workflows.campaign import CampaignWorkflow
from workflows.types import (
    CampaignSnapshot,
    CampaignStep,
    Lead,
    LeadStatus,
    StopReason,
    WorkflowStatus,
)

DAY = 24 * 3600.0


async def start(
    temporal: Client, settings: Settings, steps: list[CampaignStep], approval_timeout: float | None
) -> tuple[str, Any]:
    skipping = TimeSkipper(temporal).client
    account_group_id, campaign_id = new_object_id(), new_object_id()
    started = await WorkflowInstances(skipping, settings.task_queue, timeout_seconds=5).enrol(
        account_group_id,
        campaign_id,
        Lead(id=new_object_id(), email="ada@example.com", first_name="Ada"),
        CampaignSnapshot(name="Slow", steps=steps, approval_timeout_seconds=approval_timeout),
    )
    workflow_id = workflow_id_for(account_group_id, campaign_id, started.workflow_instance_id)
    return workflow_id, skipping.get_workflow_handle_for(CampaignWorkflow.run, workflow_id)


async def test_day_long_delays_pass_in_virtual_time(
    smtp: SmtpSink, temporal: Client, settings: Settings, worker: Worker
) -> None:
    steps = [
        CampaignStep(
            id="day-1", subject="One", body="1", requires_approval=False, delay_seconds=DAY
        ),
        CampaignStep(
            id="day-2", subject="Two", body="2", requires_approval=False, delay_seconds=3 * DAY
        ),
        CampaignStep(id="day-5", subject="Three", body="3", requires_approval=False),
    ]
    _, handle = await start(temporal, settings, steps, approval_timeout=None)

    result: LeadStatus = await handle.result()

    assert result.workflow_status == WorkflowStatus.COMPLETED
    received = smtp.received()
    assert [m["Subject"] for m in received] == ["One", "Two", "Three"]
    history = await handle.fetch_history()
    started = [
        e.event_time.ToDatetime()
        for e in history.events
        if e.HasField("timer_started_event_attributes")
    ]
    fired = [
        e.event_time.ToDatetime()
        for e in history.events
        if e.HasField("timer_fired_event_attributes")
    ]
    assert [round((f - s) / timedelta(days=1)) for s, f in zip(started, fired, strict=True)] == [
        1,
        3,
    ]


async def test_week_long_gate_expires_in_virtual_time(
    smtp: SmtpSink, temporal: Client, settings: Settings, worker: Worker
) -> None:
    steps = [CampaignStep(id="intro", subject="Hi", body="Hello", requires_approval=True)]
    _, handle = await start(temporal, settings, steps, approval_timeout=7 * DAY)

    result: LeadStatus = await handle.result()

    assert result.workflow_status == WorkflowStatus.STOPPED
    assert result.workflow_stop_reason == StopReason.APPROVAL_EXPIRED
    assert result.stop is not None and result.stop.decided_by == "system"
    assert smtp.received() == []
