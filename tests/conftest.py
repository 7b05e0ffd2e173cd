"""Fixtures: a real Temporal dev server per session; per test a worker, an API and keys.

Each test gets its own task queue (and so its own worker) and its own state dir, so tests never
see each other's instances, outbox files or keys.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities import templates
from activities.campaign import message_id_for
from campaign_engine.ids import new_object_id
from campaign_engine.keys import IssuedKey, KeyRing, Permission, load_pepper
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from campaign_engine.temporal import connect
from devsupport.servers import SmtpSink
from entrypoints.devserver import DevServer, free_port
from entrypoints.servers import api_server, start_serving
from tests import services
from tests.keys import TEST_PAYLOAD_KEYS
from worker import build_worker
from workflows.campaign import CampaignWorkflow
from workflows.types import LeadStatus, workflow_id_for

ALL_PERMISSIONS = list(Permission)

TWO_STEP_CAMPAIGN: dict[str, Any] = {
    "name": "Two steps",
    "approvalTimeout": "P7D",
    "steps": [
        {
            "id": "intro",
            "subject": "Hello {{ lead.firstName }}",
            "body": "Hi {{ lead.firstName }} at {{ lead.company }}",
            "requiresApproval": True,
            "delay": "PT1H",
        },
        {
            "id": "follow-up",
            "subject": "Again, {{ lead.firstName }}",
            "body": "Checking in.",
            "requiresApproval": True,
        },
    ],
}


@pytest.fixture(scope="session", autouse=True)
def render_processes() -> Iterator[None]:
    """One set of template render processes for the whole session: each test's API would
    otherwise stop them as it shuts down, and the next one start them again."""
    with templates.render_pool_held():
        yield


@pytest.fixture(scope="session")
async def temporal_server() -> AsyncIterator[DevServer]:
    server = DevServer(time_skipping=True)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def temporal(temporal_server: DevServer) -> Client:
    """The session's client, built like production's: payloads encrypted under the test keys."""
    return await connect(
        Settings(temporal_address=temporal_server.address, payload_keys=TEST_PAYLOAD_KEYS)
    )


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Per-test settings; override with `@pytest.mark.parametrize("settings_overrides", [...])`.

    A test (or module) that uses the `smtp` fixture delivers through it.
    """
    if "smtp" in request.fixturenames:
        sink: SmtpSink = request.getfixturevalue("smtp")
        return {"delivery": "smtp", "smtp_port": sink.port}
    return {}


@pytest.fixture
def settings(
    tmp_path: Path, temporal_server: DevServer, settings_overrides: dict[str, Any]
) -> Settings:
    return Settings(
        state_dir=tmp_path / "var",
        temporal_address=temporal_server.address,
        task_queue=f"tq-{uuid.uuid4()}",
        temporal_rpc_timeout_seconds=2.0,
        api_port=free_port(),
        rate_limit="1000/minute",
        # Processes started from these settings must not fight over the default metrics ports.
        api_metrics_port=0,
        worker_metrics_port=0,
        # The session's `temporal` client encrypts with these; every process must share them.
        payload_keys=TEST_PAYLOAD_KEYS,
    ).model_copy(update=settings_overrides)


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """A real SMTP server; request it before `settings` to deliver through it."""
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    opened = await Store.open(settings.resolved_database_url)
    yield opened
    await opened.close()


@pytest.fixture
async def worker(temporal: Client, settings: Settings, store: Store) -> AsyncIterator[Worker]:
    async with build_worker(temporal, settings, store) as running:
        yield running


@dataclass
class Api:
    """A running API (real uvicorn on a free port) and what the tests need around it."""

    settings: Settings
    store: Store
    http: httpx.AsyncClient
    server: uvicorn.Server

    async def issue_key(
        self,
        account_groups: list[str],
        permissions: list[Permission] | None = None,
        name: str = "test key",
    ) -> IssuedKey:
        keyring = KeyRing(self.store, load_pepper(self.settings))
        return await keyring.issue(name, account_groups, permissions or ALL_PERMISSIONS)


@asynccontextmanager
async def running_api(settings: Settings, temporal: Client | None) -> AsyncIterator[Api]:
    """The API on a real uvicorn server.

    `temporal=None` makes it connect lazily, as production does.
    """
    server = api_server(settings, temporal=temporal, embedded=True)
    task = await start_serving(server)
    try:
        store = await Store.open(settings.resolved_database_url)
        try:
            async with httpx.AsyncClient(
                base_url=f"http://{settings.api_host}:{settings.api_port}", timeout=30
            ) as http:
                yield Api(settings, store, http, server)
        finally:
            await store.close()
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def api(settings: Settings, temporal: Client) -> AsyncIterator[Api]:
    async with running_api(settings, temporal) as running:
        yield running


@dataclass
class Campaign:
    """A campaign in one account group, with a key that may do everything there."""

    account_group_id: str
    campaign_id: str
    key: IssuedKey

    @property
    def url(self) -> str:
        return f"/v1/accounts/{self.account_group_id}/campaigns/{self.campaign_id}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key.key}"}

    def instance_url(self, workflow_instance_id: str) -> str:
        return f"{self.url}/workflow-instances/{workflow_instance_id}"


