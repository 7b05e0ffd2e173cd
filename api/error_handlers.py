"""Every error the API answers, FastAPI's and Starlette's own included, as the envelope.

`install(app)` registers the handlers; `render(error)` is the one place an `ApiError` becomes a
response. Validation failures name their fields in `details`; a 405 carries an `Allow` header of
every method the OpenAPI document lists for the path (RFC 9110 §15.5.6); a store outage is a 502
`STORE_UNAVAILABLE`, any other store error a bug (500).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, get_args

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import (
    ApiError,
    Conflict,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
    Unauthorized,
    ValidationFailed,
    http_error,
)
from api.schemas import ErrorBody, ErrorResponse, ValidationErrorBody, ValidationErrorResponse
from campaign_engine.spelling import likely_names
from campaign_engine.store import store_unreachable

logger = logging.getLogger("campaign_engine.api")

# Starlette's own HTTP errors, by status, as our classes.
_STARLETTE_STATUSES: dict[int, type[ApiError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
}


def envelope(error: ApiError) -> ErrorResponse:
    """The reference page's error body for `error` (`ValidationErrorResponse` for a 400)."""
    if isinstance(error, ValidationFailed):
        return ValidationErrorResponse(
            error=ValidationErrorBody(message=error.message, details=error.details)
        )
    return ErrorResponse(
        error=ErrorBody(code=error.code, message=error.message, details=error.details)
    )


def render(error: ApiError) -> JSONResponse:
    """`error` as a JSON response: the envelope, its status and its headers."""
    return JSONResponse(
        envelope(error).model_dump(mode="json", by_alias=True),
        status_code=error.status_code,
        headers=error.headers,
    )


