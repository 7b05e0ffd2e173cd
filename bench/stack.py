"""A private stack for measuring: a Temporal dev server, API and worker subprocesses, a key.

Nothing of the machine's is used: free ports, a temporary state dir, the bench's own task queue.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from temporalio.client import Client

from campaign_engine.ids import new_object_id
from campaign_engine.keys import IssuedKey, KeyRing, Permission
from campaign_engine.settings import Settings, reveal
from campaign_engine.store import Store
from campaign_engine.temporal import TemporalConnection, connect, without_temporal_variables
from entrypoints.children import die_with_parent
from entrypoints.devserver import DYNAMIC_CONFIG, DevServer, free_port

# High enough that the bench measures Temporal and our code, never its own budget.
UNLIMITED_RATE = "100000000/minute"

ONE_GATE_CAMPAIGN: dict[str, Any] = {
    "name": "Bench",
    "approvalTimeout": "P7D",
    "steps": [
        {
            "id": "intro",
            "subject": "Hello {{ lead.firstName }}",
            "body": "Hi {{ lead.firstName }} at {{ lead.company }}",
            "requiresApproval": True,
        }
    ],
}


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def current_rss_mb(pid: int) -> float:
    """Resident set of process `pid` now (MB, `VmRSS` of `/proc/<pid>/status`)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_config(overrides: Sequence[str] = ()) -> tuple[tuple[str, str], ...]:
    """The dev server's dynamic config: `DYNAMIC_CONFIG` with each `NAME=VALUE` of `overrides`
    replacing the entry of that name or added after them (the benches' `--server-config`, so one
    tree measures a setting on and off). Raises ValueError for an override without `=`."""
    merged = dict(DYNAMIC_CONFIG)
    for override in overrides:
        name, equals, value = override.partition("=")
        if not equals or not name:
            raise ValueError(f"--server-config wants NAME=VALUE, got {override!r}")
        merged[name] = value
    return tuple(merged.items())


def lead_body() -> dict[str, Any]:
    """An enrolment body (`POST …/workflow-instances`) for a fresh lead: a new random id, the
    same name and address every time."""
    return {
        "lead": {
            "id": new_object_id(),
            "email": "ada@example.com",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "company": "Analytical Engines",
        }
    }


@dataclass
class Stack:
    """A running private stack (`running_stack`): the dev server and a client of it, an HTTP
    client with the API's base URL, a key with every permission on one account group, that
    group's campaign (`ONE_GATE_CAMPAIGN`), and the API and worker subprocesses."""

    settings: Settings
    server: DevServer
    temporal: Client
    http: httpx.AsyncClient
    key: IssuedKey
    account_group_id: str
    campaign_id: str
    api: asyncio.subprocess.Process
    workers: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def campaign_url(self) -> str:
        """The campaign's path, `/v1/accounts/{ag}/campaigns/{id}`, without the base URL."""
        return f"/v1/accounts/{self.account_group_id}/campaigns/{self.campaign_id}"

    @property
    def auth(self) -> dict[str, str]:
        """The request headers that present the stack's key (`Authorization: Bearer …`)."""
        return {"Authorization": f"Bearer {self.key.key}"}

    def env(self) -> dict[str, str]:
        """The environment of the stack's subprocesses (`process_env` of its settings)."""
        return process_env(self.settings)

    async def start_worker(self) -> asyncio.subprocess.Process:
        """Starts one more `campaign-engine worker` process; the stack stops it on exit (and, on
        Linux with setpriv, it gets SIGTERM if the bench is killed: `die_with_parent`)."""
        env = {**self.env(), "CAMPAIGN_ENGINE_WORKER_METRICS_PORT": str(free_port())}
        process = await asyncio.create_subprocess_exec(
            *die_with_parent([_command(), "worker"]), env=env, stdin=asyncio.subprocess.DEVNULL
        )
        self.workers.append(process)
        return process

    async def enrol(self) -> str:
        """Enrols a fresh lead, returning its instance id; `RuntimeError` unless answered 201."""
        response = await self.http.post(
            f"{self.campaign_url}/workflow-instances", json=lead_body(), headers=self.auth
        )
        if response.status_code != 201:
            raise RuntimeError(f"enrolment failed: {response.status_code} {response.text}")
        instance_id: str = response.json()["data"]["workflowInstanceId"]
        return instance_id


