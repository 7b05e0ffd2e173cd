"""Trace ids: one per request, in the envelope, the `X-Trace-Id` header and the log line."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

TRACE_HEADER = "X-Trace-Id"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")

_trace_id: ContextVar[str | None] = ContextVar("trace_id", default=None)
logger = logging.getLogger("campaign_engine.api")


def current_trace_id() -> str:
    trace_id = _trace_id.get()
    if trace_id is None:
        trace_id = secrets.token_hex(16)
        _trace_id.set(trace_id)
    return trace_id


def _incoming_trace_id(scope: Scope) -> str | None:
    """A W3C `traceparent` from the caller is continued, so its trace id is ours too."""
    for name, value in scope.get("headers", []):
        if name == b"traceparent":
            match = _TRACEPARENT.match(value.decode("latin-1").strip())
            if match and match.group(1) != "0" * 32:
                return match.group(1)
    return None


class TraceMiddleware:
    """Gives each request its trace id, stamps it on the response, and logs one line per request.

    It also renders unexpected exceptions as the 500 envelope, so even that response carries the
    trace id that finds its log line.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace_id = _incoming_trace_id(scope) or secrets.token_hex(16)
        token = _trace_id.set(trace_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_trace(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (TRACE_HEADER.lower().encode(), trace_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        except Exception:
            logger.exception("unhandled error", extra={"trace_id": trace_id})
            if response_started:
                raise
            await _send_internal_error(send_with_trace)
        finally:
            state = scope.get("state", {})
            logger.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "trace_id": trace_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "key_id": state.get("key_id"),
                },
            )
            _trace_id.reset(token)


async def _send_internal_error(send: Send) -> None:
    body = json.dumps(
        {
            "success": False,
            "data": None,
            "error": {
                "code": "INTERNAL_ERROR",
                "message": "An unexpected error occurred; the trace id finds it in the logs.",
                "details": None,
            },
            "traceId": current_trace_id(),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
