"""The OpenAPI document: short, stable operation ids, the error envelope, HEAD without bodies.

Callers generate clients from `/openapi.json`, so what it names is part of the contract:
operation ids are the route functions' names in camelCase (`approvePendingCampaignContent`,
`getWorkflowInstance`; a HEAD twin is `head…`), and `tests/test_openapi.py` pins them. Error
responses are the envelope's schemas, named as the reference page names them (`ErrorResponse`,
`ValidationErrorResponse`); FastAPI's default 422 is gone, since validation failures are 400s.

The document explains itself, each text written once, where the code keeps it: an operation's
summary is its route's `summary=`, its description the route function's docstring, followed by
the permission its scope dependency checks (`name_permissions`, from `api.deps`); its error
responses are generated from the errors the route declares it raises (`error_responses`), each
code with when it is answered: the error class's docstring, or a `Raises(…, when)` that says it
for that route; schemas and fields are described by the Pydantic models (`Field(description=…,
examples=[…])`, class docstrings). `tests/test_openapi.py` fails on any gap.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from api.deps import SCOPE_PERMISSIONS
from api.errors import (
    AccountGroupAccessDenied,
    ApiError,
    AuthenticationThrottled,
    InternalError,
    MissingPermission,
    PayloadTooLarge,
    RateLimited,
    RenderQueueFull,
    StoreUnavailable,
    TemporalUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from api.schemas import ErrorResponse, ValidationErrorResponse
from campaign_engine.keys import Permission

STATUS_TITLES: dict[int, str] = {
    400: "Request validation failed",
    401: "Invalid or missing API key",
    403: "Missing required permission",
    404: "Resource not found",
    409: "Conflict — resource is in a state that prevents this operation",
    413: "Request body too large",
    415: "Unsupported media type",
    429: "Rate limit exceeded",
    500: "Internal server error",
    502: "Upstream service error",
    503: "Service unavailable",
}
"""Each status's first line: the approve reference page's words for its eight statuses, RFC 9110's
names for the others."""


@dataclass(frozen=True)
class Raises:
    """An error an operation answers, and when: the first paragraph of the class's docstring
    (its status prefix dropped) unless `when` says it for this operation."""

    error: type[ApiError]
    when: str | None = None

    @property
    def text(self) -> str:
        """When the error is answered, one line of Markdown."""
        if self.when is not None:
            return self.when
        doc = inspect.getdoc(self.error) or ""
        first = " ".join(doc.split("\n\n", 1)[0].split())
        first = re.sub(r"^\d{3}( from `[^`]+`)?: ", "", first)
        return first[:1].upper() + first[1:]


Raised = type[ApiError] | Raises

AUTHENTICATED: tuple[Raised, ...] = (
    Raises(
        ValidationFailed,
        "A path id is not a 24-character lowercase hex id; `details` names it (e.g. `campaignId`).",
    ),
    Unauthorized,
    MissingPermission,
    AccountGroupAccessDenied,
    Raises(
        RateLimited,
        "The key's request budget (`CAMPAIGN_ENGINE_RATE_LIMIT`) is spent; `Retry-After` "
        "(seconds) and `X-RateLimit-*` say until when.",
    ),
    Raises(
        AuthenticationThrottled,
        "The client address has spent its budget of failed authentications "
        "(`CAMPAIGN_ENGINE_AUTH_FAILURE_LIMIT`): `details` `FAILED_AUTHENTICATIONS`, even for a "
        "right key, until `Retry-After` (seconds).",
    ),
    InternalError,
    Raises(
        StoreUnavailable,
        "The key and campaign store did not answer (`details`: the driver's error); retry later.",
    ),
)
"""What every operation that takes an API key can answer, in the order the checks run
(`api.deps`): 401 → 429 → 400 → 403, and the store behind the key."""

JSON_BODY: tuple[Raised, ...] = (
    Raises(
        ValidationFailed,
        "The body does not match the schema: `details` names the offending field(s), "
        "comma-separated (`lead.email`, `steps.0.body`), the message says what is wrong.",
    ),
    Raises(
        PayloadTooLarge,
        "The body is larger than any valid request; nothing of it was read.",
    ),
    UnsupportedMediaType,
)
"""What an operation that reads a JSON body can answer besides."""

TEMPORAL: tuple[Raised, ...] = (
    Raises(
        TemporalUnavailable,
        "Temporal did not answer in time, or no worker did (`details`: the gRPC status or "
        "`TimeoutError`); retry later.",
    ),
)
"""What an operation that calls Temporal can answer besides."""


RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (RFC 9110 §10.2.3).",
        "schema": {"type": "integer"},
        "example": 30,
    }
}
"""The `Retry-After` header of a 429 or 503."""

WWW_AUTHENTICATE: dict[str, Any] = {
    "WWW-Authenticate": {
        "description": "`Bearer`: the scheme the key is sent with (RFC 9110 §11.6.1).",
        "schema": {"type": "string"},
        "example": "Bearer",
    }
}
"""The `WWW-Authenticate` header of a 401."""

ERROR_HEADERS: tuple[tuple[type[ApiError], dict[str, Any]], ...] = (
    (Unauthorized, WWW_AUTHENTICATE),
    (RateLimited, RETRY_AFTER),
    (RenderQueueFull, RETRY_AFTER),
)
"""The headers an error carries wherever it is answered (its subclasses' too)."""


def error_responses(
    *raised: Raised, headers: dict[int, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route from the errors it raises: per status the envelope's schema
    (`ValidationErrorResponse` for a 400 that is only `VALIDATION_ERROR`, else `ErrorResponse`),
    and a description that opens with the status's title (`STATUS_TITLES`) and lists each code
    with when it is answered; its headers are those its errors carry (`ERROR_HEADERS`:
    `Retry-After` of a 429) and any `headers` adds."""
    by_status: dict[int, list[Raises]] = {}
    for each in raised:
        entry = each if isinstance(each, Raises) else Raises(each)
        by_status.setdefault(entry.error.status_code, []).append(entry)
    responses: dict[int | str, dict[str, Any]] = {}
    for status_code in sorted(by_status):
        entries = by_status[status_code]
        only_validation = all(issubclass(e.error, ValidationFailed) for e in entries)
        lines = "\n".join(f"- `{e.error.code}`: {e.text}" for e in entries)
        response: dict[str, Any] = {
            "model": ValidationErrorResponse if only_validation else ErrorResponse,
            "description": f"{STATUS_TITLES[status_code]}.\n\n{lines}",
        }
        declared = {
            name: header
            for entry in entries
            for kind, carried in ERROR_HEADERS
            if issubclass(entry.error, kind)
            for name, header in carried.items()
        } | (headers or {}).get(status_code, {})
        if declared:
            response["headers"] = declared
        responses[status_code] = response
    return responses


_ETAG = {
    "description": 'The open gate\'s id as a strong entity tag, `"<gateId>"` '
    "(RFC 9110 §8.8.3); send it back as `If-Match` to approve exactly that gate.",
    "schema": {"type": "string"},
    "example": '"6f1c2a9e4b7d4e0f"',
}
ETAG_HEADER: dict[str, Any] = {"ETag": _ETAG}
"""The instance GET's `ETag` while a gate is open."""
APPROVED_ETAG_HEADER: dict[str, Any] = {
    "ETag": {**_ETAG, "description": "The approved gate's id (RFC 9110 §8.8.3)."}
}
"""The approve 200's `ETag`: the gate it approved."""


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
    `ValidationErrorResponse`), HEAD operations without response content, each operation's
    permission (`name_permissions`) and each schema's example (`compose_examples`)."""
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
            name_permissions(app, schema)
            compose_examples(schema)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def permission_of(route: APIRoute) -> Permission | None:
    """The permission the route's scope dependency checks (`api.deps.SCOPE_PERMISSIONS`), found
    anywhere in its dependency tree; None for a route without an API key (the probes)."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if dependency.call in SCOPE_PERMISSIONS:
            return SCOPE_PERMISSIONS[dependency.call]
        pending.extend(dependency.dependencies)
    return None


PERMISSION_EXTENSION = "x-required-permission"
"""The operation's permission, for programs; its description says it for people."""


def name_permissions(app: FastAPI, schema: dict[str, Any]) -> None:
    """Adds to each operation of `schema` the permission its route checks: as
    `x-required-permission` and as the last paragraph of its description (the reference page's
    "Required API permission"), or that it needs no API key."""
    # As FastAPI's own `get_openapi` walks them: included routers are kept as contexts.
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        permission = permission_of(route)
        for method in context.methods or ():
            operation = schema["paths"].get(context.path_format, {}).get(method.lower())
            if operation is None:
                continue
            if permission is None:
                line = "**Required API permission:** none; no API key is needed."
            else:
                operation[PERMISSION_EXTENSION] = permission.value
                line = (
                    f"**Required API permission:** `{permission.value}`, for the path's "
                    "account group (an API key as `Authorization: Bearer <key>` or "
                    "`X-API-Key: <key>`)."
                )
            description = operation.get("description", "").rstrip()
            operation["description"] = f"{description}\n\n{line}".lstrip()


def example_of(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """The example of `schema` as a reader sees it: its own first example, else the one of the
    schema it refers to, else (an object) its fields' examples, (a list) one item's, (an enum)
    its first value. Nullable types take the non-null branch."""
    if "examples" in schema:
        return schema["examples"][0]
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return example_of(document, document["components"]["schemas"][name])
    for branch in schema.get("anyOf", []):
        if branch.get("type") != "null":
            return example_of(document, branch)
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("type") == "array":
        return [example_of(document, schema["items"])]
    fields = schema.get("properties", {})
    return {name: example_of(document, field) for name, field in fields.items()}


def compose_examples(document: dict[str, Any]) -> None:
    """Gives every component schema an example of its own, composed from its fields' (which the
    models declare: one source), so a reader of any schema, a request body's or a response's,
    sees a whole one; the approve response's is the reference page's shape."""
    for schema in document.get("components", {}).get("schemas", {}).values():
        if "examples" not in schema:
            schema["examples"] = [example_of(document, schema)]
