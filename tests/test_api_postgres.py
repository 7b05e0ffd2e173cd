"""Key paths with the store on PostgreSQL: keys, campaigns, enrolment, approval, delivery."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from temporalio.client import Client

from activities.campaign import message_id_for
from campaign_engine.deliveries import DeliveryLedger, DeliveryState
from campaign_engine.ids import workflow_id_for
from campaign_engine.settings import Settings
from tests import services
from tests.helpers import (
    TWO_STEP_CAMPAIGN,
    approve,
    assert_eventually,
    create_campaign,
    enrol_to_gate,
    running_api,
)
from worker import build_worker


async def test_api_on_postgres_store_end_to_end(
    settings: Settings, postgres_url: str, temporal: Client, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"database_url": postgres_url})
    # The worker's delivery ledger on PostgreSQL too.
    async with running_api(settings, temporal) as api, build_worker(temporal, settings, api.store):
        campaign = await create_campaign(api)
        replaced = await api.http.put(
            campaign.url, json={**TWO_STEP_CAMPAIGN, "name": "On PG"}, headers=campaign.auth
        )
        read = (await api.http.get(campaign.url, headers=campaign.auth)).json()["data"]
        instance_id = await enrol_to_gate(api, campaign)
        approved = await approve(api, campaign, instance_id)

        message_id = message_id_for(
            workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id), "intro"
        )

        async def ledger_says_sent() -> bool:
            return await DeliveryLedger(api.store).state(message_id) == DeliveryState.SENT

        await assert_eventually(ledger_says_sent)

        # The CLI, another process, revokes the key in the same PostgreSQL database.
        async with services.cli_process(
            settings, "keys", "revoke", campaign.key.id, log=tmp_path / "revoke.log"
        ) as revoke:
            assert await revoke.wait() == 0, services.output_of(tmp_path / "revoke.log")
        # Refused once the API's key cache has let go of it (`api_key_cache_seconds`).
        revoked = await assert_eventually(
            lambda: api.http.get(campaign.url, headers=campaign.auth),
            lambda response: response.status_code == 401,
            within=settings.api_key_cache_seconds + 0.5,
            what="the revoked key refused",
        )
        async with services.cli_process(
            settings, "keys", "list", log=tmp_path / "list.log"
        ) as listing:
            assert await listing.wait() == 0
        output = services.output_of(tmp_path / "list.log").splitlines()
        listed = [json.loads(line) for line in output if line.startswith("{")]

    assert replaced.status_code == 200
    assert read["name"] == "On PG"
    # Aware timestamps on PostgreSQL as on SQLite: the API says which zone.
    assert datetime.fromisoformat(read["createdAt"]).utcoffset() is not None
    assert approved.status_code == 200, approved.text
    assert approved.json()["data"]["leadStatus"]["latestStep"] == "intro"
    assert revoked.status_code == 401
    [mine] = [key for key in listed if key["id"] == campaign.key.id]
    assert mine["revokedAt"] is not None and mine["revokedAt"].endswith("+00:00")
