"""A real API for a test: uvicorn on a free port, its store, an HTTP client, keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from temporalio.client import Client

from campaign_engine.keys import IssuedKey, KeyRing, Permission, load_pepper
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from entrypoints.servers import api_server, start_serving

ALL_PERMISSIONS = list(Permission)


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
        """Issues a key in the API's store granting `account_groups`, with `permissions` (every
        permission when none are named)."""
        keyring = KeyRing(self.store, load_pepper(self.settings))
        return await keyring.issue(name, account_groups, permissions or ALL_PERMISSIONS)


@asynccontextmanager
async def running_api(settings: Settings, temporal: Client | None) -> AsyncIterator[Api]:
    """The API on a real uvicorn server (the one factory production uses).

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
