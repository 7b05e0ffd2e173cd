"""The request's trace id, for whoever builds a response body (the envelope's `traceId`).

`TraceMiddleware` (`api/tracing.py`) sets it per request; outside a request a fresh one is made,
so an envelope always carries one.
"""

from __future__ import annotations

import secrets
from contextvars import ContextVar, Token

_trace_id: ContextVar[str | None] = ContextVar("trace_id", default=None)


def current_trace_id() -> str:
    """The request's trace id: 32 lowercase hex characters (W3C trace-context form)."""
    trace_id = _trace_id.get()
    if trace_id is None:
        trace_id = secrets.token_hex(16)
        _trace_id.set(trace_id)
    return trace_id


def set_trace_id(trace_id: str) -> Token[str | None]:
    """Makes `trace_id` the current one; pass the token to `reset_trace_id` when done."""
    return _trace_id.set(trace_id)


def reset_trace_id(token: Token[str | None]) -> None:
    """Restores the trace id that was current before `set_trace_id`."""
    _trace_id.reset(token)
