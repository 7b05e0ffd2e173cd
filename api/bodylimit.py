"""Request bodies are bounded while they are read, so a huge one never fills memory."""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """413 (the envelope's `PAYLOAD_TOO_LARGE`) once a body exceeds `max_bytes`.

    It acts where a route reads its body, not on arrival: the approve endpoint reads none, so its
    documented status codes stay as they are whatever a caller sends.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        path_limits: Sequence[tuple[str, int]] = (),
    ) -> None:
        """`path_limits`: (regular expression over the path, limit in bytes) pairs; the first
        that matches a request's path sets its limit instead of `max_bytes`."""
        self.app = app
        self.max_bytes = max_bytes
        self._path_limits = [(re.compile(pattern), limit) for pattern, limit in path_limits]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: HTTP requests reach the app with a `receive` that raises the 413 when the
        declared `Content-Length` or the bytes read so far exceed `max_bytes`."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        received = 0
        max_bytes = next(
            (limit for pattern, limit in self._path_limits if pattern.match(scope["path"])),
            self.max_bytes,
        )

        async def bounded_receive() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > max_bytes:
                raise self._too_large(max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise self._too_large(max_bytes)
            return message

        await self.app(scope, bounded_receive, send)

    @staticmethod
    def _too_large(max_bytes: int) -> HTTPException:
        # An HTTPException passes FastAPI's body parsing untouched, to the envelope's handler.
        return HTTPException(413, f"Request body larger than {max_bytes} bytes")
