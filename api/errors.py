"""The API's errors: one hierarchy of named classes, each carrying its status and `error.code`.

Raise the class that names what went wrong (`WorkflowInstanceNotFound()`, `NoPendingApproval
(refusal)`); `api/error_handlers.py` renders every one as the reference page's envelope
(`{success: false, data: null, error: {code, message, details}, traceId}`), and
`api/openapi.py` documents them. Error codes are spelled here and nowhere else. The statuses are
those of the approve endpoint's reference page (400, 401, 403, 404, 409, 429, 500, 502), plus
RFC 9110's 405, 413, 415 and 503 where a route can answer them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from workflows.types import ApprovalRefusal

MAY_HAVE_BEEN_RECORDED = (
    "The approval may have been recorded; check the current resource state before retrying."
)
"""The reference page's advice for an approval whose outcome is unknown (502)."""


class ApiError(Exception):
    """Base of every error the API answers; renders as the envelope with `status_code` and `code`.

    `message` is for people, `details` for programs (a field name, a refusal reason), `headers`
    go on the response (`Retry-After`, `WWW-Authenticate`, `Allow`).
    """

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    default_message: ClassVar[str] = (
        "An unexpected error occurred; the trace id finds it in the logs."
    )

    def __init__(
        self,
        message: str | None = None,
        *,
        details: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)
        self.details = details
        self.headers = dict(headers or {})


class InternalError(ApiError):
    """500: a bug of ours; the message never says more than the trace id can find in the logs."""


# --- 400 ----------------------------------------------------------------------------------------


class ValidationFailed(ApiError):
    """400: the request does not match the operation's schema or rules; `details` names the
    offending field(s), comma-separated (`steps.0.body`, `workflowInstanceId`)."""

    status_code = 400
    code = "VALIDATION_ERROR"
    default_message = "Invalid request"


class RenderBudgetExceeded(ValidationFailed):
    """400: a campaign's templates together take longer to render than the render budget
    (`CAMPAIGN_ENGINE_RENDER_BUDGET_SECONDS`), each within its own; `details` names the field
    that holds them (`steps`), the message the budget and the setting."""

    def __init__(self, spent_seconds: float, budget_seconds: float) -> None:
        super().__init__(
            f"steps: the templates take more than the render budget of {budget_seconds:g} s "
            f"(CPU) together ({spent_seconds:.2f} s spent when the check stopped; "
            "CAMPAIGN_ENGINE_RENDER_BUDGET_SECONDS). Simplify or remove templates.",
            details="steps",
        )


class PayloadDecodeFailed(ApiError):
    """400: a payload sent to the codec endpoint does not decrypt here — unknown key id or a tag
    that does not verify (`details`: the key id). 400 is the codec protocol's decoder error."""

    status_code = 400
    code = "PAYLOAD_DECODE_FAILED"

    def __init__(self, message: str, key_id: str) -> None:
        super().__init__(message, details=key_id)


class InboundMessageRefused(ApiError):
    """400: the body of `POST .../inbound-messages` is not a message the pipeline reads (empty,
    not RFC 5322, nested too deep, …); `details` is the `inbound.parsing.RefusalReason`."""

    status_code = 400
    code = "INBOUND_MESSAGE_REFUSED"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, details=reason)


# --- 401, 403 -----------------------------------------------------------------------------------


