"""Faults for real: workers and Temporal killed with SIGKILL, the store gone; nothing is lost.

Each test runs real processes (`campaign-engine worker`, the Temporal dev server) and kills them
mid-flight. Delivery is counted at a real SMTP server by Message-ID: once per (instance, step),
except a send cut off inside DATA, which is in doubt and never repeated (at most once).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from fastapi import FastAPI
from temporalio.worker import Worker

from campaign_engine.deliveries import DeliveryLedger, DeliveryState
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from devsupport.servers import SmtpSink
from entrypoints.devserver import DevServer
from tests.helpers import (
    NO_KEY_CACHE,
    Api,
    Campaign,
    approve,
    approve_ok,
    assert_eventually,
    create_campaign,
    enrol,
    enrol_to_gate,
    lead,
    lead_status,
    message_id_of,
    running_api,
    wait_for_status,
    worker_process,
)

NO_GATES_WITH_A_DELAY: dict[str, Any] = {
    "name": "Two steps, no gates",
    "steps": [
        {"id": "intro", "subject": "Hi", "body": "One.", "requiresApproval": False, "delay": 3},
        {"id": "follow-up", "subject": "Again", "body": "Two.", "requiresApproval": False},
    ],
}


def deliveries(smtp: SmtpSink) -> Counter[str]:
    """How many times the server accepted each Message-ID."""
    return Counter(str(message["Message-ID"]) for message in smtp.received())


async def test_worker_killed_at_gate_then_approved_delivers_once(
    smtp: SmtpSink, api: Api, campaign: Campaign, settings: Settings
) -> None:
    async with worker_process(settings) as first:
        instance_id = await enrol_to_gate(api, campaign)
        first.kill()
        await first.wait()

    async with worker_process(settings):
        # The dead worker held the instance in its cache; the new one answers once Temporal
        # hands the instance over.
        await wait_for_status(api, campaign, instance_id, hasPendingApproval=True)
        await approve_ok(api, campaign, instance_id)
        status = await wait_for_status(
            api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
        )

    assert status["latestStep"] == "intro"
    assert deliveries(smtp) == {message_id_of(campaign, instance_id, "intro"): 1}


async def test_worker_killed_mid_delivery_never_sends_twice(
    smtp: SmtpSink, api: Api, campaign: Campaign, settings: Settings, store: Store
) -> None:
    async with worker_process(settings) as first:
        instance_ids = [await enrol_to_gate(api, campaign) for _ in range(3)]
        # The server takes its time over DATA; the worker dies while all three are in flight.
        smtp.data_delay_seconds = 2.0
        for instance_id in instance_ids:
            await approve_ok(api, campaign, instance_id)

        async def all_sending() -> bool:
            return smtp.data_attempts >= len(instance_ids)

        await assert_eventually(all_sending)
        first.kill()
        await first.wait()
    smtp.data_delay_seconds = 0.0

    async with worker_process(settings):
        for instance_id in instance_ids:
            await wait_for_status(
                api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
            )

    # The worker died before the server answered DATA: the server may or may not hold each
    # message (this one dropped them with the connection). At most once means the new worker
    # does not send them again; the ledger says which ones an operator should check.
    ledger = DeliveryLedger(store)
    for instance_id in instance_ids:
        sent = message_id_of(campaign, instance_id, "intro")
        assert deliveries(smtp)[sent] <= 1
        assert await ledger.state(sent) == DeliveryState.IN_DOUBT
    assert smtp.data_attempts == len(instance_ids)


async def test_worker_killed_during_delay_finishes_every_step_once(
    smtp: SmtpSink, api: Api, settings: Settings
) -> None:
    campaign = await create_campaign(api, NO_GATES_WITH_A_DELAY)
    async with worker_process(settings) as first:
        instance_id = await enrol(api, campaign)
        in_delay = await wait_for_status(
            api, campaign, instance_id, workflowStatus="pending", latestStep="intro"
        )
        first.kill()
        await first.wait()

    async with worker_process(settings):
        await wait_for_status(api, campaign, instance_id, workflowStatus="completed")

    assert in_delay["hasPendingApproval"] is False
    assert deliveries(smtp) == {
        message_id_of(campaign, instance_id, "intro"): 1,
        message_id_of(campaign, instance_id, "follow-up"): 1,
    }


async def test_temporal_killed_and_restarted_keeps_instances_and_approvals(
    smtp: SmtpSink, settings: Settings, tmp_path: Any
) -> None:
    server = DevServer(db_file=tmp_path / "temporal.db")
    await server.start()
    settings = settings.model_copy(update={"temporal_address": server.address})
    try:
        # temporal=None: the API connects lazily, as `campaign-engine api` does.
        async with running_api(settings, temporal=None) as api, worker_process(settings):
            campaign = await create_campaign(api)
            approved = await enrol_to_gate(api, campaign)
            waiting = await enrol_to_gate(api, campaign)
            await approve_ok(api, campaign, approved)
            await wait_for_status(
                api, campaign, approved, workflowStatus="pending", hasPendingApproval=False
            )

            await server.stop(kill=True)

            started = time.monotonic()
            down = await approve(api, campaign, waiting)
            elapsed = time.monotonic() - started
            assert down.status_code == 502, down.text
            assert down.json()["error"]["code"] == "TEMPORAL_UNAVAILABLE"
            assert elapsed < settings.temporal_rpc_timeout_seconds + 3

            server = DevServer(db_file=server.db_file, port=server.port)
            await server.start()

            # Same API process, same client: it reconnects by itself.
            still_waiting = await wait_for_status(
                api, campaign, waiting, hasPendingApproval=True, workflowStatus="pending"
            )
            after = await lead_status(api, campaign, approved)
            await approve_ok(api, campaign, waiting)
            again = await approve(api, campaign, approved)
            await wait_for_status(
                api, campaign, waiting, workflowStatus="pending", hasPendingApproval=False
            )
    finally:
        await server.stop()

    assert still_waiting["latestStep"] == "intro"
    assert after["hasPendingApproval"] is False and after["latestStep"] == "intro"
    assert again.status_code == 409, again.text
    assert deliveries(smtp) == {
        message_id_of(campaign, approved, "intro"): 1,
        message_id_of(campaign, waiting, "intro"): 1,
    }


# A key verified less than API_KEY_CACHE_SECONDS ago needs no store (docs/explanation/
# security.md, "API keys"); this test is about what the store's failure answers, so the API
# asks the store on every request.
@pytest.mark.parametrize("settings_overrides", [NO_KEY_CACHE])
async def test_store_down_is_502_store_unavailable_then_recovers(
    api: Api, campaign: Campaign, worker: Worker, settings: Settings
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    app = api.server.config.app
    assert isinstance(app, FastAPI)
    # Drop the API's pooled connections and put a plain file where the database's directory
    # was: every new connection fails to open, as with a database that is gone.
    await app.state.store.engine.dispose()
    moved = settings.state_dir.with_name("moved-away")
    settings.state_dir.rename(moved)
    settings.state_dir.write_text("not a directory")
    try:
        responses = {
            "approve": await approve(api, campaign, instance_id),
            "read campaign": await api.http.get(campaign.url, headers=campaign.auth),
            "enrol": await api.http.post(
                f"{campaign.url}/workflow-instances", json={"lead": lead()}, headers=campaign.auth
            ),
        }
    finally:
        settings.state_dir.unlink()
        moved.rename(settings.state_dir)

    for name, response in responses.items():
        assert response.status_code == 502, (name, response.text)
        body = response.json()
        assert body["success"] is False and body["data"] is None, name
        assert body["error"]["code"] == "STORE_UNAVAILABLE", name
        assert body["traceId"] == response.headers["X-Trace-Id"], name
    # Nothing changed while the store was down; once it is back, the approval goes through.
    assert (await lead_status(api, campaign, instance_id))["hasPendingApproval"] is True
    await approve_ok(api, campaign, instance_id)
