"""Pending-approval notifications: signed, retried, and never in the campaign's way."""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.campaign import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from campaign_engine.settings import Settings
from campaign_engine.webhook_secrets import SealedSecretError, WebhookSecrets
from campaign_engine.webhook_signatures import InvalidSignature, WebhookVerifier
from devsupport.servers import WebhookReceiver
from tests.helpers import (
    TWO_STEP_CAMPAIGN,
    Api,
    Campaign,
    approve,
    assert_eventually,
    enrol_to_gate,
    handle_of,
    wait_for_status,
)
from workflows.types import NOTIFY_PENDING_APPROVAL_ACTIVITY

SECRET = "s3cret-signing-key-of-the-campaign"
PRIVATE = {"webhook_allow_private_addresses": True}
PUBLIC_ONLY = {"webhook_allow_private_addresses": False}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """The receiver listens on 127.0.0.1: this module's API and workers may reach it."""
    return PRIVATE


async def with_webhook(api: Api, campaign: Campaign, url: str) -> None:
    definition: dict[str, Any] = {**TWO_STEP_CAMPAIGN, "webhook": {"url": url, "secret": SECRET}}
    response = await api.http.put(campaign.url, json=definition, headers=campaign.auth)
    assert response.status_code == 200, response.text


async def test_gate_opening_posts_signed_notice(
    api: Api, campaign: Campaign, worker: Worker, receiver: WebhookReceiver
) -> None:
    await with_webhook(api, campaign, receiver.url)

    instance_id = await enrol_to_gate(api, campaign)

    async def notified() -> bool:
        return len(receiver.requests) >= 1

    await assert_eventually(notified)
    [request] = receiver.requests
    # Verified as docs/how-to/webhooks.md's receiver does: signature over id, timestamp and
    # body, in time.
    event_id = WebhookVerifier(SECRET).verify(request.headers, request.body)
    assert event_id == request.headers[EVENT_ID_HEADER]
    assert request.headers[SIGNATURE_HEADER].startswith("v1,")
    assert request.headers[TIMESTAMP_HEADER].isdigit()
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
        "gateId": payload["gateId"],
    }
    assert payload["expiresAt"] is not None
    assert (
        payload["gateId"]
        == (await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)).json()[
            "data"
        ]["pendingContent"]["gateId"]
    )
    assert "ada@example.com" not in request.body.decode()


async def test_signature_does_not_verify_with_another_secret(
    api: Api, campaign: Campaign, worker: Worker, receiver: WebhookReceiver
) -> None:
    await with_webhook(api, campaign, receiver.url)
    await enrol_to_gate(api, campaign)

    async def notified() -> bool:
        return len(receiver.requests) >= 1

    await assert_eventually(notified)
    request = receiver.requests[0]
    with pytest.raises(InvalidSignature):
        WebhookVerifier("another-secret-entirely").verify(request.headers, request.body)
    # The event id is signed: the same notice under another id does not verify either.
    renamed = {**request.headers, EVENT_ID_HEADER: request.headers[EVENT_ID_HEADER] + "x"}
    with pytest.raises(InvalidSignature):
        WebhookVerifier(SECRET).verify(renamed, request.body)


async def test_dead_webhook_never_blocks_the_campaign(
    api: Api, campaign: Campaign, worker: Worker, receiver: WebhookReceiver
) -> None:
    receiver.status = 503
    await with_webhook(api, campaign, receiver.url)
    instance_id = await enrol_to_gate(api, campaign)

    async def retried() -> bool:
        return len(receiver.requests) >= 2

    await assert_eventually(retried)
    approved = await approve(api, campaign, instance_id)

    assert approved.status_code == 200
    await wait_for_status(
        api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
    )


async def test_unreachable_webhook_never_blocks_the_campaign(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    await with_webhook(api, campaign, "http://127.0.0.1:9/nothing-listens-here")
    instance_id = await enrol_to_gate(api, campaign)

    approved = await approve(api, campaign, instance_id)

    assert approved.status_code == 200


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


@pytest.mark.parametrize("settings_overrides", [PUBLIC_ONLY])
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9465/metrics",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8000/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/",
        "http://0.0.0.0:5432/",
        "http://localhost:6379/",
        "http://api.localhost./",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        # NAT64 (RFC 6052 / 8215) and 6to4 addresses standing for private IPv4 ones.
        "http://[64:ff9b::a00:7]/hook",
        "http://[64:ff9b::7f00:1]:9465/metrics",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "http://[64:ff9b:1::5db8:d70e]/",
        "http://[2002:7f00:1::1]/",
        "http://[::7f00:1]/",
    ],
)
async def test_webhook_to_an_internal_address_is_400_at_put(
    api: Api, campaign: Campaign, url: str
) -> None:
    definition = {**TWO_STEP_CAMPAIGN, "webhook": {"url": url, "secret": SECRET}}

    response = await api.http.put(campaign.url, json=definition, headers=campaign.auth)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == "webhook.url"
    stored = await api.http.get(campaign.url, headers=campaign.auth)
    assert stored.json()["data"]["webhook"] is None