class Unauthorized(ApiError):
    """401: no key, a malformed, unknown, wrong or revoked key; asks for a Bearer key."""

    status_code = 401
    code = "UNAUTHORIZED"
    default_message = "Invalid or revoked API key"

    def __init__(
        self, message: str | None = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer", **(headers or {})})


class Forbidden(ApiError):
    """403: the key is valid but may not do this."""

    status_code = 403
    code = "FORBIDDEN"
    default_message = "Forbidden"


class MissingPermission(Forbidden):
    """403: the key lacks the operation's permission (`details`: the permission)."""

    code = "MISSING_PERMISSION"

    def __init__(self, permission: str) -> None:
        super().__init__(f"API key lacks the {permission} permission", details=permission)


class PayloadScopeDenied(Forbidden):
    """403: the codec endpoint refuses a payload sealed for an account group the caller's key
    does not hold, or of the deployment scope for a key not of every account group (`details`:
    the payload's account group id, or `deployment`). Nothing of the request is answered."""

    code = "PAYLOAD_SCOPE_DENIED"

    def __init__(self, message: str, scope: str) -> None:
        super().__init__(message, details=scope)


class AccountGroupAccessDenied(Forbidden):
    """403: the key does not grant the account group of the path (`details`: its id)."""

    code = "ACCOUNT_GROUP_ACCESS_DENIED"

    def __init__(self, account_group_id: str) -> None:
        super().__init__(
            f"API key has no access to account group {account_group_id}",
            details=account_group_id,
        )


class CorsOriginNotAllowed(Forbidden):
    """403: a CORS preflight to the codec endpoints from an origin not in
    `codec_cors_origins` (`details`: the origin)."""

    code = "CORS_ORIGIN_NOT_ALLOWED"

    def __init__(self, origin: str) -> None:
        super().__init__(
            f"Origin {origin} may not call the codec endpoints: add it to "
            "CAMPAIGN_ENGINE_CODEC_CORS_ORIGINS",
            details=origin,
        )


# --- 404, 405 -----------------------------------------------------------------------------------


class NotFound(ApiError):
    """404: no such route."""

    status_code = 404
    code = "NOT_FOUND"
    default_message = "No such route"


class CampaignNotFound(NotFound):
    """404: no campaign with this id in this account group."""

    code = "CAMPAIGN_NOT_FOUND"
    default_message = "No such campaign"


class WorkflowInstanceNotFound(NotFound):
    """404: no instance with this id in this account group and campaign (the workflow id is
    derived from all three, so another group's instance is simply not found).

    When the caller's own account group tells what was probably meant, the message says what
    to use instead and `details` names the mix-up (`HINTS`); otherwise `details` is null.
    """

    code = "WORKFLOW_INSTANCE_NOT_FOUND"
    default_message = "No such workflow instance"

    LEAD_ID_NOT_INSTANCE_ID: ClassVar[str] = "LEAD_ID_NOT_INSTANCE_ID"
    INSTANCE_OF_ANOTHER_CAMPAIGN: ClassVar[str] = "INSTANCE_OF_ANOTHER_CAMPAIGN"
    LEAD_OF_ANOTHER_CAMPAIGN: ClassVar[str] = "LEAD_OF_ANOTHER_CAMPAIGN"
    NO_SUCH_CAMPAIGN: ClassVar[str] = "NO_SUCH_CAMPAIGN"
    HINTS: ClassVar[dict[str, str]] = {
        LEAD_ID_NOT_INSTANCE_ID: "the id is a lead's, enrolled in this campaign: the message "
        "gives the lead's instance id",
        INSTANCE_OF_ANOTHER_CAMPAIGN: "the id is an instance of another campaign of the same "
        "account group: the message gives that campaign's path",
        LEAD_OF_ANOTHER_CAMPAIGN: "the id is a lead's, enrolled in another campaign of the "
        "same account group: the message gives that campaign and the lead's instance id",
        NO_SUCH_CAMPAIGN: "the account group has no campaign with the path's campaign id",
    }
    """`details` of a hinted 404, and what each means (`api.instances.WorkflowInstances.
    why_not_found`); looked up in the caller's account group only."""


class MethodNotAllowed(ApiError):
    """405: the path exists, the method does not; the `Allow` header lists what does."""

    status_code = 405
    code = "METHOD_NOT_ALLOWED"
    default_message = "Method not allowed on this route"


# --- 409 ----------------------------------------------------------------------------------------


class Conflict(ApiError):
    """409: the resource is in a state that prevents this operation."""

    status_code = 409
    code = "CONFLICT"
    default_message = "Conflict"


class LeadAlreadyEnrolled(Conflict):
    """409: the lead has an instance in this campaign already (`details`: its id)."""

    code = "LEAD_ALREADY_ENROLLED"

    def __init__(self, workflow_instance_id: str) -> None:
        super().__init__(
            "This lead is already enrolled in this campaign", details=workflow_instance_id
        )


class LeadSuppressed(Conflict):
    """409: the lead is on the account group's suppression list, so no campaign of the group may
    enrol it again; `details` is the suppression's source (`one-click`, `api`, `mailto`,
    `bounce`, `complaint`) and the message says what it means."""

    code = "LEAD_SUPPRESSED"

    REASONS: ClassVar[dict[str, str]] = {
        "one-click": "unsubscribed through the link in a message (RFC 8058 one-click)",
        "mailto": "unsubscribed by mail to the List-Unsubscribe address",
        "api": "was added to the suppression list through the API",
        "bounce": "hard-bounced: its address does not accept mail",
        "complaint": "marked a message as spam (a feedback-loop complaint)",
    }

    def __init__(self, source: str | None = None) -> None:
        reason = self.REASONS.get(source or "", "is on the suppression list")
        super().__init__(
            f"This lead {reason}: it is on the account group's suppression list and cannot be "
            "enrolled in any of its campaigns (an operator lifts a mistaken one with "
            "`campaign-engine suppressions lift`)",
            details=source,
        )


class NoPendingApproval(Conflict):
    """409: the approval changed nothing; `details` is the workflow's own `ApprovalRefusal`."""

    code = "NO_PENDING_APPROVAL"

    def __init__(self, refusal: ApprovalRefusal, message: str | None = None) -> None:
        super().__init__(
            message or "No approval is pending on this workflow instance", details=refusal.value
        )
        self.refusal = refusal


# --- 413, 415, 429 ------------------------------------------------------------------------------


class PayloadTooLarge(ApiError):
    """413: the request body is larger than any valid request (RFC 9110 §15.5.14)."""

    status_code = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "Request body too large"


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


class UnsupportedMediaType(ApiError):
    """415: a request body declared as anything but JSON (RFC 9110 §15.5.16); `details` names
    the accepted type."""

    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class RateLimited(ApiError):
    """429: the key's request budget is spent; `Retry-After` and `X-RateLimit-*` say until when."""

    status_code = 429
    code = "RATE_LIMITED"


class AuthenticationThrottled(RateLimited):
    """429: too many failed authentications from the client's address (`api.ratelimit.
    AuthFailureThrottle`); `Retry-After` says until when, `details` is `FAILED_AUTHENTICATIONS`.
    The code stays `RATE_LIMITED`: a caller's handling of a 429 (wait `Retry-After`) is the same.
    """

    def __init__(self, message: str, *, headers: Mapping[str, str]) -> None:
        super().__init__(message, details="FAILED_AUTHENTICATIONS", headers=headers)


# --- 502, 503 -----------------------------------------------------------------------------------


class UpstreamError(ApiError):
    """502: a service we depend on did not answer (the reference page's "Upstream service
    error")."""

    status_code = 502
    code = "UPSTREAM_ERROR"


class TemporalUnavailable(UpstreamError):
    """502: Temporal unreachable, or no worker answered in time; `details` is the gRPC status or
    the failure's kind. For an approval the message says it may have been recorded."""

    code = "TEMPORAL_UNAVAILABLE"


class ApprovalUnconfirmed(UpstreamError):
    """502: the approve signal was accepted but its outcome is not on the instance (it aged out
    of the kept outcomes under a flood of approvals)."""

    code = "APPROVAL_UNCONFIRMED"
    default_message = (
        f"The approval's outcome was not found on the instance. {MAY_HAVE_BEEN_RECORDED}"
    )


class StoreUnavailable(UpstreamError):
    """502: the key and campaign store cannot be reached: an upstream failure like Temporal's.

    502, not 503 or 500: the approve endpoint's reference page lists 502 for a service it depends
    on being down, every operation already declares it, and 500 stays for our own bugs.
    """

    code = "STORE_UNAVAILABLE"
    default_message = "The store did not answer; retry later."


class ServiceUnavailable(ApiError):
    """503: this process cannot serve yet."""

    status_code = 503
    code = "SERVICE_UNAVAILABLE"


class NotReady(ServiceUnavailable):
    """503 from `/readyz`: Temporal or the store is down; `details` names which."""

    code = "NOT_READY"

    def __init__(self, down: list[str]) -> None:
        super().__init__(f"Not ready: {' and '.join(down)} unreachable", details=", ".join(down))


class RenderQueueFull(ServiceUnavailable):
    """503: the templates of a PUT would not fit in the render queue: the account group's share
    (`details`: `account group`) or the process's (`process`) is taken by templates waiting
    already; nothing was checked or stored. `Retry-After` (seconds) estimates when it drains."""

    code = "RENDER_QUEUE_FULL"

    def __init__(self, reason: str, *, scope: str, retry_after_seconds: int) -> None:
        super().__init__(
            f"Too many templates are waiting to render: {reason}. Retry after "
            f"{retry_after_seconds} s.",
            details=scope,
            headers={"Retry-After": str(retry_after_seconds)},
        )


def http_error(
    status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> ApiError:
    """An HTTP error Starlette raised with a status no class above names, as `HTTP_<status>`."""
    kind: type[ApiError] = type(
        f"Http{status_code}",
        (ApiError,),
        {"status_code": status_code, "code": f"HTTP_{status_code}", "__doc__": message},
    )
    error: ApiError = kind(message, headers=headers)
    return error


class IdentityProviderUnavailable(UpstreamError):
    """502: the keys (JWKS) of the identity provider that signs forwarded access tokens could not
    be fetched; the token may be fine."""

    code = "IDENTITY_PROVIDER_UNAVAILABLE"
    default_message = "The identity provider's keys could not be fetched; retry later."
