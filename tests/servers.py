"""Real protocol peers for tests, in-process: an SMTP server (aiosmtpd) and an HTTP receiver."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from campaign_engine.dev import EmbeddedServer
from campaign_engine.devserver import free_port


@dataclass
class SmtpSink:
    """Accepts mail like a real server; tests script refusals and failures.

    aiosmtpd runs its own event loop in a thread, so state shared with tests is lock-guarded.
    """

    reject_recipient_with: str | None = None
    """An SMTP reply to RCPT, e.g. "550 5.1.1 no such user"."""
    refused_prefix: str = ""
    """Only recipients starting with this get `reject_recipient_with` (all, by default)."""
    transient_failures: int = 0
    """This many DATA commands answer 451 before the server starts accepting."""
    on_rcpt: Callable[[], None] | None = None
    """Runs when a RCPT arrives, before the server answers: nothing has been handed over yet."""
    on_data: Callable[[], None] | None = None
    """Runs when a message's DATA has arrived, before the server answers."""
    data_delay_seconds: float = 0.0
    messages: list[Message] = field(default_factory=list)
    data_attempts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None
    port: int = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.on_rcpt is not None:
            self.on_rcpt()
        if self.reject_recipient_with and address.startswith(self.refused_prefix):
            return self.reject_recipient_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.data_attempts += 1
            if self.transient_failures > 0:
                self.transient_failures -= 1
                return "451 4.3.0 try again later"
        if self.data_delay_seconds:
            await asyncio.sleep(self.data_delay_seconds)
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        with self._lock:
            self.messages.append(message_from_bytes(content))
        if self.on_data is not None:
            self.on_data()
        return "250 2.0.0 accepted"

    def received(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def start(self) -> None:
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()


@dataclass
class ReceivedRequest:
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """An HTTP endpoint that records what it receives and answers `status`."""

    status: int = 204
    requests: list[ReceivedRequest] = field(default_factory=list)
    port: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/campaigns"

    async def _receive(self, request: Request) -> Response:
        self.requests.append(ReceivedRequest(dict(request.headers), await request.body()))
        return Response(status_code=self.status)

    async def start(self) -> None:
        self.port = free_port()
        app = Starlette(routes=[Route("/hooks/campaigns", self._receive, methods=["POST"])])
        self._server = EmbeddedServer(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="off")
        )
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


@dataclass
class JwksServer:
    """An identity provider's key set (RFC 7517) at `url`, for forwarded-access-token tests."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    fetches: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    async def _jwks(self, _: Request) -> Response:
        self.fetches += 1
        return JSONResponse({"keys": self.keys})

    async def start(self) -> None:
        self.port = free_port()
        app = Starlette(routes=[Route("/.well-known/jwks.json", self._jwks)])
        self._server = EmbeddedServer(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="off")
        )
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
