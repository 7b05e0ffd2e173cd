"""Per-key budgets: headers on every authenticated answer, one budget across API processes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from campaign_engine.ids import new_object_id
from campaign_engine.keys import KeyRing, Permission, load_pepper
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from entrypoints.devserver import free_port
from tests import services
from tests.helpers import Api, Campaign, create_campaign, running_api


async def test_authenticated_success_carries_rate_limit_headers(
    api: Api, campaign: Campaign
) -> None:
    first = await api.http.get(campaign.url, headers=campaign.auth)
    second = await api.http.get(campaign.url, headers=campaign.auth)

    assert first.status_code == second.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == "1000"
    # The campaign fixture's PUT spent one already.
    assert first.headers["X-RateLimit-Remaining"] == "998"
    assert second.headers["X-RateLimit-Remaining"] == "997"
    assert int(second.headers["X-RateLimit-Reset"]) >= int(first.headers["X-RateLimit-Reset"])


async def test_error_after_authentication_carries_rate_limit_headers(
    api: Api, campaign: Campaign
) -> None:
    response = await api.http.get(
        f"/v1/accounts/{campaign.account_group_id}/campaigns/{new_object_id()}",
        headers=campaign.auth,
    )

    assert response.status_code == 404
    assert response.headers["X-RateLimit-Limit"] == "1000"


async def test_unauthenticated_answer_has_no_rate_limit_headers(api: Api) -> None:
    response = await api.http.get("/healthz")

    assert response.status_code == 200
    assert "X-RateLimit-Limit" not in response.headers


@pytest.mark.parametrize("settings_overrides", [{"rate_limit": "4/minute"}])
async def test_rate_limit_on_redis_is_429_past_budget(settings: Settings, redis_url: str) -> None:
    settings = settings.model_copy(update={"rate_limit_storage_uri": redis_url})
    async with running_api(settings, temporal=None) as api:
        campaign = await create_campaign(api)
        within = [await api.http.get(campaign.url, headers=campaign.auth) for _ in range(3)]
        over = await api.http.get(campaign.url, headers=campaign.auth)

    assert [r.headers["X-RateLimit-Remaining"] for r in within] == ["2", "1", "0"]
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(over.headers["Retry-After"]) <= 60


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts and never answers: a Redis that hangs."""
    connections: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    yield port
    for writer in connections:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("storage", ["refusing", "silent"])
async def test_rate_limit_storage_down_lets_requests_through(
    settings: Settings,
    silent_server: int,
    storage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fail open: an unreachable or hanging Redis costs the budget, never the API."""
    port = free_port() if storage == "refusing" else silent_server
    settings = settings.model_copy(
        update={
            "rate_limit_storage_uri": f"redis://127.0.0.1:{port}",
            "rate_limit_storage_timeout_seconds": 0.3,
        }
    )
    caplog.set_level(logging.WARNING, logger="campaign_engine.api")
    async with running_api(settings, temporal=None) as api:
        campaign = await create_campaign(api)

        response = await api.http.get(campaign.url, headers=campaign.auth)

    assert response.status_code == 200, response.text
    assert "X-RateLimit-Limit" not in response.headers
    assert "rate-limit storage unavailable" in caplog.text


async def test_rate_limit_is_shared_by_two_api_processes(
    settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    """Two real `campaign-engine api` processes on one Redis spend one budget per key."""
    budget = 6
    settings = settings.model_copy(
        update={"rate_limit": f"{budget}/minute", "rate_limit_storage_uri": redis_url}
    )
    # A fresh key (random id) is a fresh Redis key: no earlier run's counters.
    store = await Store.open(settings.resolved_database_url)
    try:
        key = await KeyRing(store, load_pepper(settings)).issue(
            "shared budget", [new_object_id()], [Permission.CAMPAIGNS_READ]
        )
    finally:
        await store.close()
    url = f"/v1/accounts/{key.account_groups[0]}/campaigns/{new_object_id()}"
    headers = {"Authorization": f"Bearer {key.key}"}

    ports = [free_port(), free_port()]
    async with (
        services.cli_process(
            settings.model_copy(update={"api_port": ports[0]}), "api", log=tmp_path / "api-a.log"
        ) as a,
        services.cli_process(
            settings.model_copy(update={"api_port": ports[1]}), "api", log=tmp_path / "api-b.log"
        ) as b,
    ):
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        await services.wait_until_serving(a, bases[0], tmp_path / "api-a.log")
        await services.wait_until_serving(b, bases[1], tmp_path / "api-b.log")
        async with httpx.AsyncClient(timeout=10) as http:
            spent = [await http.get(bases[n % 2] + url, headers=headers) for n in range(budget)]
            over = [await http.get(base + url, headers=headers) for base in bases]

    assert [r.status_code for r in spent] == [404] * budget
    assert [r.headers["X-RateLimit-Remaining"] for r in spent] == [
        str(left) for left in range(budget - 1, -1, -1)
    ]
    assert [r.status_code for r in over] == [429, 429]
    assert {r.json()["error"]["code"] for r in over} == {"RATE_LIMITED"}
