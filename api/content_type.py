"""Request bodies are JSON: a body of any other declared media type is a 415, not a 400.

FastAPI reads a body whose `Content-Type` is not JSON as raw bytes and then reports a validation
error ("Input should be a valid dictionary"), which tells a caller their JSON was wrong when it was
their header. RFC 9110 §15.5.16: 415 Unsupported Media Type is the answer for a content type the
operation does not accept. A body without `Content-Type` is read as JSON, as FastAPI does.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from api.errors import UnsupportedMediaType

JSON_MEDIA_TYPE = "application/json"


def is_json(content_type: str) -> bool:
    """True for `application/json` and `application/*+json` (RFC 6839), any parameters."""
    parsed = Message()
    parsed["content-type"] = content_type
    if parsed.get_content_maintype() != "application":
        return False
    subtype = parsed.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


class JsonBodyRoute(APIRoute):
    """A route that refuses a non-JSON request body with 415 before reading it.

    Routes that take no body (the approve endpoint) are unaffected: whatever a caller sends them
    is ignored, as the reference page says.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, preceded by the media-type check when the route reads a body."""
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if content_type is not None and not is_json(content_type):
                raise UnsupportedMediaType(
                    f"Request bodies must be JSON: send `Content-Type: {JSON_MEDIA_TYPE}` "
                    f"(got `{content_type[:100]}`)",
                    details=JSON_MEDIA_TYPE,
                )
            return await handler(request)

        return checked