def process_env(s: Settings) -> dict[str, str]:
    """The environment that gives a `campaign-engine` subprocess these settings."""
    return {
        # The bench's own dev server, not the cluster the shell's TEMPORAL_* settings reach.
        **without_temporal_variables(os.environ),
        "CAMPAIGN_ENGINE_TEMPORAL_ADDRESS": s.temporal_address,
        "CAMPAIGN_ENGINE_TASK_QUEUE": s.task_queue,
        "CAMPAIGN_ENGINE_STATE_DIR": str(s.state_dir),
        "CAMPAIGN_ENGINE_DATABASE_URL": s.resolved_database_url,
        "CAMPAIGN_ENGINE_API_KEY_PEPPER": reveal(s.api_key_pepper) or "",
        "CAMPAIGN_ENGINE_API_PORT": str(s.api_port),
        "CAMPAIGN_ENGINE_RATE_LIMIT": s.rate_limit,
        "CAMPAIGN_ENGINE_ENROLMENT_RATE_LIMIT": s.enrolment_rate_limit,
        "CAMPAIGN_ENGINE_TEMPORAL_RPC_TIMEOUT_SECONDS": str(s.temporal_rpc_timeout_seconds),
        "CAMPAIGN_ENGINE_DELIVERY": s.delivery,
        "CAMPAIGN_ENGINE_SMTP_PORT": str(s.smtp_port),
        "CAMPAIGN_ENGINE_LOG_LEVEL": "WARNING",
        # Metrics stay on, as in production, each process on a free port of its own: the default
        # ports are one per machine, and a second worker (or someone else's) would fight for them.
        "CAMPAIGN_ENGINE_API_METRICS_PORT": str(s.api_metrics_port or 0),
        "CAMPAIGN_ENGINE_WORKER_METRICS_PORT": str(s.worker_metrics_port or 0),
        # Generated in the bench's state dir on first use (one key for every process) unless set.
        "CAMPAIGN_ENGINE_PAYLOAD_ENCRYPTION": str(s.payload_encryption).lower(),
    }


def _command() -> str:
    return str(Path(sys.executable).with_name("campaign-engine"))


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


@asynccontextmanager
async def running_stack(
    state_dir: Path,
    *,
    workers: int = 1,
    dynamic_config: Sequence[tuple[str, str]] = DYNAMIC_CONFIG,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """Dev server in memory (see docs/performance-history.md) with `dynamic_config`, one API and
    `workers` worker processes; `overrides` are settings of the API and workers.

    Each is stopped on exit; a bench killed with SIGKILL takes them with it on Linux with setpriv
    (`entrypoints.children.die_with_parent`).
    """
    async with AsyncExitStack() as exit_stack:
        server = DevServer(dynamic_config=dynamic_config)
        await server.start()
        exit_stack.push_async_callback(server.stop)
        settings = Settings(
            state_dir=state_dir,
            temporal_address=server.address,
            task_queue=f"bench-{uuid.uuid4()}",
            api_port=free_port(),
            # 32 random bytes: `campaign-engine` refuses a shorter secret (secret_policy).
            api_key_pepper=SecretStr(secrets.token_hex(32)),
            rate_limit=UNLIMITED_RATE,
            enrolment_rate_limit=UNLIMITED_RATE,
            **{"api_metrics_port": free_port(), **overrides},
        )
        store = await Store.open(settings.resolved_database_url)
        account_group_id, campaign_id = new_object_id(), new_object_id()
        try:
            key = await KeyRing(store, (reveal(settings.api_key_pepper) or "").encode()).issue(
                "bench", [account_group_id], list(Permission)
            )
        finally:
            await store.close()
        # The bench's own client encrypts like the API and worker (the floor pays the codec too).
        temporal = await connect(settings, connection=TemporalConnection.plain(settings))
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        http = await exit_stack.enter_async_context(
            httpx.AsyncClient(
                base_url=f"http://{settings.api_host}:{settings.api_port}",
                timeout=60,
                limits=limits,
            )
        )
        api = await asyncio.create_subprocess_exec(
            *die_with_parent([_command(), "api"]),
            env=process_env(settings),
            stdin=asyncio.subprocess.DEVNULL,
        )
        stack = Stack(settings, server, temporal, http, key, account_group_id, campaign_id, api)
        exit_stack.push_async_callback(lambda: _stop(stack.api))
        for _ in range(workers):
            await stack.start_worker()

        async def stop_workers() -> None:
            for process in stack.workers:
                await _stop(process)

        exit_stack.push_async_callback(stop_workers)
        await _wait_for_api(http, stack.api)
        response = await http.put(stack.campaign_url, json=ONE_GATE_CAMPAIGN, headers=stack.auth)
        if response.status_code != 201:
            raise RuntimeError(f"campaign not created: {response.status_code} {response.text}")
        yield stack


async def _wait_for_api(http: httpx.AsyncClient, process: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        if process.returncode is not None:
            raise RuntimeError(f"the API exited with {process.returncode}")
        try:
            if (await http.get("/openapi.json")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError("the API did not start within 30 s")