@pytest.mark.parametrize("settings_overrides", [PUBLIC_ONLY])
async def test_webhook_host_resolving_to_an_internal_address_is_never_called(
    api: Api, campaign: Campaign, worker: Worker, receiver: WebhookReceiver, temporal: Client
) -> None:
    # This machine's own name passes the PUT check (it is a name, not an address) and resolves
    # to a loopback or private address: what a DNS answer under a caller's control could do.
    name = socket.gethostname()
    resolved = {info[4][0] for info in socket.getaddrinfo(name, receiver.port)}
    assert not any(ipaddress.ip_address(a).is_global for a in resolved), resolved
    await with_webhook(api, campaign, receiver.url.replace("127.0.0.1", name))

    instance_id = await enrol_to_gate(api, campaign)

    handle = handle_of(temporal, campaign, instance_id)

    async def notice_gave_up() -> bool:
        history = await handle.fetch_history()
        return any(
            event.HasField("activity_task_failed_event_attributes") for event in history.events
        )

    await assert_eventually(notice_gave_up)
    assert receiver.requests == []
    history = await handle.fetch_history()
    [failed] = [
        e.activity_task_failed_event_attributes
        for e in history.events
        if e.HasField("activity_task_failed_event_attributes")
    ]
    # Failure messages travel encrypted: read as our clients read them.
    message = str(await temporal.data_converter.decode_failure(failed.failure))
    assert "webhook destination refused" in message
    assert failed.failure.application_failure_info.non_retryable
    assert (await approve(api, campaign, instance_id)).status_code == 200


@pytest.mark.parametrize("settings_overrides", [PUBLIC_ONLY])
async def test_webhook_to_a_public_address_is_accepted_at_put(api: Api, campaign: Campaign) -> None:
    for url in (
        "https://hooks.example.com/campaigns",
        "http://93.184.215.14:8080/h",
        # NAT64 of a public IPv4 address: how an IPv6-only network reaches it; allowed.
        "http://[64:ff9b::5db8:d70e]/h",
    ):
        definition = {**TWO_STEP_CAMPAIGN, "webhook": {"url": url, "secret": SECRET}}
        response = await api.http.put(campaign.url, json=definition, headers=campaign.auth)
        assert response.status_code == 200, response.text


async def test_notice_after_the_webhook_changed_is_dropped_never_signed_with_the_new_secret(
    api: Api,
    campaign: Campaign,
    worker: Worker,
    receiver: WebhookReceiver,
    temporal: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The finding: after an edit, `approval.resolved` reached the old URL signed with the new
    # secret. Now URL and secret come from one stored version; the old instance's notice drops.
    new_receiver = WebhookReceiver()
    await new_receiver.start()
    try:
        await with_webhook(api, campaign, receiver.url)
        instance_id = await enrol_to_gate(api, campaign)

        async def pending_sent() -> bool:
            return len(receiver.requests) >= 1

        await assert_eventually(pending_sent)
        edited = {
            **TWO_STEP_CAMPAIGN,
            "webhook": {"url": new_receiver.url, "secret": "a-new-secret-after-rotation"},
        }
        put = await api.http.put(campaign.url, json=edited, headers=campaign.auth)
        assert put.status_code == 200, put.text

        assert (await approve(api, campaign, instance_id)).status_code == 200
        handle = handle_of(temporal, campaign, instance_id)

        async def notices_completed() -> int:
            history = await handle.fetch_history()
            notices = {
                event.event_id
                for event in history.events
                if event.HasField("activity_task_scheduled_event_attributes")
                and event.activity_task_scheduled_event_attributes.activity_type.name
                == NOTIFY_PENDING_APPROVAL_ACTIVITY
            }
            return sum(
                event.activity_task_completed_event_attributes.scheduled_event_id in notices
                for event in history.events
                if event.HasField("activity_task_completed_event_attributes")
            )

        # Both notices (pending before the edit, resolved after it) have completed.
        await assert_eventually(notices_completed, lambda done: done >= 2)
        assert len(receiver.requests) == 1, [r.body for r in receiver.requests]
        [only] = receiver.requests
        assert json.loads(only.body)["event"] == "approval.pending"
        WebhookVerifier(SECRET).verify(only.headers, only.body)
        assert new_receiver.requests == []
        assert any("dropped (webhook_changed)" in record.getMessage() for record in caplog.records)
    finally:
        await new_receiver.stop()


async def test_webhook_secret_is_sealed_at_rest(
    api: Api, campaign: Campaign, settings: Settings
) -> None:
    await with_webhook(api, campaign, "https://hooks.example.com/campaigns")

    record = await api.store.get_campaign(campaign.account_group_id, campaign.campaign_id)
    assert record is not None
    webhook = record.definition["webhook"]
    assert "secret" not in webhook
    assert webhook["sealedSecret"].startswith("v1:")
    # Nowhere in the database's files either (SQLite: the file and its WAL).
    database = Path(settings.resolved_database_url.removeprefix("sqlite+aiosqlite:///"))
    files = [database, database.with_name(database.name + "-wal")]
    assert any(path.exists() for path in files)
    for path in files:
        if path.exists():
            assert SECRET.encode() not in path.read_bytes(), path
    secrets = WebhookSecrets.for_settings(settings)
    ids = {"account_group_id": campaign.account_group_id, "campaign_id": campaign.campaign_id}
    assert secrets.secret_of(webhook, **ids) == SECRET
    # Bound to its campaign: copied into another campaign's row, it does not open.
    with pytest.raises(SealedSecretError):
        secrets.secret_of(webhook, account_group_id=campaign.account_group_id, campaign_id="0" * 24)
