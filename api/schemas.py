"""Request and response bodies, in the reference page's camelCase and envelope."""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, Self

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from activities import templates
from api.trace_id import current_trace_id
from campaign_engine.addresses import InvalidAddress, parse_address, text_problem
from campaign_engine.ids import OBJECT_ID_PATTERN
from workflows import types as workflow

if TYPE_CHECKING:
    from api.instances import DeliveryProgress

STEP_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_STEPS = 50
# A template and what it renders are held to the same lengths (activities/templates.py).
MAX_SUBJECT_CHARS = templates.MAX_SUBJECT_CHARS
MAX_BODY_CHARS = templates.MAX_BODY_CHARS
# The largest valid campaign (every step at its longest, four bytes a character) plus room for
# the rest; larger request bodies are refused with 413 before they are read into memory.
MAX_REQUEST_BODY_BYTES = MAX_STEPS * 4 * (MAX_SUBJECT_CHARS + MAX_BODY_CHARS) + 64 * 1024
MAX_DELAY = timedelta(days=365)
MAX_EMAIL_CHARS = 254  # RFC 5321 §4.5.3.1.3: a path is at most 256 octets, brackets included
NAME_DESCRIPTION = (
    "Any text without control characters (CR, LF, TAB, NUL, ...) or line separators (U+2028, "
    "U+2029); `=?` and quotes are kept as text and encoded where they enter a header."
)


def _not_a_boolean(duration: object) -> object:
    # Pydantic's lax mode reads `false` as 0 seconds; the schema says string or number.
    if isinstance(duration, bool):
        raise ValueError("must be an ISO-8601 duration or a number of seconds, not a boolean")
    return duration


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# --- envelope -----------------------------------------------------------------------------------


class ErrorBody(ApiModel):
    code: str = Field(examples=["NO_PENDING_APPROVAL"])
    message: str
    details: str | None = None


class ValidationErrorBody(ErrorBody):
    code: Literal["VALIDATION_ERROR"] = "VALIDATION_ERROR"
    details: str | None = Field(
        default=None, description="The offending field(s), comma-separated."
    )


class ErrorResponse(ApiModel):
    success: Literal[False] = False
    data: None = None
    error: ErrorBody
    trace_id: str = Field(default_factory=current_trace_id)


class ValidationErrorResponse(ErrorResponse):
    error: ValidationErrorBody


class SuccessResponse(ApiModel):
    success: Literal[True] = True
    data: object = None
    error: None = None
    trace_id: str = Field(default_factory=current_trace_id)


# --- campaigns ----------------------------------------------------------------------------------


class CampaignStepBody(ApiModel):
    """A step as PUT and as read back. Its templates are checked by rendering them once, by the
    PUT route off the event loop (`api.routes.campaigns`); this model only checks their shape,
    so reading a stored campaign renders nothing."""

    id: str = Field(pattern=STEP_ID_PATTERN, description="Unique within the campaign.")
    channel: Literal["email"] = "email"
    subject: str = Field(
        min_length=1, max_length=MAX_SUBJECT_CHARS, description="Template over `lead`."
    )
    body: str = Field(min_length=1, max_length=MAX_BODY_CHARS, description="Template over `lead`.")
    # Strict: `"yes"` or `1` is not a boolean in the published schema, so it is a 400 here too.
    requires_approval: StrictBool = True
    delay: timedelta = Field(
        default=timedelta(0),
        description="Wait after this step's delivery: ISO-8601 duration or seconds.",
    )

    @field_validator("delay", mode="before")
    @classmethod
    def _delay_not_a_boolean(cls, delay: object) -> object:
        return _not_a_boolean(delay)

    @field_validator("delay")
    @classmethod
    def _delay_in_range(cls, delay: timedelta) -> timedelta:
        if not timedelta(0) <= delay <= MAX_DELAY:
            raise ValueError("must be between 0 seconds and 365 days")
        return delay


class Webhook(ApiModel):
    url: AnyHttpUrl = Field(description="Receives a signed POST when a gate opens.")


class WebhookBody(Webhook):
    secret: SecretStr = Field(
        min_length=16,
        max_length=200,
        description="Signs each notification (HMAC-SHA256); write-only, never returned.",
    )


