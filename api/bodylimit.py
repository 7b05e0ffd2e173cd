"""Request bodies are bounded while they are read, so a huge one never fills memory."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class PathLimit(NamedTuple):
    """A body limit of its own for the paths `pattern` (a regular expression) matches:
    `max_bytes`, and the `setting` that sets it (named in the 413's message, so the answer says
    what an operator would change)."""

    pattern: str
    max_bytes: int
    setting: str


class BodyLimitMiddleware:
    """413 (the envelope's `PAYLOAD_TOO_LARGE`) once a body exceeds `max_bytes`.

    It acts where a route reads its body, not on arrival: the approve endpoint reads none, so its
    documented status codes stay as they are whatever a caller sends.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        path_limits: Sequence[PathLimit] = (),
    ) -> None:
        """`path_limits`: the first whose pattern matches a request's path sets its limit
        instead of `max_bytes`."""
        self.app = app
        self.max_bytes = max_bytes
        self._path_limits = [
            (re.compile(limit.pattern), limit.max_bytes, limit.setting) for limit in path_limits
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: HTTP requests reach the app with a `receive` that raises the 413 when the
        declared `Content-Length` or the bytes read so far exceed `max_bytes`."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        received = 0
        max_bytes, setting = next(
            (
                (limit, setting)
                for pattern, limit, setting in self._path_limits
                if pattern.match(scope["path"])
            ),
            (self.max_bytes, None),
        )

        async def bounded_receive() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > max_bytes:
                raise self._too_large(max_bytes, setting)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise self._too_large(max_bytes, setting)
            return message

        await self.app(scope, bounded_receive, send)

    @staticmethod
    def _too_large(max_bytes: int, setting: str | None) -> HTTPException:
        # An HTTPException passes FastAPI's body parsing untouched, to the envelope's handler.
        where = f" (the limit is the setting {setting})" if setting else ""
        return HTTPException(413, f"Request body larger than {max_bytes} bytes{where}")
