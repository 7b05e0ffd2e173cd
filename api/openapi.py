"""The OpenAPI document: short, stable operation ids, the error envelope, HEAD without bodies.

Callers generate clients from `/openapi.json`, so what it names is part of the contract:
operation ids are the route functions' names in camelCase (`approvePendingCampaignContent`,
`getWorkflowInstance`; a HEAD twin is `head…`), and `tests/test_openapi.py` pins them. Error
responses are the envelope's schemas, named as the reference page names them (`ErrorResponse`,
`ValidationErrorResponse`); FastAPI's default 422 is gone, since validation failures are 400s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.schemas import ErrorResponse, ValidationErrorResponse

# Every route can answer these; the OpenAPI document lists them per operation.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ValidationErrorResponse, "description": "Request validation failed"},
    401: {"model": ErrorResponse, "description": "Invalid or missing API key"},
    403: {"model": ErrorResponse, "description": "Missing required permission"},
    404: {"model": ErrorResponse, "description": "Resource not found"},
    409: {
        "model": ErrorResponse,
        "description": "Conflict — resource is in a state that prevents this operation",
    },
    429: {"model": ErrorResponse, "description": "Rate limit exceeded"},
    500: {"model": ErrorResponse, "description": "Internal server error"},
    502: {
        "model": ErrorResponse,
        "description": "Upstream service error: Temporal (`TEMPORAL_UNAVAILABLE`) or the store "
        "(`STORE_UNAVAILABLE`) did not answer",
    },
}
"""The statuses of the approve endpoint's reference page, with its schema names."""

_ETAG = {
    "description": 'The open gate\'s id as a strong entity tag, `"<gateId>"` '
    "(RFC 9110 §8.8.3); send it back as `If-Match` to approve exactly that gate.",
    "schema": {"type": "string"},
}
INSTANCE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    200: {"description": "Successful Response", "headers": {"ETag": _ETAG}},
}
"""The instance GET: `ETag` while a gate is open."""

APPROVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    200: {
        "description": "Pending campaign content approved and workflow status refreshed",
        "headers": {"ETag": {**_ETAG, "description": "The approved gate's id (RFC 9110 §8.8.3)."}},
    },
    409: {
        "model": ErrorResponse,
        "description": "Conflict — resource is in a state that prevents this operation: "
        "`NO_PENDING_APPROVAL` with `details` `ALREADY_APPROVED`, `NO_GATE_OPEN`, "
        "`WORKFLOW_CLOSED`, or `GATE_CHANGED` (`If-Match` named no open gate)",
    },
}
"""The approve endpoint: the reference page's statuses, the `ETag` of the 200, the 409's
details."""

BODY_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    413: {
        "model": ErrorResponse,
        "description": "Request body too large (`PAYLOAD_TOO_LARGE`), or the campaign would "
        "not fit under Temporal's payload size limit (`CAMPAIGN_TOO_LARGE`, "
        "`TEMPORAL_PAYLOAD_TOO_LARGE`)",
    },
    415: {
        "model": ErrorResponse,
        "description": "The body is not `application/json` (`UNSUPPORTED_MEDIA_TYPE`; `details` "
        "names the accepted type)",
    },
}
"""Operations that read a request body also answer 413 and 415 (the approve endpoint reads
none)."""


RENDER_QUEUE_FULL_RESPONSE: dict[str, Any] = {
    "model": ErrorResponse,
    "description": "The account group's share of the render queue, or this process's, is "
    "taken by templates waiting already (`RENDER_QUEUE_FULL`; `details` `account group` or "
    "`process`); nothing was stored. Retry after `Retry-After` seconds.",
    "headers": {
        "Retry-After": {
            "description": "Seconds until the queue has likely drained (RFC 9110 §10.2.3).",
            "schema": {"type": "integer"},
        }
    },
}
"""The campaign PUT's 503: its templates are checked in the render pool (`api.campaigns`)."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def operation_id(route: APIRoute) -> str:
    """The route function's name in camelCase: `get_workflow_instance` → `getWorkflowInstance`.

    Used as FastAPI's `generate_unique_id_function`, so the id changes only when the function is
    renamed (never with the path, as FastAPI's default does).
    """
    return _camel(route.name)


def document_the_envelope(app: FastAPI) -> None:
    """Post-processes `app.openapi()` once: no 422 anywhere (validation failures are 400
    `ValidationErrorResponse`), and HEAD operations without response content."""
    default_openapi: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            for path in schema.get("paths", {}).values():
                for method, operation in path.items():
                    responses = operation.get("responses", {})
                    responses.pop("422", None)
                    if method == "head":
                        for response in responses.values():
                            response.pop("content", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
