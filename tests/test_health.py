"""/healthz: the process is up. /readyz: Temporal and the store answer, or which does not."""

from __future__ import annotations

from typing import Any

from campaign_engine.settings import Settings
from entrypoints.devserver import free_port
from tests import services
from tests.helpers import running_api


def assert_not_ready(response: Any, down: str) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["success"] is False and body["data"] is None
    assert body["error"]["code"] == "NOT_READY"
    assert body["error"]["details"] == down
    assert body["traceId"] == response.headers["X-Trace-Id"]


async def test_healthz_without_key_is_200(settings: Settings) -> None:
    # Nothing it depends on is up: liveness is about this process alone.
    settings = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with running_api(settings, temporal=None) as api:
        response = await api.http.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["error"] is None
    assert body["data"] == {"status": "ok"}


async def test_readyz_with_temporal_and_store_up_is_200(settings: Settings) -> None:
    async with running_api(settings, temporal=None) as api:
        response = await api.http.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.json()["data"] == {
        "status": "ok",
        "checks": {"temporal": "ok", "store": "ok"},
    }


async def test_readyz_with_temporal_down_is_503(settings: Settings) -> None:
    settings = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with running_api(settings, temporal=None) as api:
        response = await api.http.get("/readyz")

    assert_not_ready(response, "temporal")
    assert "temporal" in response.json()["error"]["message"]


async def test_readyz_with_store_gone_is_503(settings: Settings) -> None:
    await services.check_postgres()
    url = await services.create_database()
    try:
        settings = settings.model_copy(update={"database_url": url})
        async with running_api(settings, temporal=None) as api:
            assert (await api.http.get("/readyz")).status_code == 200
            await services.drop_database(url)

            response = await api.http.get("/readyz")
    finally:
        await services.drop_database(url)

    assert_not_ready(response, "store")


async def test_readyz_with_both_down_names_both(settings: Settings) -> None:
    await services.check_postgres()
    url = await services.create_database()
    try:
        settings = settings.model_copy(
            update={"database_url": url, "temporal_address": f"127.0.0.1:{free_port()}"}
        )
        async with running_api(settings, temporal=None) as api:
            await services.drop_database(url)

            response = await api.http.get("/readyz")
    finally:
        await services.drop_database(url)

    assert_not_ready(response, "temporal, store")


async def test_openapi_declares_probes_without_auth(settings: Settings) -> None:
    async with running_api(settings, temporal=None) as api:
        spec = (await api.http.get("/openapi.json")).json()

    readyz = spec["paths"]["/readyz"]["get"]
    healthz = spec["paths"]["/healthz"]["get"]
    assert set(readyz["responses"]) == {"200", "503"}
    assert readyz["responses"]["503"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    assert set(healthz["responses"]) == {"200"}
    assert "security" not in readyz and "security" not in healthz