async def create_campaign(api: Api, definition: dict[str, Any] = TWO_STEP_CAMPAIGN) -> Campaign:
    account_group_id, campaign_id = new_object_id(), new_object_id()
    key = await api.issue_key([account_group_id])
    created = Campaign(account_group_id, campaign_id, key)
    response = await api.http.put(created.url, json=definition, headers=created.auth)
    assert response.status_code == 201, response.text
    return created


@pytest.fixture
async def campaign(api: Api) -> Campaign:
    return await create_campaign(api)


def lead(**overrides: str) -> dict[str, str]:
    return {
        "id": new_object_id(),
        "email": "ada@example.com",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "company": "Analytical Engines",
        **overrides,
    }


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    """Waits for something another process does (a worker, a timer) to become visible."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def replace_campaign(api: Api, campaign: Campaign, definition: dict[str, Any]) -> None:
    response = await api.http.put(campaign.url, json=definition, headers=campaign.auth)
    assert response.status_code == 200, response.text


async def enroll(api: Api, campaign: Campaign, enrolled: dict[str, str] | None = None) -> str:
    """Enrols a lead (a fresh one by default); returns its workflow instance id."""
    response = await api.http.post(
        f"{campaign.url}/workflow-instances",
        json={"lead": enrolled or lead()},
        headers=campaign.auth,
    )
    assert response.status_code == 201, response.text
    instance_id: str = response.json()["data"]["workflowInstanceId"]
    return instance_id


async def approve(api: Api, campaign: Campaign, instance_id: str) -> httpx.Response:
    return await api.http.post(
        f"{campaign.instance_url(instance_id)}/approve", headers=campaign.auth
    )


async def approve_ok(api: Api, campaign: Campaign, instance_id: str) -> None:
    response = await approve(api, campaign, instance_id)
    assert response.status_code == 200, response.text


def message_id_of(campaign: Campaign, instance_id: str, step_id: str) -> str:
    """The Message-ID a step of this instance is delivered under."""
    workflow_id = workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id)
    return message_id_for(workflow_id, step_id)


async def enroll_to_gate(api: Api, campaign: Campaign) -> str:
    """Enrols a fresh lead and waits until its first gate is open; returns its instance id."""
    instance_id = await enroll(api, campaign)

    async def at_gate() -> bool:
        status = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
        return bool(
            status.status_code == 200 and status.json()["data"]["leadStatus"]["hasPendingApproval"]
        )

    await eventually(at_gate)
    return instance_id


async def lead_status(api: Api, campaign: Campaign, instance_id: str) -> dict[str, Any]:
    response = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()["data"]["leadStatus"]
    return status


async def wait_for_status(
    api: Api, campaign: Campaign, instance_id: str, within: float = 30.0, **expected: Any
) -> dict[str, Any]:
    """Waits until the instance's lead status has every expected field value; returns it.

    Answers other than 200 count as "not yet": a freshly (re)started worker may not answer the
    first queries in time.
    """
    seen: dict[str, Any] = {}

    async def matches() -> bool:
        nonlocal seen
        response = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
        if response.status_code != 200:
            seen = {"response": response.text}
            return False
        seen = response.json()["data"]["leadStatus"]
        return all(seen.get(name) == value for name, value in expected.items())

    try:
        await eventually(matches, within)
    except AssertionError:
        raise AssertionError(f"lead status never matched {expected}; last seen {seen}") from None
    return seen


def outbox_files(api: Api) -> list[Path]:
    directory = api.settings.resolved_outbox_dir
    return sorted(directory.glob("*.eml")) if directory.exists() else []


def handle_of(
    temporal: Client, campaign: Campaign, instance_id: str
) -> WorkflowHandle[CampaignWorkflow, LeadStatus]:
    return temporal.get_workflow_handle_for(
        CampaignWorkflow.run,
        workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id),
    )


@asynccontextmanager
async def worker_process(
    settings: Settings, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real `campaign-engine worker` process, to kill for real."""
    variables = {
        **os.environ,
        "CAMPAIGN_ENGINE_TEMPORAL_ADDRESS": settings.temporal_address,
        "CAMPAIGN_ENGINE_TASK_QUEUE": settings.task_queue,
        "CAMPAIGN_ENGINE_STATE_DIR": str(settings.state_dir),
        "CAMPAIGN_ENGINE_DATABASE_URL": settings.resolved_database_url,
        "CAMPAIGN_ENGINE_DELIVERY": settings.delivery,
        "CAMPAIGN_ENGINE_SMTP_PORT": str(settings.smtp_port),
        "CAMPAIGN_ENGINE_PAYLOAD_KEYS": (
            settings.payload_keys.get_secret_value() if settings.payload_keys else ""
        ),
        # The default metrics port is one per machine: parallel workers would fight over it.
        "CAMPAIGN_ENGINE_WORKER_METRICS_PORT": "0",
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("campaign-engine")), "worker", env=variables
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


# --- PostgreSQL and Redis -----------------------------------------------------------------------


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A database of this session's own on the machine's PostgreSQL, dropped at the end."""
    await services.check_postgres()
    url = await services.create_database()
    yield url
    await services.drop_database(url)


@pytest.fixture(scope="session")
async def redis_url() -> str:
    await services.check_redis()
    return services.REDIS_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes it runs twice: on a SQLite file, and on this session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
