"""Request bodies are bounded while they are read, so a huge one never fills memory."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """413 (the envelope's `PAYLOAD_TOO_LARGE`) once a body exceeds `max_bytes`.

    It acts where a route reads its body, not on arrival: the approve endpoint reads none, so its
    documented status codes stay as they are whatever a caller sends.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: HTTP requests reach the app with a `receive` that raises the 413 when the
        declared `Content-Length` or the bytes read so far exceed `max_bytes`."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise self._too_large()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, bounded_receive, send)

    def _too_large(self) -> HTTPException:
        # An HTTPException passes FastAPI's body parsing untouched, to the envelope's handler.
        return HTTPException(413, f"Request body larger than {self.max_bytes} bytes")
