"""Delivery over real SMTP: once per (instance, step), permanent failures end the instance."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from activities.campaign import message_id_for
from campaign_engine.deliveries import DeliveryLedger, DeliveryState
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from tests.conftest import (
    Api,
    Campaign,
    enroll_to_gate,
    eventually,
    handle_of,
    wait_for_status,
    worker_process,
)
from tests.conftest import (
    approve as approve_through_api,
)
from tests.servers import SmtpSink
from workflows.types import workflow_id_for


@pytest.fixture
def settings_overrides(smtp: SmtpSink) -> dict[str, Any]:
    return {"delivery": "smtp", "smtp_port": smtp.port, "sender": "Sales <sales@acme.test>"}


async def approve(api: Api, campaign: Campaign, instance_id: str) -> None:
    response = await approve_through_api(api, campaign, instance_id)
    assert response.status_code == 200, response.text


async def test_smtp_delivery_sends_once_with_its_message_id(
    smtp: SmtpSink, api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enroll_to_gate(api, campaign)

    await approve(api, campaign, instance_id)
    await wait_for_status(
        api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
    )

    [message] = smtp.received()
    workflow_id = workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id)
    assert message["Message-ID"] == message_id_for(workflow_id, "intro")
    assert message["From"] == "Sales <sales@acme.test>"
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Hello Ada"


async def test_smtp_permanent_refusal_fails_instance(
    smtp: SmtpSink, api: Api, campaign: Campaign, worker: Worker, temporal: Client, store: Store
) -> None:
    smtp.reject_recipient_with = "550 5.1.1 no such mailbox"
    instance_id = await enroll_to_gate(api, campaign)

    await approve(api, campaign, instance_id)
    status = await wait_for_status(api, campaign, instance_id, workflowStatus="failed")

    assert status["workflowStopReason"] == "DELIVERY_FAILED"
    description = await handle_of(temporal, campaign, instance_id).describe()
    assert description.status == WorkflowExecutionStatus.FAILED
    assert smtp.received() == []
    workflow_id = workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id)
    assert await DeliveryLedger(store).state(message_id_for(workflow_id, "intro")) is None


async def test_smtp_transient_failures_retry_then_deliver_once(
    smtp: SmtpSink, api: Api, campaign: Campaign, worker: Worker
) -> None:
    smtp.transient_failures = 2
    instance_id = await enroll_to_gate(api, campaign)

    await approve(api, campaign, instance_id)
    await wait_for_status(
        api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
    )

    assert smtp.data_attempts == 3
    assert len(smtp.received()) == 1


async def test_worker_killed_after_server_accepted_does_not_send_twice(
    smtp: SmtpSink, api: Api, campaign: Campaign, settings: Settings, store: Store
) -> None:
    async with worker_process(settings) as first:
        instance_id = await enroll_to_gate(api, campaign)
        # The server has the whole message; the worker dies before it hears "250".
        smtp.on_data = lambda: os.kill(first.pid, signal.SIGKILL)
        await approve(api, campaign, instance_id)
        await first.wait()
    smtp.on_data = None

    async with worker_process(settings):
        status = await wait_for_status(
            api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
        )

    assert status["latestStep"] == "intro"
    assert len(smtp.received()) == 1
    workflow_id = workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id)
    ledger_state = await DeliveryLedger(store).state(message_id_for(workflow_id, "intro"))
    assert ledger_state == DeliveryState.IN_DOUBT


async def test_worker_killed_before_handing_over_sends_once_after_restart(
    smtp: SmtpSink, api: Api, campaign: Campaign, settings: Settings, store: Store
) -> None:
    async with worker_process(settings) as first:
        instance_id = await enroll_to_gate(api, campaign)
        # Dies at RCPT: the server holds nothing, so the next attempt must send.
        smtp.on_rcpt = lambda: os.kill(first.pid, signal.SIGKILL)
        await approve(api, campaign, instance_id)
        await first.wait()
    smtp.on_rcpt = None

    async with worker_process(settings):
        await wait_for_status(
            api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
        )

    assert len(smtp.received()) == 1
    workflow_id = workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id)
    ledger_state = await DeliveryLedger(store).state(message_id_for(workflow_id, "intro"))
    assert ledger_state == DeliveryState.SENT


async def test_retried_delivery_after_recorded_send_is_skipped(
    smtp: SmtpSink, api: Api, campaign: Campaign, worker: Worker, store: Store
) -> None:
    instance_id = await enroll_to_gate(api, campaign)
    await approve(api, campaign, instance_id)

    async def recorded() -> bool:
        workflow_id = workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id)
        state = await DeliveryLedger(store).state(message_id_for(workflow_id, "intro"))
        return state == DeliveryState.SENT

    await eventually(recorded)
    assert len(smtp.received()) == 1
