"""Pending-approval notifications: signed, retried, and never in the campaign's way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.worker import Worker

from activities.campaign import SIGNATURE_HEADER, TIMESTAMP_HEADER, webhook_signature
from tests.conftest import (
    TWO_STEP_CAMPAIGN,
    Api,
    Campaign,
    enroll_to_gate,
    eventually,
    wait_for_status,
)
from tests.servers import WebhookReceiver

SECRET = "s3cret-signing-key-of-the-campaign"


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    started = WebhookReceiver()
    await started.start()
    yield started
    await started.stop()


async def with_webhook(api: Api, campaign: Campaign, url: str) -> None:
    definition: dict[str, Any] = {**TWO_STEP_CAMPAIGN, "webhook": {"url": url, "secret": SECRET}}
    response = await api.http.put(campaign.url, json=definition, headers=campaign.auth)
    assert response.status_code == 200, response.text


async def test_gate_opening_posts_signed_notice(
    api: Api, campaign: Campaign, worker: Worker, receiver: WebhookReceiver
) -> None:
    await with_webhook(api, campaign, receiver.url)

    instance_id = await enroll_to_gate(api, campaign)

    async def notified() -> bool:
        return len(receiver.requests) >= 1

    await eventually(notified)
    [request] = receiver.requests
    timestamp = request.headers[TIMESTAMP_HEADER.lower()]
    assert request.headers[SIGNATURE_HEADER.lower()] == webhook_signature(
        SECRET, timestamp, request.body
    )
    payload = json.loads(request.body)
    lead_id = (
        await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
    ).json()["data"]["leadStatus"]["leadId"]
    assert payload == {
        "event": "approval.pending",
        "accountGroupId": campaign.account_group_id,
        "campaignId": campaign.campaign_id,
        "workflowInstanceId": instance_id,
        "leadId": lead_id,
        "stepId": "intro",
        "expiresAt": payload["expiresAt"],
    }
    assert payload["expiresAt"] is not None
    assert "ada@example.com" not in request.body.decode()


async def test_signature_does_not_verify_with_another_secret(
    api: Api, campaign: Campaign, worker: Worker, receiver: WebhookReceiver
) -> None:
    await with_webhook(api, campaign, receiver.url)
    await enroll_to_gate(api, campaign)

    async def notified() -> bool:
        return len(receiver.requests) >= 1

    await eventually(notified)
    request = receiver.requests[0]
    timestamp = request.headers[TIMESTAMP_HEADER.lower()]
    forged = webhook_signature("another-secret-entirely", timestamp, request.body)
    assert request.headers[SIGNATURE_HEADER.lower()] != forged


async def test_dead_webhook_never_blocks_the_campaign(
    api: Api, campaign: Campaign, worker: Worker, receiver: WebhookReceiver
) -> None:
    receiver.status = 503
    await with_webhook(api, campaign, receiver.url)
    instance_id = await enroll_to_gate(api, campaign)

    async def retried() -> bool:
        return len(receiver.requests) >= 2

    await eventually(retried)
    approve = await api.http.post(
        f"{campaign.instance_url(instance_id)}/approve", headers=campaign.auth
    )

    assert approve.status_code == 200
    await wait_for_status(
        api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
    )


async def test_unreachable_webhook_never_blocks_the_campaign(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    await with_webhook(api, campaign, "http://127.0.0.1:9/nothing-listens-here")
    instance_id = await enroll_to_gate(api, campaign)

    approve = await api.http.post(
        f"{campaign.instance_url(instance_id)}/approve", headers=campaign.auth
    )

    assert approve.status_code == 200


async def test_webhook_secret_is_never_returned(api: Api, campaign: Campaign) -> None:
    await with_webhook(api, campaign, "https://hooks.example.com/campaigns")

    read = await api.http.get(campaign.url, headers=campaign.auth)

    assert read.json()["data"]["webhook"] == {"url": "https://hooks.example.com/campaigns"}
    assert SECRET not in read.text


async def test_webhook_with_short_secret_is_400(api: Api, campaign: Campaign) -> None:
    definition = {
        **TWO_STEP_CAMPAIGN,
        "webhook": {"url": "https://h.example.com", "secret": "short"},
    }

    response = await api.http.put(campaign.url, json=definition, headers=campaign.auth)

    assert response.status_code == 400
    assert response.json()["error"]["details"] == "webhook.secret"
