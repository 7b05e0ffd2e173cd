"""Stopping processes: instances survive any worker stop; the API answers what it has started."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from campaign_engine.ids import workflow_id_for
from entrypoints.devserver import free_port
from tests import services
from tests.helpers import (
    TWO_STEP_CAMPAIGN,
    Api,
    Campaign,
    approve,
    assert_eventually,
    enrol_to_gate,
    outbox_files,
)
from worker import build_worker

QUICK_CAMPAIGN = {
    **TWO_STEP_CAMPAIGN,
    "steps": [{**TWO_STEP_CAMPAIGN["steps"][0], "delay": 1}, TWO_STEP_CAMPAIGN["steps"][1]],
}


WORKER_READY = "worker polling task queue"


# After a SIGKILL, Temporal first offers the approval's workflow task to the dead worker's sticky
# queue and moves it on after the worker's sticky timeout (10 s): the API must wait that long.
@pytest.mark.parametrize("settings_overrides", [{"temporal_rpc_timeout_seconds": 30.0}])
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
async def test_worker_stopped_at_gate_then_new_worker_continues(
    api: Api, campaign: Campaign, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    settings = api.settings
    assert (
        await api.http.put(campaign.url, json=QUICK_CAMPAIGN, headers=campaign.auth)
    ).status_code == 200
    async with services.cli_process(settings, "worker", log=tmp_path / "worker-1.log") as first:
        instance_id = await enrol_to_gate(api, campaign)
        code = await services.stop(first, stop_signal)
    # SIGTERM is a clean stop; SIGKILL gives no chance to clean up and must not matter either.
    assert code == (0 if stop_signal is signal.SIGTERM else -signal.SIGKILL)

    log = tmp_path / "worker-2.log"
    async with services.cli_process(settings, "worker", log=log) as second:
        await services.wait_for_output(second, log, WORKER_READY)
        response = await approve(api, campaign, instance_id)
        assert response.status_code == 200, response.text

        async def next_gate_open() -> bool:
            got = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
            status = got.json()["data"]["leadStatus"]
            return bool(status["hasPendingApproval"] and status["latestStep"] == "follow-up")

        await assert_eventually(next_gate_open, within=30)
        assert await services.stop(second, signal.SIGTERM) == 0

    [delivered] = outbox_files(settings)
    assert delivered.name.endswith(f"{instance_id}.intro.eml")


@pytest.mark.parametrize("settings_overrides", [{"temporal_rpc_timeout_seconds": 30.0}])
async def test_api_sigterm_finishes_in_flight_approval(
    api: Api, campaign: Campaign, temporal: Client, tmp_path: Path
) -> None:
    """SIGTERM while an approval waits on Temporal: the caller still gets its 200, then exit."""
    async with build_worker(temporal, api.settings, api.store):
        instance_id = await enrol_to_gate(api, campaign)
    # A second API, as its own process, on the same store and Temporal.
    settings = api.settings.model_copy(update={"api_port": free_port()})
    base, log = f"http://127.0.0.1:{settings.api_port}", tmp_path / "api.log"
    async with (
        services.cli_process(settings, "api", log=log) as process,
        httpx.AsyncClient(base_url=base, timeout=60) as http,
    ):
        await services.wait_until_serving(process, base, log)
        # No worker now: the approval's signal is recorded and its query waits for one.
        approving = asyncio.create_task(
            http.post(campaign.approve_url(instance_id), headers=campaign.auth)
        )
        await assert_eventually(lambda: signalled(temporal, campaign, instance_id))

        process.send_signal(signal.SIGTERM)
        await assert_eventually(lambda: refuses_connections(settings.api_port))
        # Draining: uvicorn holds the exit for the open request (past its first 0.1 s).
        await services.wait_for_output(process, log, "Waiting for connections to close")
        async with build_worker(temporal, settings, api.store):
            response = await approving
            code = await process.wait()

    assert response.status_code == 200, response.text
    assert response.json()["data"]["action"] == "approved"
    # uvicorn re-raises the signal once drained: "terminated by SIGTERM", not a crash.
    assert code == -signal.SIGTERM, services.output_of(log)


async def signalled(temporal: Client, campaign: Campaign, instance_id: str) -> bool:
    handle = temporal.get_workflow_handle(
        workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id)
    )
    types = [event.event_type async for event in handle.fetch_history_events()]
    return EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED in types


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False
