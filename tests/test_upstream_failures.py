"""502 when Temporal or its workers do not answer, 500 for the unexpected: never a hang."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from temporalio.client import Client

from campaign_engine.settings import Settings
from campaign_engine.temporal import connect
from entrypoints.devserver import DevServer, free_port
from tests.helpers import (
    NO_KEY_CACHE,
    Api,
    Campaign,
    approve,
    assert_eventually,
    create_campaign,
    enrol_to_gate,
    lead,
    running_api,
)
from worker import build_worker


async def test_approve_with_worker_stopped_is_502_within_timeout(
    api: Api, campaign: Campaign, temporal: Client
) -> None:
    async with build_worker(temporal, api.settings, api.store):
        instance_id = await enrol_to_gate(api, campaign)
    url = campaign.approve_url(instance_id)

    started = time.monotonic()
    response = await api.http.post(url, headers=campaign.auth)
    elapsed = time.monotonic() - started

    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "TEMPORAL_UNAVAILABLE"
    assert "may have been recorded" in error["message"]
    assert elapsed < api.settings.temporal_rpc_timeout_seconds + 3

    # The signal was accepted before the query timed out, so a new worker applies it: the
    # 502 told the caller to check the state rather than retry blindly.
    async with build_worker(temporal, api.settings, api.store):

        async def applied() -> bool:
            got = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
            lead_status = got.json()["data"]["leadStatus"]
            return bool(got.status_code == 200 and not lead_status["hasPendingApproval"])

        await assert_eventually(applied)
        assert (await api.http.post(url, headers=campaign.auth)).status_code == 409


async def test_approve_with_temporal_stopped_is_502(settings: Settings) -> None:
    server = DevServer()
    await server.start()
    try:
        settings = settings.model_copy(update={"temporal_address": server.address})
        async with running_api(settings, temporal=None) as api:
            campaign = await create_campaign(api)
            async with build_worker(await connect(settings), settings, api.store):
                instance_id = await enrol_to_gate(api, campaign)
            await server.stop()

            started = time.monotonic()
            response = await approve(api, campaign, instance_id)
            elapsed = time.monotonic() - started

            assert response.status_code == 502, response.text
            assert response.json()["error"]["code"] == "TEMPORAL_UNAVAILABLE"
            assert elapsed < settings.temporal_rpc_timeout_seconds + 3
    finally:
        await server.stop()


async def test_api_starts_while_temporal_is_down_and_answers_502(settings: Settings) -> None:
    settings = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with running_api(settings, temporal=None) as api:
        campaign = await create_campaign(api)

        response = await api.http.post(
            f"{campaign.url}/workflow-instances", json={"lead": lead()}, headers=campaign.auth
        )

        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "TEMPORAL_UNAVAILABLE"


# A key verified less than API_KEY_CACHE_SECONDS ago needs no store (docs/explanation/
# security.md, "API keys"); this test is about what the store's failure answers, so the API
# asks the store on every request.
@pytest.mark.parametrize("settings_overrides", [NO_KEY_CACHE])
async def test_broken_store_is_500_envelope(api: Api, campaign: Campaign) -> None:
    async with api.store.engine.begin() as connection:
        await connection.execute(text("DROP TABLE api_keys"))

    response = await api.http.get(campaign.url, headers=campaign.auth)

    assert response.status_code == 500
    body = response.json()
    assert body == {
        "success": False,
        "data": None,
        "error": {
            "code": "INTERNAL_ERROR",
            "message": "An unexpected error occurred; the trace id finds it in the logs.",
            "details": None,
        },
        "traceId": response.headers["X-Trace-Id"],
    }
