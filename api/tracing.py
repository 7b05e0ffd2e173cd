"""Trace ids: one per request, in the envelope, the `X-Trace-Id` header and the log line.

When the process traces (OpenTelemetry), the trace id is the request span's, so it finds the
request's spans, the Temporal calls it made and the workflow work they caused.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics
from api.error_handlers import render
from api.errors import InternalError
from api.trace_id import reset_trace_id, set_trace_id
from campaign_engine import logs
from campaign_engine.ids import is_object_id

TRACE_HEADER = "X-Trace-Id"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")

logger = logging.getLogger("campaign_engine.api")


def _span_trace_id() -> str | None:
    """The request span's trace id (it continues an incoming `traceparent` itself)."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def route_template(scope: Scope) -> str | None:
    """The matched route's path template: ids stay out of metric labels and log paths."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


UNMATCHED = metrics.UNMATCHED_ROUTE
"""What logs, spans and metrics say instead of a path that matched no route: a path may carry a
credential (`/u/{token}/` with a slash too many), and only a route template is known safe."""

# The request span's attributes that the OpenTelemetry ASGI instrumentation fills from the raw
# URL when the request starts, before any route is matched (old and stable semantic conventions).
_URL_ATTRIBUTES = ("http.target", "http.url", "url.path", "url.query", "url.full")


def redact_span_url(template: str | None) -> None:
    """Puts the route template in place of the request URL on the current (request) span.

    The instrumentation records `http.target` and `http.url` (`url.path`, `url.full`,
    `url.query`) as requested, so `/u/{token}` carried the unsubscribe token — the whole
    credential of its link — into every exported trace. Span attributes can only be set while the
    span records, so this runs as the request ends, when the route is known; the query string,
    which may carry anything a caller puts there, is dropped.
    """
    span = trace.get_current_span()
    if not span.is_recording():
        return
    recorded = getattr(span, "attributes", None) or {}
    path = template or UNMATCHED
    for name in _URL_ATTRIBUTES:
        value = recorded.get(name)
        if not isinstance(value, str):
            continue
        if name in ("http.url", "url.full"):
            parts = urlsplit(value)
            span.set_attribute(name, urlunsplit((parts.scheme, parts.netloc, path, "", "")))
        elif name == "url.query":
            span.set_attribute(name, "")
        else:
            span.set_attribute(name, path)


# Path parameters as they are named in logs; only well-formed ids are logged.
_PATH_IDS = {
    "accountGroupId": "account_group_id",
    "campaignId": "campaign_id",
    "workflowInstanceId": "workflow_instance_id",
}


def _path_ids(scope: Scope) -> dict[str, str]:
    params = scope.get("path_params") or {}
    return {
        field: value
        for name, field in _PATH_IDS.items()
        if isinstance(value := params.get(name), str) and is_object_id(value)
    }


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
        """ASGI entry: an HTTP request gets its trace id (the active span's, else the caller's
        `traceparent`'s, else a fresh one), counted in the metrics and logged when answered; other
        scopes pass through untouched."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace_id = _span_trace_id() or _incoming_trace_id(scope) or secrets.token_hex(16)
        token = set_trace_id(trace_id)
        fields_token = logs.bind_request(trace_id=trace_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_trace(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                # Routing is done; the request span ends with the response's last byte.
                redact_span_url(route_template(scope))
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
            duration = time.perf_counter() - started
            template = route_template(scope)
            metrics.observe_request(scope["method"], template, status, duration)
            state = scope.get("state", {})
            path = template or UNMATCHED
            logger.info(
                "%s %s %s",
                scope["method"],
                path,
                status,
                extra={
                    "trace_id": trace_id,
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "duration_ms": round(duration * 1000, 1),
                    "key_id": state.get("key_id"),
                    **_path_ids(scope),
                },
            )
            logs.unbind_request(fields_token)
            reset_trace_id(token)


async def _send_internal_error(send: Send) -> None:
    # The same envelope every other error gets (`api.error_handlers.render`), built here because
    # the exception escaped the app's own handlers.
    response = render(InternalError())
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})
