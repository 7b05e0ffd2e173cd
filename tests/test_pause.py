"""Pausing a campaign holds every hand-over, keeps gates approvable, and resume sends each once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from campaign_engine.keys import Permission
from campaign_engine.settings import Settings
from entrypoints.devserver import free_port
from tests.helpers import (
    Api,
    Campaign,
    approve_ok,
    create_campaign,
    current_details,
    enrol,
    enrol_to_gate,
    handle_of,
    instance_data,
    outbox_files,
    wait_for_status,
    worker_process,
)
from tests.helpers.waiting import assert_eventually
from workflows.campaign import CampaignWorkflow

ONE_STEP: dict[str, Any] = {
    "name": "One step",
    "steps": [{"id": "intro", "subject": "Hello", "body": "Hi {{ lead.firstName }}"}],
}


async def pause(api: Api, campaign: Campaign, action: str = "pause") -> dict[str, Any]:
    """POSTs `…/pause` (or `…/resume`); asserts a 200 and returns the campaign."""
    response = await api.http.post(f"{campaign.url}/{action}", headers=campaign.auth)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def held_by_the_pause(api: Api, campaign: Campaign, instance_id: str) -> dict[str, Any]:
    """Waits until the instance's approved delivery is held by the pause; returns its `data`."""

    async def read() -> dict[str, Any]:
        return await instance_data(api, campaign, instance_id)

    return await assert_eventually(
        read,
        lambda data: (data.get("delivery") or {}).get("deferredBecause") == "campaign_paused",
        what="a delivery held by the pause",
    )


async def test_a_pause_holds_a_burst_of_approvals_until_resume_then_each_is_sent_once(
    api: Api, worker: Worker, settings: Settings, temporal: Client
) -> None:
    campaign = await create_campaign(api, ONE_STEP)
    waiting = [await enrol_to_gate(api, campaign) for _ in range(5)]

    paused = await pause(api, campaign)
    assert paused["paused"] is True
    assert paused["pausedBy"] == campaign.key.id
    # Gates stay approvable: each approval answers 200 and closes its gate.
    await asyncio.gather(*(approve_ok(api, campaign, instance_id) for instance_id in waiting))
    late = await enrol(api, campaign)
    await wait_for_status(api, campaign, late, hasPendingApproval=True)
    await approve_ok(api, campaign, late)
    held = [*waiting, late]

    for instance_id in held:
        data = await held_by_the_pause(api, campaign, instance_id)
        assert data["leadStatus"]["workflowStatus"] == "pending"
        assert data["delivery"]["deferredBecause"] == "campaign_paused"
        assert data["delivery"]["nextAttemptAt"] is None
    details = await current_details(handle_of(temporal, campaign, waiting[0]))
    assert "held — the campaign is paused" in details, details
    assert "**Campaign paused**" in details, details
    read = await api.http.get(campaign.url, headers=campaign.auth)
    assert read.json()["data"]["paused"] is True
    await asyncio.sleep(1.0)
    assert outbox_files(settings) == []

    resumed = await pause(api, campaign, "resume")

    assert resumed["paused"] is False and resumed["pausedAt"] is None
    for instance_id in held:
        await wait_for_status(api, campaign, instance_id, workflowStatus="completed")
    sent = outbox_files(settings)
    assert len(sent) == len(held)
    assert len({path.name for path in sent}) == len(held)
    details = await current_details(handle_of(temporal, campaign, waiting[0]))
    assert "Campaign paused" not in details


async def test_a_pause_reaches_a_send_that_starts_right_after_its_200(
    api: Api, worker: Worker, settings: Settings
) -> None:
    campaign = await create_campaign(api, ONE_STEP)
    instance_id = await enrol_to_gate(api, campaign)

    await pause(api, campaign)
    await approve_ok(api, campaign, instance_id)

    await held_by_the_pause(api, campaign, instance_id)
    assert outbox_files(settings) == []


