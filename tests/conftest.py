"""Fixtures: a real Temporal dev server per session; per test a worker, an API and keys.

Each test gets its own task queue (and so its own worker) and its own state dir, so tests never
see each other's instances, outbox files or keys.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities import templates
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from campaign_engine.temporal import connect
from devsupport.dovecot import Dovecot, DovecotUnavailable, ImapBox
from devsupport.servers import SmtpSink, WebhookReceiver
from entrypoints.devserver import DYNAMIC_CONFIG, DevServer, free_port
from tests import services
from tests.helpers import Api, Campaign, create_campaign, running_api
from tests.keys import TEST_PAYLOAD_KEYS
from worker import build_worker

# The developer's own Temporal settings (TEMPORAL_ADDRESS, TEMPORAL_API_KEY, a profile in
# ~/.config/temporalio/temporal.toml) must not steer the suite, nor the processes it starts: every
# test names the connection it means (campaign_engine.temporal reads these).
for _name in [name for name in os.environ if name.startswith("TEMPORAL_")]:
    del os.environ[_name]
os.environ["TEMPORAL_CONFIG_FILE"] = os.devnull
# Every workflow of the suite runs in the SDK's sandbox, whatever production's default
# (`worker.workflow_runner`): its run-time checks are the suite's net under workflows/'s rules.
# Settings built here and the worker processes the suite starts read it from the environment.
os.environ["CAMPAIGN_ENGINE_WORKER_WORKFLOW_SANDBOX"] = "true"

TEST_DYNAMIC_CONFIG = (*DYNAMIC_CONFIG, ("matching.maxTaskQueuesInDeploymentVersion", "100000"))


@pytest.fixture(scope="session", autouse=True)
def render_processes() -> Iterator[None]:
    """One set of template render processes for the whole session: each test's API would
    otherwise stop them as it shuts down, and the next one start them again."""
    with templates.render_pool_held():
        yield


@pytest.fixture(scope="session")
async def temporal_server() -> AsyncIterator[DevServer]:
    """Session scope: a headless Temporal dev server with time skipping enabled, on a free port;
    stopped at the end.

    Every test's worker polls a task queue of its own as the same deployment version (the
    release's build id): Temporal registers at most 100 task queues per version by default and
    never hands the 101st a task, so this server allows more.
    """
    server = DevServer(time_skipping=True, dynamic_config=TEST_DYNAMIC_CONFIG)
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
    """Function scope: settings for one test: its own state dir, task queue and API port, the
    session's Temporal, the test payload keys; `settings_overrides` applied last."""
    return Settings(
        state_dir=tmp_path / "var",
        temporal_address=temporal_server.address,
        task_queue=f"tq-{uuid.uuid4()}",
        temporal_rpc_timeout_seconds=2.0,
        api_port=free_port(),
        rate_limit="1000/minute",
        # Tests send wrong keys on purpose; tests/test_auth_throttle.py runs the default budget.
        auth_failure_limit="1000/minute",
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
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A webhook receiver on a free port (answers `status`, 204 unless a test changes it)."""
    started = WebhookReceiver()
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    """Function scope: the store of the test's `settings` (SQLite under its state dir unless
    overridden), migrated; closed after the test."""
    opened = await Store.open(settings.resolved_database_url)
    yield opened
    await opened.close()


@pytest.fixture
async def worker(temporal: Client, settings: Settings, store: Store) -> AsyncIterator[Worker]:
    """Function scope: the production worker on the test's own task queue, running for the test."""
    async with build_worker(temporal, settings, store) as running:
        yield running


@pytest.fixture
async def api(settings: Settings, temporal: Client) -> AsyncIterator[Api]:
    """Function scope: the API on a real uvicorn server at `settings.api_port`, using the session's
    `temporal` client."""
    async with running_api(settings, temporal) as running:
        yield running


@pytest.fixture
async def campaign(api: Api) -> Campaign:
    """Function scope: a two-step campaign in a new account group, with a key that may do everything
    there."""
    return await create_campaign(api)


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
    """Session scope: the Redis URL (`CE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`); fails
    the test when Redis does not answer."""
    await services.check_redis()
    return services.REDIS_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes it runs twice: on a SQLite file, and on this session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


# --- Dovecot (IMAP) -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """Session scope: a private Dovecot (plain+STARTTLS and TLS ports, XOAUTH2 against an
    in-process introspection endpoint), in a directory under /tmp (its mail processes run as
    nobody, who cannot enter pytest's tmp_path). Installs `dovecot-imapd` when missing; where that
    is impossible the tests skip saying why, except under CI (`CI` set), where they fail."""
    directory = Path(tempfile.mkdtemp(prefix="ce-dovecot-"))
    server = Dovecot(directory)
    try:
        server.start()
    except DovecotUnavailable as error:
        shutil.rmtree(directory, ignore_errors=True)
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(str(error))
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def imap_box(dovecot: Dovecot) -> ImapBox:
    """Function scope: a Dovecot user of the test's own (a fresh, empty mailbox)."""
    box = ImapBox(dovecot, f"u{uuid.uuid4().hex[:12]}@example.test", uuid.uuid4().hex)
    dovecot.add_user(box.user, box.password)
    return box
