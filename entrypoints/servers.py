"""The one HTTP server factory: uvicorn for the API (CLI, dev runner, tests) and test receivers.

Every server is configured the same way: no uvicorn log config or access log (our own request
log line replaces both), the API's graceful shutdown bound from the settings, and — for servers
embedded in a process that stops things in order itself (the dev runner, tests) — no signal
handlers of uvicorn's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Literal

import uvicorn
from starlette.types import ASGIApp
from temporalio.client import Client

from api import create_app
from campaign_engine.ports import bind_listening_socket
from campaign_engine.settings import Settings


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the embedding process stops it in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leaves SIGINT and SIGTERM to the embedding process."""
        yield


def http_server(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    embedded: bool,
    lifespan: Literal["on", "off"] = "off",
    graceful_shutdown_seconds: int | None = None,
) -> uvicorn.Server:
    """A uvicorn server for `app` on `host:port`; `embedded` servers ignore signals.

    `lifespan="on"` runs the app's start-up and shut-down (the API needs it: its store and Temporal
    client live there); a failing start-up then stops the server instead of serving without it.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan=lifespan,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=graceful_shutdown_seconds,
        # uvicorn trusts `X-Forwarded-For` from 127.0.0.1 (or `FORWARDED_ALLOW_IPS`) by default:
        # a local caller could then name any client address. Only the API's own
        # `trusted_proxies` setting turns proxy headers on (`api.create_app`).
        proxy_headers=False,
    )
    return EmbeddedServer(config) if embedded else uvicorn.Server(config)


def api_server(
    settings: Settings, *, temporal: Client | None = None, embedded: bool = False
) -> uvicorn.Server:
    """The API on `settings.api_host:api_port`.

    `temporal=None` connects lazily, as production does (the API starts while Temporal is down);
    on SIGTERM in-flight requests get `api_shutdown_timeout_seconds` to finish.
    """
    return http_server(
        create_app(settings, temporal=temporal),
        host=settings.api_host,
        port=settings.api_port,
        embedded=embedded,
        lifespan="on",
        graceful_shutdown_seconds=settings.api_shutdown_timeout_seconds,
    )


def bind_api_socket(settings: Settings) -> socket.socket:
    """The API's listening socket on `settings.api_host:api_port`, bound now, before anything
    else of the process starts; `PortInUse` naming `CAMPAIGN_ENGINE_API_PORT` when it is taken
    (the CLI exits 2). Pass it to `start_serving` or `uvicorn.Server.run(sockets=[…])`."""
    return bind_listening_socket(settings.api_host, settings.api_port, "CAMPAIGN_ENGINE_API_PORT")


async def start_serving(
    server: uvicorn.Server, sockets: list[socket.socket] | None = None
) -> asyncio.Task[None]:
    """Starts `server.serve(sockets)` and returns its task once the server accepts connections.

    `sockets` are already bound (`campaign_engine.ports.bind_listening_socket`, which names the
    setting of a taken port); None lets uvicorn bind `server.config`'s host and port.
    Raises `RuntimeError` when the server exits before it started (a port taken, a failed
    lifespan), with the server's own exception as the cause where it raised one.
    """
    task = asyncio.create_task(_serve(server, sockets))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the HTTP server exited before it started")
        await asyncio.sleep(0.01)
    return task


async def _serve(server: uvicorn.Server, sockets: list[socket.socket] | None) -> None:
    try:
        await server.serve(sockets)
    except SystemExit as exit_:
        # uvicorn exits the process (sys.exit) when it cannot bind. Escaping a task, SystemExit
        # ends asyncio.run at once and leaves every other task of the process (a worker's) to be
        # cancelled on the way out: `make dev` hung there, deaf to Ctrl-C.
        raise RuntimeError(f"the HTTP server exited with {exit_.code} before it started") from exit_
