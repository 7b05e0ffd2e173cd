"""Real protocol peers for tests, in-process: an SMTP server (aiosmtpd) and an HTTP receiver."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from entrypoints.devserver import free_port
from entrypoints.servers import http_server, start_serving


@dataclass(frozen=True)
class ReceivedEnvelope:
    """What one accepted message came with: MAIL FROM, its options, RCPT TOs, the raw bytes."""

    mail_from: str
    mail_options: list[str]
    rcpt_tos: list[str]
    content: bytes


class _CountingSMTP(SMTP):
    """aiosmtpd's server, counting the connections it holds open."""

    def __init__(self, handler: Any, sink: SmtpSink, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sink = sink

    def connection_made(self, transport: Any) -> None:
        with self._sink._lock:
            self._sink.connections_opened += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        with self._sink._lock:
            self._sink.connections_closed += 1
        super().connection_lost(error)


class _SinkController(Controller):
    def __init__(self, sink: SmtpSink, **kwargs: Any) -> None:
        super().__init__(sink, **kwargs)
        self._sink = sink

    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, self._sink, **self.SMTP_kwargs)


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
    """DATA is answered this much later, before the message is recorded."""
    rcpt_delay_seconds: float = 0.0
    """RCPT is answered this much later: an attempt held before anything is handed over."""
    rcpt_attempts: int = 0
    smtputf8: bool = True
    """Whether EHLO offers SMTPUTF8 (RFC 6531); set before `start()`."""
    credentials: tuple[str, str] | None = None
    """A username and password the server requires (AUTH PLAIN/LOGIN, RFC 4954, allowed without
    TLS on this test server); None: no AUTH. Set before `start()`."""
    logins: list[str] = field(default_factory=list)
    """Usernames that logged in successfully, in order."""
    messages: list[Message] = field(default_factory=list)
    envelopes: list[ReceivedEnvelope] = field(default_factory=list)
    data_attempts: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None
    port: int = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        """aiosmtpd's RCPT hook: counts it, runs `on_rcpt`, then accepts the recipient, or
        answers `reject_recipient_with` when the address starts with `refused_prefix`."""
        with self._lock:
            self.rcpt_attempts += 1
        if self.on_rcpt is not None:
            self.on_rcpt()
        if self.rcpt_delay_seconds:
            await asyncio.sleep(self.rcpt_delay_seconds)
        if self.reject_recipient_with and address.startswith(self.refused_prefix):
            return self.reject_recipient_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """aiosmtpd's DATA hook: answers 451 while `transient_failures` last, else records the
        message and its envelope, runs `on_data` and answers 250."""
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
            self.envelopes.append(
                ReceivedEnvelope(
                    mail_from=envelope.mail_from or "",
                    mail_options=list(envelope.mail_options),
                    rcpt_tos=list(envelope.rcpt_tos),
                    content=content,
                )
            )
        if self.on_data is not None:
            self.on_data()
        return "250 2.0.0 accepted"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.credentials is not None
        username, password = self.credentials
        if (
            isinstance(data, LoginPassword)
            and data.login == username.encode()
            and data.password == password.encode()
        ):
            with self._lock:
                self.logins.append(username)
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def received(self) -> list[Message]:
        """The messages accepted so far, parsed, oldest first (a copy)."""
        with self._lock:
            return list(self.messages)

    def received_envelopes(self) -> list[ReceivedEnvelope]:
        """The envelopes of the messages accepted so far, oldest first (a copy)."""
        with self._lock:
            return list(self.envelopes)

    def open_connections(self) -> int:
        """Connections the server holds right now (opened and not yet lost)."""
        with self._lock:
            return self.connections_opened - self.connections_closed

    def start(self) -> None:
        """Listens on `port`, or on a free port when it is 0."""
        self.port = self.port or free_port()
        auth: dict[str, Any] = {}
        if self.credentials is not None:
            auth = {
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": False,
            }
        self._controller = _SinkController(
            self, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=self.smtputf8, **auth
        )
        self._controller.start()
        # aiosmtpd connects once itself to check the server is up: not a connection of ours.
        deadline = time.monotonic() + 5
        while self.open_connections() and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            self.connections_opened = self.connections_closed = 0

    def stop(self) -> None:
        """Stops the server and its thread; nothing happens if it was never started."""
        if self._controller is not None:
            self._controller.stop()


@dataclass
class ReceivedRequest:
    """One POST the receiver got: its headers (names lower-case) and raw body."""

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
        """Where to POST: `http://127.0.0.1:{port}/hooks/campaigns` (valid once started)."""
        return f"http://127.0.0.1:{self.port}/hooks/campaigns"

    async def _receive(self, request: Request) -> Response:
        self.requests.append(ReceivedRequest(dict(request.headers), await request.body()))
        return Response(status_code=self.status)

    async def start(self) -> None:
        """Serves on a free port in the running event loop; returns once it accepts connections
        (`RuntimeError` if it cannot start)."""
        self.port = free_port()
        app = Starlette(routes=[Route("/hooks/campaigns", self._receive, methods=["POST"])])
        self._server = http_server(app, host="127.0.0.1", port=self.port, embedded=True)
        self._task = await start_serving(self._server)

    async def stop(self) -> None:
        """Asks the server to exit and waits until it has; a no-op if it never started."""
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
        """The key set's address: `http://127.0.0.1:<port>/.well-known/jwks.json` (port 0 until
        started)."""
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    async def _jwks(self, _: Request) -> Response:
        self.fetches += 1
        return JSONResponse({"keys": self.keys})

    async def start(self) -> None:
        """Serves `keys` on a free port in the running event loop; returns once it accepts
        connections (`RuntimeError` if it cannot start). Each GET counts in `fetches`."""
        self.port = free_port()
        app = Starlette(routes=[Route("/.well-known/jwks.json", self._jwks)])
        self._server = http_server(app, host="127.0.0.1", port=self.port, embedded=True)
        self._task = await start_serving(self._server)

    async def stop(self) -> None:
        """Asks the server to exit and waits until it has; a no-op if it never started."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