async def test_pause_and_resume_are_idempotent_and_need_campaigns_write(api: Api) -> None:
    campaign = await create_campaign(api, ONE_STEP)

    first = await pause(api, campaign)
    again = await pause(api, campaign)
    assert again["pausedAt"] == first["pausedAt"]
    await pause(api, campaign, "resume")
    assert (await pause(api, campaign, "resume"))["paused"] is False

    reader = await api.issue_key([campaign.account_group_id], [Permission.CAMPAIGNS_READ])
    refused = await api.http.post(
        f"{campaign.url}/pause", headers={"Authorization": f"Bearer {reader.key}"}
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "MISSING_PERMISSION"
    missing = await api.http.post(f"{campaign.url[:-24]}{'e' * 24}/pause", headers=campaign.auth)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "CAMPAIGN_NOT_FOUND"


async def test_a_replaced_campaign_stays_paused(api: Api) -> None:
    campaign = await create_campaign(api, ONE_STEP)
    await pause(api, campaign)

    replaced = await api.http.put(campaign.url, json=ONE_STEP, headers=campaign.auth)

    assert replaced.status_code == 200
    assert replaced.json()["data"]["paused"] is True


async def test_two_campaigns_paused_at_once_both_reach_their_instances(
    api: Api, worker: Worker, temporal: Client
) -> None:
    # The server runs few batch operations per namespace at once (one on the dev server); the
    # second pause signals its instances one by one instead of failing.
    campaigns = [await create_campaign(api, ONE_STEP) for _ in range(3)]
    waiting = [await enrol_to_gate(api, campaign) for campaign in campaigns]

    paused = await asyncio.gather(*(pause(api, campaign) for campaign in campaigns))

    assert all(data["paused"] for data in paused)
    for campaign, instance_id in zip(campaigns, waiting, strict=True):
        handle = handle_of(temporal, campaign, instance_id)

        async def details(handle: Any = handle) -> str:
            return await current_details(handle)

        await assert_eventually(
            details, lambda text: "**Campaign paused**" in text, what="the pause in the details"
        )


async def test_a_held_delivery_is_counted_in_the_worker_metric(
    api: Api, settings: Settings
) -> None:
    port = free_port()
    campaign = await create_campaign(api, ONE_STEP)
    async with (
        worker_process(settings, CAMPAIGN_ENGINE_WORKER_METRICS_PORT=str(port)),
        httpx.AsyncClient() as scraper,
    ):
        instance_id = await enrol_to_gate(api, campaign)
        await pause(api, campaign)
        await approve_ok(api, campaign, instance_id)

        async def deferred() -> list[str]:
            try:
                text = (await scraper.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.TransportError:
                return []
            return [
                line
                for line in text.splitlines()
                if line.startswith("campaign_deliveries_deferred")
            ]

        lines = await assert_eventually(
            deferred,
            lambda lines: any('reason="campaign_paused"' in line for line in lines),
            within=30,
            what="campaign_deliveries_deferred{reason=campaign_paused}",
        )
    assert float(lines[0].rsplit(" ", 1)[1]) >= 1


async def test_a_campaign_paused_signal_typed_by_hand_still_applies(
    api: Api, worker: Worker, temporal: Client
) -> None:
    campaign = await create_campaign(api, ONE_STEP)
    instance_id = await enrol_to_gate(api, campaign)
    handle = handle_of(temporal, campaign, instance_id)

    await handle.signal("campaign_paused", {"at": "yesterday", "decidedBy": "ops", "x": 1})
    status = await handle.query(CampaignWorkflow.lead_status)

    assert status.campaign_paused_at is not None
    details = await current_details(handle)
    assert "**Campaign paused**" in details and "by ops" in details, details
    assert any("unknown field(s) ignored: x" in p for p in status.signal_input_problems)
    await handle.signal("campaign_resumed", "ops")
    assert (await handle.query(CampaignWorkflow.lead_status)).campaign_paused_at is None