def _field_name(location: Sequence[int | str]) -> str:
    # ("path", "workflowInstanceId") → "workflowInstanceId";
    # ("body", "steps", 0, "id") → "steps.0.id"
    parts = [str(part) for part in location]
    if parts and parts[0] in {"path", "query", "header", "body", "cookie"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_failed(
    errors: Sequence[Any], body_model: type[BaseModel] | None = None
) -> ValidationFailed:
    """Pydantic's error list as one `ValidationFailed`: a message per problem, `details` the
    fields (dotted paths, comma-separated, in order of first appearance).

    A field the body does not have (`extra_forbidden`) is told the fields there are where it
    was sent and the likely one (`campaign_engine.spelling.likely_names`: `delays` → `delay`),
    read from `body_model`, the operation's body; an id of the wrong form what it probably is
    (`_id_hint`)."""
    fields: list[str] = []
    problems: list[str] = []
    for error in errors:
        location = error.get("loc", ())
        field = _field_name(location)
        if error.get("type") == "json_invalid":
            # Its location is a character offset, not a field.
            field = "body"
        if field not in fields:
            fields.append(field)
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        if error.get("type") == "string_pattern_mismatch" and field.endswith("Id"):
            message = "must be a 24-character lowercase hexadecimal id" + _id_hint(
                error.get("input")
            )
        if error.get("type") == "extra_forbidden":
            within = location[1:] if location[:1] == ("body",) else location
            message = _unknown_field(body_model, list(within)) or message
        problems.append(f"{field}: {message}")
    return ValidationFailed("; ".join(problems) or None, details=", ".join(fields))


_WORKFLOW_ID = re.compile(r"campaign:[0-9a-f]{24}:[0-9a-f]{24}:([0-9a-f]{24})")
_HEX_ID = re.compile(r"[0-9a-fA-F]{24}")


def _id_hint(value: object) -> str:
    """What an id of the wrong form probably is, as the end of a sentence (`.` for nothing):
    a Temporal workflow id (`campaign:{ag}:{campaign}:{instance}`: the instance id is its last
    part), upper-case hex, or an id with spaces, quotes or braces around it."""
    if not isinstance(value, str):
        return ""
    workflow_id = _WORKFLOW_ID.fullmatch(value)
    if workflow_id:
        return (
            f"; {value!r} is the Temporal workflow id: the workflow instance id is its last "
            f"part, {workflow_id[1]}"
        )
    trimmed = value.strip(" \t\r\n\"'{}<>")
    if _HEX_ID.fullmatch(trimmed) and trimmed != value.lower():
        return f"; did you mean {trimmed.lower()}?"
    return ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (`X`, `X | None`, `list[X]`, `X | list[X]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _unknown_field(model: type[BaseModel] | None, path: list[int | str]) -> str | None:
    """The message for the unknown field at `path` (its last part) of a body of `model`: the
    likely field and the fields there are, by their JSON names; None when the model at that
    place cannot be told."""
    if model is None or not path:
        return None
    *parents, unknown = path
    unknown = str(unknown)[:100]  # the caller's own key, echoed but not at any length
    for part in parents:
        if isinstance(part, int):
            continue  # an item of a list: the same model
        fields = {info.alias or name: info for name, info in model.model_fields.items()}
        info = fields.get(str(part))
        inner = _models_in(info.annotation) if info is not None else []
        if not inner:
            return None
        model = inner[0]
    names = [info.alias or name for name, info in model.model_fields.items()]
    where = ".".join(str(part) for part in parents) or "the body"
    likely = likely_names(unknown, [(name, name, "") for name in names])
    guess = ": did you mean " + " or ".join(f"`{name}`" for name in likely) + "?" if likely else "."
    listed = ", ".join(f"`{name}`" for name in names)
    return f"unknown field `{unknown}`{guess} The fields of {where} are {listed}."


def allowed_methods(app: FastAPI, path: str) -> str:
    """Every method the OpenAPI document lists for `path`, comma-separated ("" for none).

    Starlette's own 405 names only the first matching route's methods (PUT, not GET too, on a
    campaign), which misleads callers and contradicts the published spec.
    """
    # The most specific templates win, as in routing: `…/workflow-instances/batch` is that
    # literal path, not `…/workflow-instances/{workflowInstanceId}` with the id `batch`.
    matches: dict[int, set[str]] = {}
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods = matches.setdefault(template.count("{"), set())
            methods |= {method.upper() for method in operations}
    return ", ".join(sorted(matches[min(matches)])) if matches else ""


async def _on_api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    response = render(error)
    # The budget was spent on this request too: say so on its error, as on its success.
    for name, value in getattr(request.state, "rate_limit_headers", {}).items():
        response.headers.setdefault(name, value)
    return response


async def _on_validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return render(validation_failed(error.errors(), _body_model(request)))


def _body_model(request: Request) -> type[BaseModel] | None:
    """The pydantic model of the matched operation's JSON body, if it has one."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    annotation = getattr(getattr(body_field, "field_info", None), "annotation", None)
    models = _models_in(annotation)
    return models[0] if models else None


async def _on_http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    kind = _STARLETTE_STATUSES.get(error.status_code)
    headers = dict(error.headers or {})
    if kind is None:
        return render(http_error(error.status_code, str(error.detail), headers))
    if kind is NotFound:
        path = request.url.path
        if path.endswith("/") and allowed_methods(request.app, path.rstrip("/")):
            # No redirect (a 307 would skip the envelope and authentication): say it.
            return render(NotFound("No such route: remove the trailing slash"))
        return render(NotFound(None if error.detail == "Not Found" else str(error.detail)))
    if kind is MethodNotAllowed:
        headers["Allow"] = allowed_methods(request.app, request.url.path)
        return render(MethodNotAllowed(headers=headers))
    return render(kind(str(error.detail), headers=headers))


async def _on_store_error(_: Request, error: Exception) -> JSONResponse:
    if not store_unreachable(error):
        # Not an outage: let the trace middleware log it and answer the 500 envelope.
        raise error
    logger.warning("store unavailable: %s", error)
    return render(StoreUnavailable(details=type(error).__name__))


def install(app: FastAPI) -> None:
    """Routes every error, FastAPI's own included, through the envelope."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(SQLAlchemyError, _on_store_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
