"""The machine's PostgreSQL and Redis, and `campaign-engine` processes, as the tests use them.

PostgreSQL and Redis are shared with other runs on this machine: every session works in a database
of its own (`ce_test_<random>`, dropped at the end) and every test in Redis keys of its own (fresh
API key ids), so runs never see each other.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from campaign_engine.settings import Settings
from entrypoints.children import die_with_parent

# Where the servers are; override to run the suite against others.
POSTGRES_ADMIN_URL = os.environ.get(
    "CE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
CHECK_TIMEOUT_SECONDS = 5.0
HOW_TO_START = "start it (./.ci/run does) or point {var} at one"

CLI = str(Path(sys.executable).with_name("campaign-engine"))


async def check_postgres() -> None:
    """Fails the test, with what to do, when PostgreSQL does not answer; never hangs."""
    engine = create_async_engine(POSTGRES_ADMIN_URL, connect_args={"timeout": 3})
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as error:
        where = make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=True)
        pytest.fail(
            f"PostgreSQL is not reachable at {where} ({error!r}): "
            + HOW_TO_START.format(var="CE_TEST_POSTGRES_URL"),
            pytrace=False,
        )
    finally:
        await engine.dispose()


async def check_redis() -> None:
    """Fails the test, with what to do, when Redis does not answer PING; never hangs."""
    url = make_url(REDIS_URL)
    host, port = url.host or "127.0.0.1", url.port or 6379
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"PING\r\n")
                await writer.drain()
                answer = await reader.readline()
            finally:
                writer.close()
        if not answer.startswith(b"+PONG"):
            raise RuntimeError(f"PING answered {answer!r}")
    except Exception as error:
        pytest.fail(
            f"Redis is not reachable at {host}:{port} ({error!r}): "
            + HOW_TO_START.format(var="CE_TEST_REDIS_URL"),
            pytrace=False,
        )


async def _admin(statement: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    engine = create_async_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database() -> str:
    """A new, empty database; returns its SQLAlchemy async URL."""
    name = f"ce_test_{secrets.token_hex(6)}"
    await _admin(f'CREATE DATABASE "{name}"')
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str) -> None:
    """Drops it even while connections are open (they are terminated)."""
    name = make_url(url).database
    assert name is not None and name.startswith("ce_test_")
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for the block (yields its async URL); dropped on exit."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a `campaign-engine` process these settings."""
    env = {
        name: value for name, value in os.environ.items() if not name.startswith("CAMPAIGN_ENGINE_")
    }
    for name, value in settings.model_dump(exclude_none=True).items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = ",".join(map(str, value))
        env[f"CAMPAIGN_ENGINE_{name.upper()}"] = str(value)
    env.update(extra)
    return env


@asynccontextmanager
async def cli_process(
    settings: Settings, *args: str, log: Path, env: Mapping[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`campaign-engine <args>` as a child process, output to `log`; stopped if still running,
    and gone with the test process even if that is SIGKILLed (`die_with_parent`)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            *die_with_parent([CLI, *args]),
            env={**process_env(settings), **(env or {})},
            stdout=output,
            stderr=output,
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await process.wait()
            except TimeoutError:
                process.send_signal(signal.SIGKILL)
                await process.wait()


def output_of(log: Path) -> str:
    """What a child process wrote, for an assertion's message (small files: read at once)."""
    return log.read_text(errors="replace") if log.exists() else "(no output)"


async def wait_until_serving(
    process: asyncio.subprocess.Process, base_url: str, log: Path, within: float = 30.0
) -> None:
    """Waits for an API process to answer /healthz."""
    deadline = asyncio.get_running_loop().time() + within
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as http:
        while True:
            if process.returncode is not None:
                raise AssertionError(f"API exited with {process.returncode}:\n{output_of(log)}")
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"API not serving within {within} s:\n{output_of(log)}")
            await asyncio.sleep(0.1)


async def wait_for_output(
    process: asyncio.subprocess.Process, log: Path, text: str, within: float = 30.0
) -> None:
    """Waits until a child process has written `text` (e.g. its "ready" log line)."""
    deadline = asyncio.get_running_loop().time() + within
    while text not in output_of(log):
        if process.returncode is not None:
            raise AssertionError(f"exited with {process.returncode}:\n{output_of(log)}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {text!r} within {within} s:\n{output_of(log)}")
        await asyncio.sleep(0.05)


async def stop(process: asyncio.subprocess.Process, sig: signal.Signals) -> int:
    """Sends `sig` and returns the exit status (negative: killed by that signal)."""
    process.send_signal(sig)
    async with asyncio.timeout(60):
        return await process.wait()
