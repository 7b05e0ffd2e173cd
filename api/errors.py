"""One error hierarchy, rendered by one handler as the reference page's envelope."""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import ErrorBody, ErrorResponse, ValidationErrorBody, ValidationErrorResponse


class ApiError(Exception):
    status_code = 500
    code = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.details = details
        self.headers = dict(headers or {})


class ValidationFailed(ApiError):
    status_code = 400
    code = "VALIDATION_ERROR"


class Unauthorized(ApiError):
    status_code = 401
    code = "UNAUTHORIZED"


class Forbidden(ApiError):
    status_code = 403
    code = "FORBIDDEN"


class NotFound(ApiError):
    status_code = 404
    code = "NOT_FOUND"


class MethodNotAllowed(ApiError):
    status_code = 405
    code = "METHOD_NOT_ALLOWED"


class Conflict(ApiError):
    status_code = 409
    code = "CONFLICT"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ApiError):
    """A request body declared as anything but JSON (RFC 9110 §15.5.16)."""

    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class CampaignTooLarge(PayloadTooLarge):
    """413: the campaign would not fit under Temporal's payload size limit.

    413 rather than 400: each field is valid on its own, the content as a whole is more than the
    service can carry (RFC 9110, 15.5.14), and the remedy is the same as for a body too large:
    send less. `details` names the field that holds the bulk (`steps`).
    """

    code = "CAMPAIGN_TOO_LARGE"


class TemporalPayloadTooLarge(PayloadTooLarge):
    """413: Temporal refused a payload as too large (its blob or gRPC message size limit).

    Not an outage: retrying sends the same payload. The message carries Temporal's own words.
    """

    code = "TEMPORAL_PAYLOAD_TOO_LARGE"


class RateLimited(ApiError):
    status_code = 429
    code = "RATE_LIMITED"


class UpstreamError(ApiError):
    status_code = 502
    code = "UPSTREAM_ERROR"


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "SERVICE_UNAVAILABLE"


class StoreUnavailable(UpstreamError):
    """The key and campaign store cannot be reached: an upstream failure like Temporal's.

    502, not 503 or 500: the approve endpoint's reference page lists 502 for a service it depends
    on being down, every operation already declares it, and 500 stays for our own bugs.
    """

    code = "STORE_UNAVAILABLE"


# SQLite says "cannot reach the database" with these (file missing or unopenable, I/O failure,
# locked past busy_timeout); "no such table" and friends stay bugs (500).
_SQLITE_UNAVAILABLE = {
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_NOTADB,
    sqlite3.SQLITE_READONLY,
}


def store_unreachable(error: BaseException) -> bool:
    """True when a store error means the database is down or unreachable, not that we erred."""
    if isinstance(error, PoolTimeout):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, sqlite3.Error) and cause.sqlite_errorcode in _SQLITE_UNAVAILABLE:
            return True
        # Network drivers (asyncpg and friends) report a refused, dropped or timed-out
        # connection as an OSError (ConnectionError and TimeoutError included).
        if isinstance(cause, OSError):
            return True
        if isinstance(cause, DBAPIError):
            cause = cause.orig
        else:
            cause = cause.__cause__ or cause.__context__
    return False


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


# Operations that read a request body also answer 413 (the approve endpoint reads none).
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


def render(error: ApiError) -> JSONResponse:
    body: ErrorResponse
    if isinstance(error, ValidationFailed):
        body = ValidationErrorResponse(
            error=ValidationErrorBody(message=error.message, details=error.details)
        )
    else:
        body = ErrorResponse(
            error=ErrorBody(code=error.code, message=error.message, details=error.details)
        )
    return JSONResponse(
        body.model_dump(mode="json", by_alias=True),
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


def validation_failed(errors: Sequence[Any]) -> ValidationFailed:
    fields: list[str] = []
    problems: list[str] = []
    for error in errors:
        field = _field_name(error.get("loc", ()))
        if error.get("type") == "json_invalid":
            # Its location is a character offset, not a field.
            field = "body"
        if field not in fields:
            fields.append(field)
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        if error.get("type") == "string_pattern_mismatch" and field.endswith("Id"):
            message = "must be a 24-character lowercase hexadecimal id"
        problems.append(f"{field}: {message}")
    return ValidationFailed("; ".join(problems) or "Invalid request", details=", ".join(fields))


def _allowed_methods(request: Request, *, slash: bool = True) -> str:
    """Every method the OpenAPI document lists for this path (without its trailing slash when
    `slash` is False).

    Starlette's own 405 names only the first matching route's methods (PUT, not GET too, on a
    campaign), which misleads callers and contradicts the published spec.
    """
    app: FastAPI = request.app
    methods: set[str] = set()
    path = request.url.path if slash else request.url.path.rstrip("/")
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods |= {method.upper() for method in operations}
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    """Routes every error, FastAPI's own included, through the envelope."""

    async def on_api_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        response = render(error)
        # The budget was spent on this request too: say so on its error, as on its success.
        for name, value in getattr(request.state, "rate_limit_headers", {}).items():
            response.headers.setdefault(name, value)
        return response

    async def on_validation_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return render(validation_failed(error.errors()))

    async def on_http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        mapped: dict[int, type[ApiError]] = {
            400: ValidationFailed,
            401: Unauthorized,
            403: Forbidden,
            404: NotFound,
            405: MethodNotAllowed,
            409: Conflict,
            413: PayloadTooLarge,
            429: RateLimited,
        }
        kind = mapped.get(error.status_code)
        if kind is None:
            generic = ApiError(str(error.detail), code=f"HTTP_{error.status_code}")
            generic.status_code = error.status_code
            return render(generic)
        message = str(error.detail)
        if kind is NotFound and error.detail == "Not Found":
            message = "No such route"
            if request.url.path.endswith("/") and _allowed_methods(request, slash=False):
                # No redirect (a 307 would skip the envelope and authentication): say it.
                message = "No such route: remove the trailing slash"
        headers = dict(error.headers or {})
        if kind is MethodNotAllowed:
            message = "Method not allowed on this route"
            headers["Allow"] = _allowed_methods(request)
        return render(kind(message, headers=headers))

    async def on_store_error(_: Request, error: Exception) -> JSONResponse:
        if not store_unreachable(error):
            # Not an outage: let the trace middleware log it and answer the 500 envelope.
            raise error
        logging.getLogger("campaign_engine.api").warning("store unavailable: %s", error)
        return render(
            StoreUnavailable(
                "The store did not answer; retry later.",
                details=type(error).__name__,
            )
        )

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(SQLAlchemyError, on_store_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