class CampaignBody(ApiModel):
    name: str = Field(
        min_length=1,
        max_length=200,
        description="Shown to operators in the Temporal UI: one line of visible text.",
    )
    steps: list[CampaignStepBody] = Field(min_length=1, max_length=MAX_STEPS)
    approval_timeout: timedelta | None = Field(
        default=None, description="How long a gate waits for approval: ISO-8601 or seconds."
    )
    webhook: WebhookBody | None = None

    @field_validator("name")
    @classmethod
    def _name_is_one_visible_line(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("must not be blank")
        if any(unicodedata.category(char) == "Cc" for char in name):
            raise ValueError("must not contain control characters (line breaks, tabs, NUL, …)")
        return name

    @field_validator("approval_timeout", mode="before")
    @classmethod
    def _timeout_not_a_boolean(cls, timeout: object) -> object:
        return _not_a_boolean(timeout)

    @field_validator("approval_timeout")
    @classmethod
    def _timeout_in_range(cls, timeout: timedelta | None) -> timedelta | None:
        if timeout is not None and not timedelta(0) < timeout <= MAX_DELAY:
            raise ValueError("must be more than 0 seconds and at most 365 days")
        return timeout

    @model_validator(mode="after")
    def _unique_step_ids(self) -> Self:
        ids = [step.id for step in self.steps]
        if len(set(ids)) != len(ids):
            raise ValueError("step ids must be unique within the campaign")
        return self


class Campaign(CampaignBody):
    webhook: Webhook | None = None  # type: ignore[assignment]
    account_group_id: str
    campaign_id: str
    created_at: datetime
    updated_at: datetime


class CampaignSuccessResponse(SuccessResponse):
    data: Campaign


# --- workflow instances -------------------------------------------------------------------------


class LeadBody(ApiModel):
    """A lead as enrolled. Addresses and names are checked here, so nothing that reaches a
    header later can carry structure (see `campaign_engine/addresses.py` for the rules)."""

    id: str = Field(pattern=OBJECT_ID_PATTERN)
    email: str = Field(
        max_length=MAX_EMAIL_CHARS,
        json_schema_extra={"format": "email"},
        description="An address as email-validator accepts it: ASCII or UTF-8 local part "
        "(sent with SMTPUTF8), internationalised domains (sent as IDNA A-labels); no quoted "
        "local part, IP literal, display name, control character or `=?`. Stored normalised "
        "(NFC local part, lower-case Unicode domain).",
    )
    first_name: str = Field(default="", max_length=200, description=NAME_DESCRIPTION)
    last_name: str = Field(default="", max_length=200, description=NAME_DESCRIPTION)
    company: str = Field(default="", max_length=200, description=NAME_DESCRIPTION)

    @field_validator("email")
    @classmethod
    def _an_address(cls, email: str) -> str:
        try:
            return parse_address(email).normalized
        except InvalidAddress as error:
            raise ValueError(f"not an address we can send to: {error}") from error

    @field_validator("first_name", "last_name", "company")
    @classmethod
    def _plain_text(cls, text: str) -> str:
        problem = text_problem(text)
        if problem:
            raise ValueError(problem)
        return text


class EnrolmentBody(ApiModel):
    lead: LeadBody


class LeadStatus(ApiModel):
    lead_id: str
    workflow_status: workflow.WorkflowStatus
    workflow_instance_id: str
    latest_step: str | None
    workflow_stop_reason: workflow.StopReason | None
    has_pending_approval: bool

    @classmethod
    def of(cls, status: workflow.LeadStatus) -> LeadStatus:
        return cls(
            lead_id=status.lead_id,
            workflow_status=status.workflow_status,
            workflow_instance_id=status.workflow_instance_id,
            latest_step=status.latest_step,
            workflow_stop_reason=status.workflow_stop_reason,
            has_pending_approval=status.has_pending_approval,
        )


class PendingContent(ApiModel):
    step_id: str
    subject: str
    body: str

    @classmethod
    def of(cls, content: workflow.DraftedContent | None) -> PendingContent | None:
        if content is None:
            return None
        return cls(step_id=content.step_id, subject=content.subject, body=content.body)


class Enrolment(ApiModel):
    workflow_instance_id: str
    lead_status: LeadStatus


class EnrolmentSuccessResponse(SuccessResponse):
    data: Enrolment


class Delivery(ApiModel):
    """The delivery of the current step while it is under way, or why it failed."""

    step_id: str | None
    state: Literal["sending", "retrying", "failed"] = Field(
        description="`sending`: an attempt is running or about to; `retrying`: an attempt "
        "failed and the next waits its backoff; `failed`: given up (`DELIVERY_FAILED`)."
    )
    attempt: int | None = Field(
        description="The attempt running or due next (1 = the first); for `failed`, the last."
    )
    maximum_attempts: int | None
    last_error: str | None = Field(description="What the previous (or last) attempt reported.")
    next_attempt_at: datetime | None = Field(description="When a `retrying` delivery tries again.")

    @classmethod
    def of(cls, progress: DeliveryProgress | None) -> Delivery | None:
        if progress is None:
            return None
        return cls(
            step_id=progress.step_id,
            state=progress.state,
            attempt=progress.attempt,
            maximum_attempts=progress.maximum_attempts,
            last_error=progress.last_error,
            next_attempt_at=progress.next_attempt_at,
        )


class WorkflowInstance(ApiModel):
    lead_status: LeadStatus
    pending_content: PendingContent | None
    delivery: Delivery | None = Field(
        default=None,
        description="Present while a delivery is under way or after it failed: attempts, "
        "last error, next attempt.",
    )


class WorkflowInstanceSuccessResponse(SuccessResponse):
    data: WorkflowInstance


class CampaignApprovalResult(ApiModel):
    action: Literal["approved"] = "approved"
    workflow_instance_id: str
    lead_status: LeadStatus


class CampaignApprovalResultSuccessResponse(SuccessResponse):
    data: CampaignApprovalResult


# --- health -------------------------------------------------------------------------------------


class Health(ApiModel):
    status: Literal["ok"] = "ok"


class HealthSuccessResponse(SuccessResponse):
    data: Health


class Readiness(Health):
    checks: dict[str, Literal["ok"]] = Field(
        description="Each dependency checked: `temporal`, `store`."
    )


class ReadinessSuccessResponse(SuccessResponse):
    data: Readiness
