"""Request and response bodies, in the reference page's camelCase and envelope."""

from __future__ import annotations

import unicodedata
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from activities import templates
from api.durations import STORED_CONTEXT, Duration, validate_duration
from api.errors import ValidationFailed
from api.trace_id import current_trace_id
from campaign_engine import campaign_stats as stats
from campaign_engine.addresses import InvalidAddress, parse_address, text_problem
from campaign_engine.ids import OBJECT_ID_PATTERN
from campaign_engine.send_windows import InvalidWindow, parse_zone
from workflows import state as workflow_state
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
MIN_OUT_OF_OFFICE_HOLD = timedelta(hours=1)
MAX_OUT_OF_OFFICE_HOLD = workflow_state.MAX_OUT_OF_OFFICE_HOLD  # 60 days
MAX_REMINDERS = 10
MAX_EMAIL_CHARS = 254  # RFC 5321 §4.5.3.1.3: a path is at most 256 octets, brackets included
EXAMPLE_ID = "507f1f77bcf86cd799439011"
"""The reference page's example id: account groups, campaigns, leads and instances alike."""
EXAMPLE_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
"""A W3C trace id, as the envelope's `traceId` carries it."""
EXAMPLE_GATE_ID = "3f2b8c1e9a4d4f6b8e2c7a1d5b9e0f42"
"""A gate id as the workflow makes them (a UUID's 32 hex digits)."""
EXAMPLE_TIME = "2026-12-01T14:00:00Z"
"""A UTC time as the API writes them."""
EXAMPLE_KEY_ID = "9f86d081884c"
"""An API key id, the middle part of `ce_<key id>_<secret>`."""
EXAMPLE_PAGE_TOKEN = (
    "eyJxIjoiOGUzNWMyY2QzYmY2NjQxYmRiMGUyMDUwYjc2OTMyY2IiLCJ0IjoiMjAyNi0xMi0wMVQxNDowMDowMCswMDow"
    "MCIsInciOiI1MDdmMWY3N2JjZjg2Y2Q3OTk0MzkwMTEifQ.x1gLd1K1U2MFHuIjJFgapvGhICuTz5tjskRKuLga4Yw"
)
"""A `pageToken` of the shape the review queue issues (signed under another key)."""

NAME_DESCRIPTION = (
    "Any text without control characters (CR, LF, TAB, NUL, ...) or line separators (U+2028, "
    "U+2029); `=?` and quotes are kept as text and encoded where they enter a header."
)


def _not_a_boolean(duration: object) -> object:
    # Pydantic's lax mode reads `false` as 0 seconds; the schema says string or number.
    if isinstance(duration, bool):
        raise ValueError("must be an ISO-8601 duration or a number of seconds, not a boolean")
    return duration


def _canonical_zone(time_zone: str | None, field: str, info: ValidationInfo) -> str | None:
    """`time_zone` under its canonical IANA name (`campaign_engine.zones`: "US/Central" →
    "America/Chicago"), checked loadable here; None stays None. `InvalidWindow` is a
    ValueError: pydantic reports it under the field. Read from the store (`STORED_CONTEXT`), a
    zone this process cannot load is kept as stored, for its reader to report, not a 500."""
    if time_zone is None:
        return None
    try:
        return parse_zone(time_zone, field).key
    except InvalidWindow:
        if isinstance(info.context, dict) and info.context.get(STORED_CONTEXT):
            return time_zone
        raise


class ApiModel(BaseModel):
    """Base of every body: camelCase JSON names (the snake_case field names are accepted
    too), unknown fields refused (a 400)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# --- envelope -----------------------------------------------------------------------------------

TRACE_ID_DESCRIPTION = (
    "The request's trace id (32 hex digits), also in the `X-Trace-Id` header and on the "
    "request's log line: quote it when reporting a problem."
)


class ErrorBody(ApiModel):
    """The `error` of a failed response: `code` is stable, for programs (e.g.
    `NO_PENDING_APPROVAL`); `message` is for people; `details`, when set, is for programs too
    (a field, a permission, a refusal reason such as `ALREADY_APPROVED`)."""

    code: str = Field(
        description="Stable, for programs: what went wrong (each operation's responses list "
        "the codes it answers).",
        examples=["NO_PENDING_APPROVAL"],
    )
    message: str = Field(
        description="For people: what went wrong and, where there is one, the fix.",
        examples=["No approval is pending on this workflow instance"],
    )
    details: str | None = Field(
        default=None,
        description="For programs, when set: the field, permission, refusal reason or id the "
        "error is about.",
        examples=["ALREADY_APPROVED"],
    )


class ValidationErrorBody(ErrorBody):
    """The `error` of a 400: always `VALIDATION_ERROR`, `details` naming the offending field(s)."""

    code: Literal["VALIDATION_ERROR"] = Field(
        default="VALIDATION_ERROR",
        description="Always this code for a 400 of the schema's or the operation's rules.",
        examples=[ValidationFailed.code],
    )
    message: str = Field(
        description="For people: each offending field with what is wrong, `; `-separated.",
        examples=["lead.email: not an address we can send to: the domain name is invalid"],
    )
    details: str | None = Field(
        default=None,
        description="The offending field(s), comma-separated.",
        examples=["lead.email"],
    )


class ErrorResponse(ApiModel):
    """The envelope of every failed response, the framework's own 404 and 405 included
    (reference page schema `ErrorResponse`); `traceId` is also in the `X-Trace-Id` header and
    on the request's log line."""

    success: Literal[False] = Field(
        default=False, description="Always false on a failed response.", examples=[False]
    )
    data: None = Field(
        default=None, description="Always null on a failed response.", examples=[None]
    )
    error: ErrorBody = Field(description="What went wrong.")
    trace_id: str = Field(
        default_factory=current_trace_id,
        description=TRACE_ID_DESCRIPTION,
        examples=[EXAMPLE_TRACE_ID],
    )


class ValidationErrorResponse(ErrorResponse):
    """The envelope of a 400 (reference page schema `ValidationErrorResponse`)."""

    error: ValidationErrorBody = Field(description="Which field is wrong, and how.")


class SuccessResponse(ApiModel):
    """The envelope of every successful response: the operation's `data`, `error` null,
    `traceId` as in the `X-Trace-Id` header. Each operation's subclass says what `data` holds."""

    success: Literal[True] = Field(
        default=True, description="Always true on a successful response.", examples=[True]
    )
    data: object = Field(default=None, description="The operation's answer.")
    error: None = Field(
        default=None, description="Always null on a successful response.", examples=[None]
    )
    trace_id: str = Field(
        default_factory=current_trace_id,
        description=TRACE_ID_DESCRIPTION,
        examples=[EXAMPLE_TRACE_ID],
    )


# --- campaigns ----------------------------------------------------------------------------------


# The templates are rendered once by the PUT route, off the event loop (api.routes.campaigns);
# this model only checks their shape, so reading a stored campaign renders nothing.
class CampaignStepBody(ApiModel):
    """One message of a campaign, as PUT and as read back: its templates, whether it waits for
    approval, and how long after the previous one it is sent. The templates are checked by
    rendering them once for a sample lead when the campaign is PUT."""

    id: str = Field(
        pattern=STEP_ID_PATTERN,
        description="The step's id: letters, digits, `_` and `-`, unique within the campaign.",
        examples=["intro"],
    )
    channel: Literal["email"] = Field(
        default="email", description="How the step is sent: e-mail only.", examples=["email"]
    )
    # Before `subject`, whose check reads it.
    thread: StrictBool = Field(
        default=False,
        description="Send this step as a reply in the thread of the latest earlier step that "
        "is not threaded (the first step, unless another starts a new thread): `Subject: Re: "
        "<that step's subject as rendered for the lead>` (one `Re: ` only), `In-Reply-To` the "
        "previous step's Message-ID, `References` the thread's Message-IDs in order (RFC 5322 "
        "§3.6.4, §3.6.5). The gate shows, and the reviewer approves, that subject. A threaded "
        "step has no `subject`; the first step cannot be threaded.",
        examples=[False],
    )
    subject: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SUBJECT_CHARS,
        validate_default=True,
        description="Template (Jinja2, sandboxed) over `lead`: `{{ lead.firstName }}`, "
        "`lead.lastName`, `lead.company`, `lead.email`, `lead.id`, and `unsubscribe_url`; "
        "required, except on a threaded step, which has none.",
        examples=["Quick question, {{ lead.firstName }}"],
    )
    body: str = Field(
        min_length=1,
        max_length=MAX_BODY_CHARS,
        description="Template over `lead`, as `subject`: the message's plain-text body.",
        examples=["Hi {{ lead.firstName }},\n\nDoes {{ lead.company }} still hire in Berlin?"],
    )
    # Strict: `"yes"` or `1` is not a boolean in the published schema, so it is a 400 here too.
    requires_approval: StrictBool = Field(
        default=True,
        description="Hold the drafted message at a gate until it is approved (`POST …/approve`); "
        "false sends it as drafted.",
        examples=[True],
    )
    delay: Duration = Field(
        default=timedelta(0),
        description="Wait after this step's delivery: ISO 8601 duration (`P2D`, `PT12H`) or "
        "seconds; months and years are refused (not a fixed length).",
        examples=["P2D"],
    )
    business_days: int | None = Field(
        default=None,
        ge=1,
        le=260,
        description="Instead of `delay`: wait this many sending days (the campaign's "
        "`sendWindow` days less its holidays; Monday to Friday without one), to the same local "
        "time.",
        examples=[None, 3],
    )

    @field_validator("subject")
    @classmethod
    def _subject_unless_threaded(cls, subject: str | None, info: ValidationInfo) -> str | None:
        threaded = info.data.get("thread") is True
        if threaded and subject is not None:
            raise ValueError(
                "a threaded step is sent with Re: and the subject of its thread's first step: "
                "leave subject out (or set thread to false)"
            )
        if not threaded and subject is None:
            raise ValueError("required (only a threaded step has no subject)")
        return subject

    @field_validator("business_days", mode="before")
    @classmethod
    def _business_days_an_integer(cls, days: object) -> object:
        if isinstance(days, bool) or (days is not None and not isinstance(days, int)):
            raise ValueError("must be a whole number of days")
        return days

    @model_validator(mode="after")
    def _one_kind_of_delay(self) -> Self:
        if self.business_days is not None and self.delay > timedelta(0):
            raise ValueError("give either delay or businessDays, not both")
        return self

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
    """A campaign's pending-approval webhook as read back: its URL only, never its secret."""

    url: AnyHttpUrl = Field(
        description="Receives a signed POST when a gate opens (and each reminder).",
        examples=["https://crm.example.com/hooks/campaign-engine"],
    )


class WebhookBody(Webhook):
    """A campaign's pending-approval webhook as PUT. Each notification is a JSON POST signed
    with the secret as Standard Webhooks signs: `webhook-id` (the event id), `webhook-timestamp`
    (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 over "id.timestamp.body">`
    (`campaign_engine/webhook_signatures.py` verifies them too). The secret is stored sealed,
    never returned."""

    secret: SecretStr = Field(
        min_length=16,
        max_length=200,
        description="Signs each notification (HMAC-SHA256); write-only, never returned.",
        examples=["whsec_6f0c1d7e2b9a4c3f8e5d"],
    )


class SendWindowBody(ApiModel):
    """When a campaign's messages may be handed over, in the lead's time zone (its `timeZone`)
    or the window's. Checked whole at PUT: 400 naming the field for an unknown zone, day or
    holiday calendar, a time not `HH:MM`, or an `end` not after `start`. Daylight saving time: a
    `start` in a skipped hour opens at the transition; in a repeated hour, at its first
    occurrence."""

    time_zone: str | None = Field(
        default=None,
        max_length=64,
        description="IANA time zone, e.g. `America/New_York` (default UTC); a lead's own "
        "`timeZone` wins.",
        examples=["America/New_York"],
    )
    days: list[str] = Field(
        min_length=1,
        max_length=7,
        description="Sending days: `mon` `tue` `wed` `thu` `fri` `sat` `sun`.",
        examples=[["mon", "tue", "wed", "thu", "fri"]],
    )
    # Longer than "HH:MM" on purpose: "9:30 AM" or "17:00:00" reach the window's check,
    # which says the likely "HH:MM" (`campaign_engine.send_windows`).
    start: str = Field(
        max_length=16, description="Local opening time, `HH:MM` (24 h).", examples=["09:00"]
    )
    end: str = Field(
        max_length=16,
        description="Local closing time, `HH:MM`, after `start`; `24:00` for midnight.",
        examples=["17:30"],
    )
    holidays: str | None = Field(
        default=None,
        max_length=16,
        description="Country (ISO 3166-1, optionally `-` subdivision: `US`, `US-NY`, `DE`) whose "
        "public holidays are not sending days (the `holidays` package).",
        examples=["US-NY"],
    )

    @field_validator("time_zone")
    @classmethod
    def _canonical_zone(cls, time_zone: str | None, info: ValidationInfo) -> str | None:
        return _canonical_zone(time_zone, "sendWindow.timeZone", info)


class CampaignBody(ApiModel):
    """The body of `PUT …/campaigns/{campaignId}`: a campaign's definition, created or replaced.

    Checked whole before anything is stored: a refused PUT (400, or 413 `CAMPAIGN_TOO_LARGE`)
    leaves the stored version as it was. Without `approvalTimeout`, a gate waits until it is
    approved or the instance is stopped.
    """

    name: str = Field(
        min_length=1,
        max_length=200,
        description="Shown to operators in the Temporal UI: one line of visible text.",
        examples=["Berlin hiring managers, Q1"],
    )
    steps: list[CampaignStepBody] = Field(
        min_length=1,
        max_length=MAX_STEPS,
        description=f"The messages, in the order they are sent (1 to {MAX_STEPS}).",
    )
    approval_timeout: Duration | None = Field(
        default=None,
        description="How long a gate waits for approval before the instance stops "
        "`APPROVAL_EXPIRED`: ISO 8601 or seconds. Null: it waits until approved or stopped.",
        examples=["P3D"],
    )
    approval_reminder: Duration | list[Duration] | None = Field(
        default=None,
        description="When to remind reviewers, before a gate's expiry: one duration or a list "
        f"(at most {MAX_REMINDERS}; ISO-8601 or seconds, each more than 0 and less than "
        "`approvalTimeout`, which it needs). Each sends the webhook's `approval.reminder`.",
        examples=[["P1D", "P2D"]],
    )
    webhook: WebhookBody | None = Field(
        default=None,
        description="Where to POST a signed notice when a gate opens; null for none.",
    )
    send_window: SendWindowBody | None = Field(
        default=None,
        description="Deliver only inside this window; an approval outside it is accepted and "
        "the message waits for the window (`workflowStatus` `pending`).",
    )
    from_: str | None = Field(
        default=None,
        alias="from",
        max_length=320,
        description="The sending mailbox, `Name <address>` or an address: the deployment's "
        "sender or one of its configured mailboxes (`CAMPAIGN_ENGINE_MAILBOXES`) that the "
        "campaign's account group may send from, whose daily cap and spacing apply (another "
        "group's mailbox is a 400 on `from`). Default: the deployment's shared sender.",
        examples=[None, "Ada Lovelace <ada@sales.example.com>"],
    )
    stop_on_reply: Literal["lead", "domain"] = Field(
        default="lead",
        description="Whose reply stops an instance of this campaign: `lead` (the lead's own, "
        "matched by thread or address; every campaign stops on it) or `domain` (also a reply "
        "from anyone at the lead's company domain, as HubSpot and Apollo offer; free-mail "
        "domains such as gmail.com never count as a company).",
        examples=["lead"],
    )
    out_of_office_hold: Duration | None = Field(
        default=None,
        description="Hold deliveries while the lead is out of office, as Apollo does: an "
        "automatic answer that gives a return date holds the lead's next delivery (and any "
        "after it) until 00:00 UTC of that date, at most this long after the answer arrived "
        "(ISO-8601 duration or seconds, 1 hour to 60 days; `P14D` is a good start). The "
        "delivery reads `scheduled`, `deferredBecause` `out_of_office`; gates stay approvable "
        "and a reply still stops at once. The newest answer's date decides. An answer without "
        "a return date holds nothing. Null (the default): answers are recorded only, as "
        "HubSpot does.",
        examples=["P14D"],
    )

    @field_validator("approval_reminder", mode="before")
    @classmethod
    def _reminders_are_durations(cls, reminder: object, info: ValidationInfo) -> object:
        # Parsed here rather than by the union, so an error names `approvalReminder` (with the
        # index of a list item in its message) and not the union's branches.
        if reminder is None:
            return None
        if isinstance(reminder, list):
            parsed: list[timedelta] = []
            for index, each in enumerate(reminder):
                try:
                    parsed.append(validate_duration(each, info))
                except ValueError as error:
                    raise ValueError(f"item {index}: {error}") from error
            return parsed
        return validate_duration(reminder, info)

    @property
    def reminders(self) -> list[timedelta]:
        """`approval_reminder` as a list (empty when unset)."""
        if self.approval_reminder is None:
            return []
        if isinstance(self.approval_reminder, list):
            return list(self.approval_reminder)
        return [self.approval_reminder]

    @field_validator("approval_reminder")
    @classmethod
    def _reminders_before_expiry(
        cls, reminder: timedelta | list[timedelta] | None, info: ValidationInfo
    ) -> timedelta | list[timedelta] | None:
        reminders = reminder if isinstance(reminder, list) else [reminder] if reminder else []
        if len(reminders) > MAX_REMINDERS:
            raise ValueError(f"at most {MAX_REMINDERS} reminders")
        timeout = info.data.get("approval_timeout")
        if not reminders:
            return reminder
        if timeout is None:
            raise ValueError("reminders come before a gate's expiry: set approvalTimeout")
        for each in reminders:
            if not timedelta(0) < each < timeout:
                raise ValueError("each must be more than 0 seconds and less than approvalTimeout")
        return reminder

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

    @field_validator("out_of_office_hold", mode="before")
    @classmethod
    def _hold_not_a_boolean(cls, hold: object) -> object:
        return _not_a_boolean(hold)

    @field_validator("out_of_office_hold")
    @classmethod
    def _hold_in_range(cls, hold: timedelta | None) -> timedelta | None:
        if hold is not None and not MIN_OUT_OF_OFFICE_HOLD <= hold <= MAX_OUT_OF_OFFICE_HOLD:
            raise ValueError("must be between 1 hour and 60 days")
        return hold

    @field_validator("approval_timeout")
    @classmethod
    def _timeout_in_range(cls, timeout: timedelta | None) -> timedelta | None:
        if timeout is not None and not timedelta(0) < timeout <= MAX_DELAY:
            raise ValueError("must be more than 0 seconds and at most 365 days")
        return timeout

    @model_validator(mode="before")
    @classmethod
    def _read_only_fields_ignored(cls, data: object) -> object:
        # What a GET returns can be PUT back as it is (GET, edit, PUT): the fields the server
        # owns (ids, times, pause state: `Campaign`) are ignored here, never stored.
        if cls is CampaignBody and isinstance(data, dict):
            return {key: value for key, value in data.items() if key not in READ_ONLY_FIELDS}
        return data

    @model_validator(mode="after")
    def _unique_step_ids(self) -> Self:
        ids = [step.id for step in self.steps]
        if len(set(ids)) != len(ids):
            raise ValueError("step ids must be unique within the campaign")
        return self


READ_ONLY_FIELDS = frozenset(
    {
        name
        for field in ("account_group_id", "campaign_id", "created_at", "updated_at", "paused")
        for name in (field, to_camel(field))
    }
    | {"paused_at", "pausedAt", "paused_by", "pausedBy"}
)
"""The fields of a `Campaign` that a PUT body may carry (a GET's data sent back) and that are
ignored there: the server sets them."""


class Campaign(CampaignBody):
    """A stored campaign, as `PUT` and `GET …/campaigns/{campaignId}` return it: the definition
    as accepted, its ids, and when it was created and last replaced (UTC); the webhook without
    its secret."""

    webhook: Webhook | None = Field(  # type: ignore[assignment]
        default=None, description="The webhook's URL (its secret is never returned)."
    )
    account_group_id: str = Field(
        description="The account group it belongs to.", examples=[EXAMPLE_ID]
    )
    campaign_id: str = Field(description="The campaign's id.", examples=[EXAMPLE_ID])
    created_at: datetime = Field(
        description="When it was first PUT (UTC).", examples=[EXAMPLE_TIME]
    )
    updated_at: datetime = Field(
        description="When it was last PUT, paused or resumed (UTC).", examples=[EXAMPLE_TIME]
    )
    paused: bool = Field(
        default=False,
        description="Paused (`POST …/pause`): gates stay approvable, nothing is sent until "
        "`POST …/resume`.",
        examples=[False],
    )
    paused_at: datetime | None = Field(
        default=None,
        description="When it was paused (UTC); null when running.",
        examples=[None, EXAMPLE_TIME],
    )
    paused_by: str | None = Field(
        default=None,
        description="The API key id that paused it; null when running.",
        examples=[None, EXAMPLE_KEY_ID],
    )


class CampaignSuccessResponse(SuccessResponse):
    """A 201 (created) or 200 (replaced) from `PUT …/campaigns/{campaignId}`, or a 200 from its
    `GET`."""

    data: Campaign = Field(description="The campaign as stored.")


# --- workflow instances -------------------------------------------------------------------------


class LeadBody(ApiModel):
    """A lead as enrolled: its id, address and the names templates read. Addresses and names
    are checked here, so nothing that reaches a message header later can carry structure (the
    rules: `campaign_engine/addresses.py`)."""

    id: str = Field(
        pattern=OBJECT_ID_PATTERN,
        description="The lead's id in your system: 24 lowercase hex digits. With the campaign "
        "it decides the instance id, so a lead is enrolled in a campaign once.",
        examples=[EXAMPLE_ID],
    )
    email: str = Field(
        max_length=MAX_EMAIL_CHARS,
        json_schema_extra={"format": "email"},
        description="An address as email-validator accepts it: ASCII or UTF-8 local part "
        "(sent with SMTPUTF8), internationalised domains (sent as IDNA A-labels); no quoted "
        "local part, IP literal, display name, control character or `=?`. Stored normalised "
        "(NFC local part, lower-case Unicode domain).",
        examples=["grace@example.com"],
    )
    first_name: str = Field(
        default="",
        max_length=200,
        description=f"`{{{{ lead.firstName }}}}` in templates. {NAME_DESCRIPTION}",
        examples=["Grace"],
    )
    last_name: str = Field(
        default="",
        max_length=200,
        description=f"`{{{{ lead.lastName }}}}` in templates. {NAME_DESCRIPTION}",
        examples=["Hopper"],
    )
    company: str = Field(
        default="",
        max_length=200,
        description=f"`{{{{ lead.company }}}}` in templates. {NAME_DESCRIPTION}",
        examples=["Acme GmbH"],
    )
    time_zone: str | None = Field(
        default=None,
        max_length=64,
        description="The lead's IANA time zone, e.g. `Europe/Berlin`: the campaign's send "
        "window is read in it.",
        examples=["Europe/Berlin"],
    )

    @field_validator("time_zone")
    @classmethod
    def _a_zone(cls, time_zone: str | None, info: ValidationInfo) -> str | None:
        return _canonical_zone(time_zone, "lead.timeZone", info)

    def to_lead(self) -> workflow.Lead:
        """The lead as the workflow takes it (`workflows.types.Lead`), its fields as checked."""
        return workflow.Lead(
            id=self.id,
            email=self.email,
            first_name=self.first_name,
            last_name=self.last_name,
            company=self.company,
            time_zone=self.time_zone,
        )

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
    """The body of `POST …/workflow-instances`: the lead to enrol."""

    lead: LeadBody = Field(description="The lead to enrol.")


class LeadStatus(ApiModel):
    """Where a lead's instance stands: the `leadStatus` of the reference page's approve
    response, also returned by enrolment and by `GET …/workflow-instances/{workflowInstanceId}`."""

    lead_id: str = Field(description="The lead's id, as enrolled.", examples=[EXAMPLE_ID])
    workflow_status: workflow.WorkflowStatus = Field(
        description="`running` (drafting or delivering a step), `pending` (waiting at a gate, "
        "for a delay or for the send window), `completed` (every step delivered), `stopped` "
        "(`workflowStopReason` says why), `failed` (a draft or a delivery failed for good).",
        examples=["pending"],
    )
    workflow_instance_id: str = Field(
        description="The instance's id: the path's `workflowInstanceId`.", examples=[EXAMPLE_ID]
    )
    latest_step: str | None = Field(
        description="The id of the step the instance is at (drafting, at its gate, delivering "
        "or in its delay); null before the first step begins.",
        examples=["intro"],
    )
    workflow_stop_reason: workflow.StopReason | None = Field(
        description="Why the instance stopped or failed; null while it runs or after it completed.",
        examples=[None, "LEAD_REPLIED"],
    )
    has_pending_approval: bool = Field(
        description="True while content waits at an open gate for `POST …/approve`.",
        examples=[True],
    )

    @classmethod
    def of(cls, status: workflow.LeadStatus) -> LeadStatus:
        """The workflow's `lead_status` query result as callers see it: these six fields only
        (the pending content travels as `PendingContent`; the audit stays with Temporal)."""
        return cls(
            lead_id=status.lead_id,
            workflow_status=status.workflow_status,
            workflow_instance_id=status.workflow_instance_id,
            latest_step=status.latest_step,
            workflow_stop_reason=status.workflow_stop_reason,
            has_pending_approval=status.has_pending_approval,
        )


GATE_ID_DESCRIPTION = (
    "The open gate's opaque id: new for each gate, kept while the same gate waits. The instance "
    'GET sends it as a strong `ETag: "<gateId>"` (RFC 9110 §8.8.3); send that back as '
    "`If-Match` to approve only this gate."
)


class PendingContent(ApiModel):
    """The content waiting at an open gate: its step, and the subject and body as they will be
    sent."""

    step_id: str = Field(description="The step the content is for.", examples=["intro"])
    subject: str = Field(
        description="The subject as it will be sent, rendered for this lead.",
        examples=["Quick question, Grace"],
    )
    body: str = Field(
        description="The body as it will be sent, rendered for this lead.",
        examples=["Hi Grace,\n\nDoes Acme GmbH still hire in Berlin?"],
    )
    gate_id: str | None = Field(
        default=None, description=GATE_ID_DESCRIPTION, examples=[EXAMPLE_GATE_ID]
    )

    @classmethod
    def of(
        cls, content: workflow.DraftedContent | None, gate_id: str | None = None
    ) -> PendingContent | None:
        """None when no content waits at a gate; `gate_id` is the open gate's."""
        if content is None:
            return None
        return cls(
            step_id=content.step_id, subject=content.subject, body=content.body, gate_id=gate_id
        )


class Approval(ApiModel):
    """One gate decision of the audit record, in the order they were made."""

    step_id: str = Field(description="The step whose gate was decided.", examples=["intro"])
    gate_id: str | None = Field(
        description="The gate's id; null for decisions made before gates had ids.",
        examples=[EXAMPLE_GATE_ID],
    )
    decision: workflow.Decision = Field(
        description="`approved`, `discarded` or `expired`.", examples=["approved"]
    )
    decided_by: str = Field(
        description="The approving API key's id (never the key), the operator's name, or "
        "`system` for an expiry.",
        examples=[EXAMPLE_KEY_ID],
    )
    decided_at: datetime = Field(description="When (UTC).", examples=[EXAMPLE_TIME])

    @classmethod
    def of(cls, decision: workflow.GateDecision) -> Approval:
        """The API form of one recorded gate decision."""
        return cls(
            step_id=decision.step_id,
            gate_id=decision.gate_id,
            decision=decision.decision,
            decided_by=decision.decided_by,
            decided_at=decision.decided_at,
        )


class Enrolment(ApiModel):
    """The `data` of a 201 from `POST …/workflow-instances`: the new instance's id and status."""

    workflow_instance_id: str = Field(
        description="The new instance's id: the `workflowInstanceId` of its GET and approve "
        "paths (not the lead's id).",
        examples=[EXAMPLE_ID],
    )
    lead_status: LeadStatus = Field(description="The instance's status just after its start.")


class EnrolmentSuccessResponse(SuccessResponse):
    """A 201 from `POST …/workflow-instances`."""

    data: Enrolment = Field(description="The new instance.")


MAX_BATCH_LEADS = 1000
"""The most leads one `POST …/workflow-instances/batch` enrols."""


class EnrolmentBatchBody(ApiModel):
    """The body of `POST …/workflow-instances/batch`: up to 1,000 leads, each as the `lead` of
    `POST …/workflow-instances` (`LeadBody`). Each row is checked on its own: a bad one is
    answered `invalid` and never fails the others."""

    leads: list[Any] = Field(
        min_length=1,
        max_length=MAX_BATCH_LEADS,
        description="1 to 1,000 leads, each a `LeadBody` (`id`, `email`, `firstName`, "
        "`lastName`, `company`, `timeZone`). Rows are not checked against the schema as a "
        "whole: a row that is not a valid `LeadBody` is answered `invalid`, never a 400.",
        examples=[
            [
                {"id": EXAMPLE_ID, "email": "grace@example.com", "firstName": "Grace"},
                {"id": "507f191e810c19729de860ea", "email": "alan@example.org"},
            ]
        ],
    )

    @model_validator(mode="before")
    @classmethod
    def _an_object_not_a_list(cls, data: Any) -> Any:
        # The likeliest mistake is posting the rows themselves: say how to wrap them.
        if isinstance(data, list):
            raise ValueError(
                'the body is an object {"leads": [...]}, not a bare list: wrap the rows in it'
            )
        return data


class EnrolmentBatchRow(ApiModel):
    """What became of one row, in the order of the request."""

    index: int = Field(description="The row's position in `leads`, from 0.", examples=[0])
    lead_id: str | None = Field(
        description="The row's `id`; null when it has none readable.", examples=[EXAMPLE_ID]
    )
    outcome: Literal["enrolled", "already_enrolled", "suppressed", "invalid", "failed"] = Field(
        description="`enrolled` (its instance started now), `already_enrolled` (the lead has "
        "an instance in this campaign: a re-posted batch enrols nobody twice), `suppressed` "
        "(on the account group's suppression list; `reason` says why), `invalid` (`field` and "
        "`reason` say what to fix), `failed` (Temporal did not answer for this row: post it "
        "again).",
        examples=["enrolled"],
    )
    workflow_instance_id: str | None = Field(
        default=None,
        description="The instance (`enrolled`, `already_enrolled`).",
        examples=[EXAMPLE_ID],
    )
    field: str | None = Field(
        default=None, description="`invalid`: the field, e.g. `email`.", examples=[None, "email"]
    )
    reason: str | None = Field(
        default=None,
        description="`invalid`: what is wrong; `suppressed`: the suppression's source "
        "(`bounce`, `complaint`, `one-click`, `mailto`, `api`); `failed`: the error code.",
        examples=[None, "bounce"],
    )


class EnrolmentBatchCounts(ApiModel):
    """Rows per outcome."""

    enrolled: int = Field(default=0, description="Rows whose instance started now.", examples=[2])
    already_enrolled: int = Field(
        default=0, description="Rows whose lead had an instance already.", examples=[0]
    )
    suppressed: int = Field(
        default=0, description="Rows whose lead is on the suppression list.", examples=[0]
    )
    invalid: int = Field(default=0, description="Rows refused with a reason.", examples=[0])
    failed: int = Field(
        default=0, description="Rows Temporal did not answer for: post them again.", examples=[0]
    )


class EnrolmentBatch(ApiModel):
    """The `data` of a 200 from `POST …/workflow-instances/batch`."""

    results: list[EnrolmentBatchRow] = Field(description="One per row, in the request's order.")
    counts: EnrolmentBatchCounts = Field(description="How many rows had each outcome.")


class EnrolmentBatchSuccessResponse(SuccessResponse):
    """A 200 from `POST …/workflow-instances/batch`."""

    data: EnrolmentBatch = Field(description="One result per row, and counts.")


class Delivery(ApiModel):
    """The delivery of the current step while it is under way, or why it failed."""

    step_id: str | None = Field(
        description="The step whose message is being delivered.", examples=["intro"]
    )
    state: Literal["sending", "retrying", "failed", "scheduled"] = Field(
        description="`sending`: an attempt is running or about to; `retrying`: an attempt "
        "failed and the next waits its backoff; `failed`: given up (`DELIVERY_FAILED`); "
        "`scheduled`: approved, waiting for its send time (`deferredBecause`).",
        examples=["retrying"],
    )
    attempt: int | None = Field(
        description="The attempt running or due next (1 = the first); for `failed`, the last.",
        examples=[2],
    )
    maximum_attempts: int | None = Field(
        description="How many attempts are made before the delivery fails; null when unbounded.",
        examples=[10],
    )
    last_error: str | None = Field(
        description="What the previous (or last) attempt reported.",
        examples=["SMTP 451 4.7.1 try again later"],
    )
    next_attempt_at: datetime | None = Field(
        description="When a `retrying` delivery tries again, or a `scheduled` one is sent "
        "(null while the campaign is paused: on resume).",
        examples=[EXAMPLE_TIME],
    )
    deferred_because: workflow.Deferral | None = Field(
        default=None,
        description="Why a `scheduled` delivery waits: `outside_window`, `mailbox_cap`, "
        "`mailbox_spacing`, `campaign_paused`, `out_of_office` (the lead's automatic answer "
        "gave a return date and the campaign has `outOfOfficeHold`).",
        examples=[None, "outside_window"],
    )
    send_at_local: str | None = Field(
        default=None,
        description="A `scheduled` delivery's send time in the lead's window zone, e.g. "
        "`2026-12-01T09:00-05:00`.",
        examples=[None, "2026-12-01T09:00-05:00"],
    )

    @classmethod
    def of(cls, progress: DeliveryProgress | None) -> Delivery | None:
        """None when no delivery is under way and none failed."""
        if progress is None:
            return None
        return cls(
            step_id=progress.step_id,
            state=progress.state,
            attempt=progress.attempt,
            maximum_attempts=progress.maximum_attempts,
            last_error=progress.last_error,
            next_attempt_at=progress.next_attempt_at,
            deferred_because=progress.deferred_because,
            send_at_local=progress.send_at_local,
        )


class InboundMessage(ApiModel):
    """One inbound message matched to the instance's lead, as the instance recorded it."""

    inbound_message_id: str | None = Field(
        description="The message's id, as `POST …/inbound-messages` answered it; null when "
        "the signal carried none.",
        examples=["9b2f6c0d4e8a1f3b7c5d2e9a0b1c4d6f"],
    )
    classification: workflow.InboundKind = Field(
        description="What the message was classified as (the name `POST …/inbound-messages` "
        "answers with): `reply` (stops `LEAD_REPLIED`), `auto_reply` (recorded only), "
        "`hard_bounce` (stops `LEAD_BOUNCED`), `soft_bounce` (recorded), `complaint` (stops "
        "`LEAD_COMPLAINED`), `unsubscribe` (stops `LEAD_UNSUBSCRIBED`).",
        examples=["reply"],
    )
    received_at: datetime = Field(
        description="When it was received (UTC).", examples=[EXAMPLE_TIME]
    )
    excerpt: str | None = Field(
        default=None,
        description="A reply's new text, quoted history stripped, at most 400 characters.",
        examples=["Thanks, not interested."],
    )
    return_date: date | None = Field(
        default=None,
        description="An out-of-office answer's return day, when it gave one.",
        examples=[None, "2026-12-15"],
    )

    @classmethod
    def of(cls, record: workflow.InboundRecord) -> InboundMessage:
        """The API form of one recorded inbound message."""
        return cls(
            inbound_message_id=record.inbound_message_id or None,
            classification=record.kind,
            received_at=record.received_at,
            excerpt=record.excerpt or None,
            return_date=date.fromisoformat(record.return_date) if record.return_date else None,
        )


class LastDelivery(ApiModel):
    """The message an instance handed over last: which step, when, under which Message-ID."""

    step_id: str = Field(description="The step whose message it was.", examples=["intro"])
    message_id: str = Field(
        description="Its `Message-ID` header (the key that makes delivery at most once).",
        examples=[
            "<campaign.5f1d7a3b9c2e4f6a8b0c1d2e.6a0b1c2d3e4f5a6b7c8d9e0f.0123456789abcdef01234567"
            ".intro@campaign-engine>"
        ],
    )
    outcome: workflow.DeliveryOutcome = Field(
        description="`sent` (handed over), `already_sent` (an earlier attempt had handed it "
        "over), `in_doubt` (an attempt died while handing it over: not sent again, it may not "
        "have arrived).",
        examples=["sent"],
    )
    sent_at: datetime = Field(
        description="When the hand-over was recorded (UTC).",
        examples=["2026-12-01T09:00:02Z"],
    )

    @classmethod
    def of(cls, deliveries: list[workflow.DeliveryRecord]) -> LastDelivery | None:
        """The latest of an instance's delivery records; None before the first."""
        if not deliveries:
            return None
        last = deliveries[-1]
        return cls(
            step_id=last.step_id,
            message_id=last.message_id,
            outcome=last.outcome,
            sent_at=last.at,
        )


class NextStep(ApiModel):
    """The step an instance sends next, what it waits for and when it is due."""

    step_id: str = Field(description="The step sent next.", examples=["follow-up"])
    waiting_for: workflow.NextStepWait = Field(
        description="`delay` (the previous step's delay; drafted when it ends), `draft` (being "
        "drafted now), `approval` (its gate is open: `pendingContent`), `delivery` (being "
        "handed over now), `send_time` (approved, waiting for its send time: `delivery`).",
        examples=["delay"],
    )
    due_at: datetime | None = Field(
        description="When it moves on (UTC): the end of the delay, or the send time; null "
        "while it waits for a draft, a delivery or a reviewer, while a paused campaign holds "
        "it, or while a business-day delay's end is being worked out.",
        examples=["2026-12-03T09:00:02Z"],
    )

    @classmethod
    def of(cls, next_step: workflow.NextStep | None) -> NextStep | None:
        """None once the instance is closed or its last step is sent."""
        if next_step is None:
            return None
        return cls(
            step_id=next_step.step_id,
            waiting_for=next_step.waiting_for,
            due_at=next_step.due_at,
        )


class InstanceFailure(ApiModel):
    """Why an instance failed (`workflowStatus` `failed`): the step, and what its last attempt
    reported."""

    step_id: str = Field(description="The step that failed.", examples=["intro"])
    error_type: str | None = Field(
        description="The failure's kind, e.g. `TemplateRenderError` (`DRAFT_FAILED`: a "
        "template does not render for this lead) or `PermanentDeliveryError`.",
        examples=["TemplateRenderError"],
    )
    message: str = Field(
        description="What went wrong and, for a template, the names there are and the likely one.",
        examples=[
            "step intro: unknown field `lead.first_name`: did you mean `lead.firstName`? The "
            "fields of `lead` are `id`, `email`, `firstName`, `lastName` and `company`."
        ],
    )
    attempt: int | None = Field(
        description="The attempt that failed last (1 = the first), when known.", examples=[1]
    )

    @classmethod
    def of(cls, failure: workflow.FailureRecord | None) -> InstanceFailure | None:
        """None unless the instance failed."""
        if failure is None:
            return None
        return cls(
            step_id=failure.step_id,
            error_type=failure.error_type,
            message=failure.message,
            attempt=failure.attempt,
        )


class WorkflowInstance(ApiModel):
    """The `data` of a 200 from `GET …/workflow-instances/{workflowInstanceId}`: the lead
    status, the content waiting for approval (null when no gate is open) and the delivery in
    progress."""

    lead_status: LeadStatus = Field(description="Where the instance stands.")
    pending_content: PendingContent | None = Field(
        description="The content waiting at the open gate; null when no gate is open."
    )
    approvals: list[Approval] = Field(
        default_factory=list, description="Each gate decision so far, oldest first."
    )
    delivery: Delivery | None = Field(
        default=None,
        description="Present while a delivery is under way or after it failed: attempts, "
        "last error, next attempt.",
    )
    inbound_messages: list[InboundMessage] = Field(
        default_factory=list,
        description="Replies, automatic answers, bounces and complaints matched to this lead, "
        "oldest first (the latest few).",
    )
    last_delivery: LastDelivery | None = Field(
        default=None,
        description="The message handed over last (step, Message-ID, when); null before the first.",
        examples=[
            {
                "stepId": "intro",
                "messageId": "<campaign.5f1d7a3b9c2e4f6a8b0c1d2e.6a0b1c2d3e4f5a6b7c8d9e0f."
                "0123456789abcdef01234567.intro@campaign-engine>",
                "outcome": "sent",
                "sentAt": "2026-12-01T09:00:02Z",
            }
        ],
    )
    next_step: NextStep | None = Field(
        default=None,
        description="The step sent next, what it waits for and when it is due; null once the "
        "instance is closed or its last step is sent.",
        examples=[{"stepId": "follow-up", "waitingFor": "delay", "dueAt": "2026-12-03T09:00:02Z"}],
    )
    failure: InstanceFailure | None = Field(
        default=None,
        description="Why the instance failed (`DRAFT_FAILED`, `DELIVERY_FAILED`); null unless "
        "it did.",
        examples=[None],
    )


class WorkflowInstanceSuccessResponse(SuccessResponse):
    """A 200 from `GET …/workflow-instances/{workflowInstanceId}`."""

    data: WorkflowInstance = Field(description="The instance's state.")


class CampaignApprovalResult(ApiModel):
    """The `data` of a 200 from `POST …/approve` (reference page schema
    `CampaignApprovalResultSuccessResponse`): `action` is always `approved`, with the
    instance's lead status as the approval left it."""

    action: Literal["approved"] = Field(
        default="approved", description="Always `approved`.", examples=["approved"]
    )
    workflow_instance_id: str = Field(
        description="The instance whose gate was approved.", examples=[EXAMPLE_ID]
    )
    lead_status: LeadStatus = Field(description="The instance's status as the approval left it.")


class CampaignApprovalResultSuccessResponse(SuccessResponse):
    """A 200 from `POST …/approve` (reference page schema
    `CampaignApprovalResultSuccessResponse`)."""

    data: CampaignApprovalResult = Field(description="What the approval did.")


class ReviewQueueItem(ApiModel):
    """An instance as Temporal's visibility store indexes it (ids, states and times only)."""

    workflow_instance_id: str = Field(
        description="The instance's id (its GET and approve paths).", examples=[EXAMPLE_ID]
    )
    lead_id: str | None = Field(
        description="The lead's id; null for an instance indexed without it.",
        examples=[EXAMPLE_ID],
    )
    workflow_status: workflow.WorkflowStatus | None = Field(
        description="As the instance GET's `workflowStatus`; null before it was indexed.",
        examples=["pending"],
    )
    latest_step: str | None = Field(description="The step of the latest gate.", examples=["intro"])
    has_pending_approval: bool = Field(
        description="True while a gate waits for approval.", examples=[True]
    )
    gate_id: str | None = Field(
        description="The latest gate's id (the instance's ETag while `hasPendingApproval`).",
        examples=[EXAMPLE_GATE_ID],
    )
    gate_opened_at: datetime | None = Field(
        description="When the latest gate opened (UTC): the queue's order, newest first.",
        examples=[EXAMPLE_TIME],
    )
    gate_expires_at: datetime | None = Field(
        description="When the latest gate expires (UTC); null without `approvalTimeout`.",
        examples=["2026-12-04T14:00:00Z"],
    )


class ReviewQueue(ApiModel):
    """The `data` of a 200 from `GET …/workflow-instances`: one page of the review queue."""

    items: list[ReviewQueueItem] = Field(description="This page's instances, newest gate first.")
    next_page_token: str | None = Field(
        description="Opaque; pass as `pageToken` for the next page. Null on the last page.",
        examples=[EXAMPLE_PAGE_TOKEN],
    )


class ReviewQueueSuccessResponse(SuccessResponse):
    """A 200 from `GET …/workflow-instances` (the review queue)."""

    data: ReviewQueue = Field(description="One page of the review queue.")


# --- health -------------------------------------------------------------------------------------


class Health(ApiModel):
    """The `data` of a 200 from `GET /healthz`: the process is up and serving."""

    status: Literal["ok"] = Field(default="ok", description="Always `ok`.", examples=["ok"])


class HealthSuccessResponse(SuccessResponse):
    """A 200 from `GET /healthz`."""

    data: Health = Field(description="The process is up.")


class Readiness(Health):
    """The `data` of a 200 from `GET /readyz`: every dependency answered (a 503 names the one
    that did not)."""

    checks: dict[str, Literal["ok"]] = Field(
        description="Each dependency checked: `temporal`, `store`.",
        examples=[{"temporal": "ok", "store": "ok"}],
    )


class ReadinessSuccessResponse(SuccessResponse):
    """A 200 from `GET /readyz`."""

    data: Readiness = Field(description="Every dependency answered.")


class SuppressionBody(ApiModel):
    """A lead who unsubscribed through another channel (a reply, a phone call, a CRM)."""

    lead_id: str = Field(
        pattern=OBJECT_ID_PATTERN, description="The lead's id.", examples=[EXAMPLE_ID]
    )
    email: str | None = Field(
        default=None,
        max_length=MAX_EMAIL_CHARS,
        description="The lead's address, when known: only its keyed hash is stored, and it "
        "suppresses the address under any lead id of the account group.",
        examples=["grace@example.com"],
    )
    note: str = Field(
        default="",
        max_length=1000,
        description="Why, for the audit record.",
        examples=["Asked on the phone not to be contacted"],
    )

    @field_validator("email")
    @classmethod
    def _an_address(cls, email: str | None) -> str | None:
        if email is None:
            return None
        try:
            return parse_address(email).normalized
        except InvalidAddress as error:
            raise ValueError(f"not an address: {error}") from error

    @field_validator("note")
    @classmethod
    def _plain_note(cls, note: str) -> str:
        problem = text_problem(note)
        if problem:
            raise ValueError(problem)
        return note


class Suppression(ApiModel):
    """A suppression as stored: never the address, only whether one was given."""

    account_group_id: str = Field(
        description="The account group the lead is suppressed in.", examples=[EXAMPLE_ID]
    )
    lead_id: str = Field(description="The suppressed lead.", examples=[EXAMPLE_ID])
    has_email: bool = Field(
        description="Whether an address was given (only its keyed hash is stored).",
        examples=[True],
    )
    source: str = Field(
        description="How the lead came to be suppressed: `api`, `one-click`, `mailto`, "
        "`bounce`, `complaint`.",
        examples=["api"],
    )
    decided_by: str = Field(
        description="Who suppressed it: the API key id, `inbound` (a bounce, complaint or "
        "unsubscribe mail) or `lead (one-click unsubscribe)`.",
        examples=[EXAMPLE_KEY_ID],
    )
    note: str = Field(
        description="Why, as given.", examples=["Asked on the phone not to be contacted"]
    )
    created_at: datetime = Field(
        description="When it was first suppressed (UTC).", examples=[EXAMPLE_TIME]
    )
    open_instances_signalled: int = Field(
        description="Open instances of the lead in the account group that were sent "
        "`lead_unsubscribed` by this request.",
        examples=[1],
    )


class SuppressionSuccessResponse(SuccessResponse):
    """A 201, or a 200 when suppressed already, from `POST …/suppressions`."""

    data: Suppression = Field(description="The suppression as stored.")


# --- inbound mail -------------------------------------------------------------------------------


class InboundMatch(ApiModel):
    """The instance an inbound message was matched to, and by what."""

    campaign_id: str = Field(description="The instance's campaign.", examples=[EXAMPLE_ID])
    workflow_instance_id: str = Field(description="The instance.", examples=[EXAMPLE_ID])
    lead_id: str = Field(description="The instance's lead.", examples=[EXAMPLE_ID])
    step_id: str | None = Field(
        description="The step whose message it answers; null when matched by address alone.",
        examples=["intro"],
    )
    matched_by: str = Field(
        description="`unsubscribe_token`, `verp`, `returned_message_id`, `in_reply_to`, "
        "`references`, `from_address` or `recipient_address`.",
        examples=["in_reply_to"],
    )


class InboundEvidence(ApiModel):
    """What decided the classification; never an address."""

    rule: str = Field(
        description="The rule's stable name, e.g. `dsn_permanent_failure`.",
        examples=["dsn_permanent_failure"],
    )
    source: str = Field(
        description="The standard or library the rule follows.", examples=["RFC 3464"]
    )
    header: str | None = Field(
        default=None,
        description="The header the rule read, when one decided.",
        examples=[None, "Auto-Submitted"],
    )
    action: str | None = Field(default=None, description="A DSN's `Action`.", examples=["failed"])
    status: str | None = Field(
        default=None, description="A DSN's `Status` (RFC 3463).", examples=["5.1.1"]
    )
    diagnostic_code: str | None = Field(
        default=None,
        description="A DSN's `Diagnostic-Code`: the receiving server's own words.",
        examples=["smtp; 550 5.1.1 user unknown"],
    )
    feedback_type: str | None = Field(
        default=None, description="An ARF `Feedback-Type`.", examples=[None, "abuse"]
    )


class InboundMessageOutcome(ApiModel):
    """The `data` of a 202 from `POST …/inbound-messages`: what the message is and what was done.
    The same message posted again answers the same and applies nothing twice."""

    inbound_message_id: str = Field(
        description="32 hex characters: SHA-256 of the message's Message-ID and sender (of its "
        "bytes when it has no Message-ID).",
        examples=["9b2f6c0d4e8a1f3b7c5d2e9a0b1c4d6f"],
    )
    classification: Literal[
        "reply", "auto_reply", "hard_bounce", "soft_bounce", "complaint", "unsubscribe", "unknown"
    ] = Field(
        description="What the message is: `reply`, `auto_reply` (out of office and the like), "
        "`hard_bounce`, `soft_bounce`, `complaint` (an ARF feedback report), `unsubscribe`, or "
        "`unknown` (read receipts and the like).",
        examples=["hard_bounce"],
    )
    matched: InboundMatch | None = Field(description="Null when it matched no instance.")
    no_match: Literal["unknown_classification", "no_reference", "ambiguous"] | None = Field(
        default=None,
        description="Why nothing matched (null when something did): `unknown_classification` "
        "(read receipts and the like concern no lead), `no_reference` (nothing in it names a "
        "message we sent or a lead of this account group), `ambiguous` (the address is a lead "
        "of several account groups on this mailbox).",
        examples=[None, "no_reference"],
    )
    action: Literal["none", "recorded", "stopped", "suppressed", "unsubscribed"] = Field(
        description="`stopped` (a reply: the lead's running instances stop), `suppressed` (a "
        "hard bounce or complaint: the address is suppressed, the instances stop), "
        "`unsubscribed`, `recorded` (an automatic answer or soft bounce: recorded, no stop), "
        "`none` (matched nothing, or `unknown`).",
        examples=["suppressed"],
    )
    evidence: InboundEvidence = Field(description="What decided the classification.")
    instances_signalled: int = Field(
        description="How many running instances this request applied the message to: the "
        "lead's in every campaign of the group, and with a campaign's `stopOnReply: domain` "
        "its colleagues' too (`matched` names the first). The same message posted again "
        "answers the same: it was applied then, never twice.",
        examples=[1],
    )


class InboundMessageOutcomeSuccessResponse(SuccessResponse):
    """A 202 from `POST …/inbound-messages`."""

    data: InboundMessageOutcome = Field(description="What the message is and what was done.")


# --- campaign stats -----------------------------------------------------------------------------


class OutcomeCounts(ApiModel):
    """Leads per outcome, with rates over `sent` (null before anything was sent)."""

    sent: int = Field(
        description="Leads the message (for a step) or any message went to.", examples=[200]
    )
    replied: int = Field(description="Leads who replied.", examples=[14])
    auto_replied: int = Field(
        description="Leads whose mailbox answered automatically (out of office and the like).",
        examples=[9],
    )
    refused: int = Field(
        description="Leads whose address the receiving server refused at send time (SMTP 5xx "
        "to `RCPT TO`): never delivered, so not in `sent`, and counted in `bounced`.",
        examples=[2],
    )
    bounced: int = Field(
        description="Hard bounces: refused at send time, or a DSN came back.", examples=[4]
    )
    soft_bounced: int = Field(
        description="Leads a temporary failure notice (a soft bounce) came back for.",
        examples=[1],
    )
    complained: int = Field(
        description="Leads who marked a message as spam (a feedback-loop complaint).",
        examples=[0],
    )
    unsubscribed: int = Field(
        description="Through the one-click link or the `mailto:`.", examples=[3]
    )
    reply_rate: float | None = Field(
        description="`replied / sent`; null before anything was sent.", examples=[0.07]
    )
    bounce_rate: float | None = Field(
        description="`bounced / (sent + refused)`: over every lead a message was attempted to.",
        examples=[0.0198],
    )
    complaint_rate: float | None = Field(
        description="`complained / sent`; null before anything was sent.", examples=[0.0]
    )
    unsubscribe_rate: float | None = Field(
        description="`unsubscribed / sent`; null before anything was sent.", examples=[0.015]
    )

    @classmethod
    def of(cls, counts: stats.Counts) -> OutcomeCounts:
        """The API form of `campaign_engine.campaign_stats.Counts`."""
        n = counts.outcomes.get
        return cls(
            sent=counts.sent,
            refused=counts.refused,
            replied=n("reply", 0),
            auto_replied=n("auto_reply", 0),
            bounced=n("hard_bounce", 0),
            soft_bounced=n("soft_bounce", 0),
            complained=n("complaint", 0),
            unsubscribed=n("unsubscribe", 0),
            reply_rate=counts.rate("reply"),
            bounce_rate=counts.rate("hard_bounce"),
            complaint_rate=counts.rate("complaint"),
            unsubscribe_rate=counts.rate("unsubscribe"),
        )


class StepStats(OutcomeCounts):
    """One step's numbers: inbound events matched to that step's message (a reply matched by
    its sender's address alone counts in the campaign's total only)."""

    step_id: str = Field(description="The step these numbers are for.", examples=["intro"])


class CampaignStats(ApiModel):
    """The `data` of `GET …/campaigns/{campaignId}/stats`."""

    campaign_id: str = Field(description="The campaign.", examples=[EXAMPLE_ID])
    enrolled: int = Field(description="Leads ever enrolled in the campaign.", examples=[250])
    total: OutcomeCounts = Field(description="Each lead counted once per outcome.")
    steps: list[StepStats] = Field(description="In the campaign's step order.")


class CampaignStatsSuccessResponse(SuccessResponse):
    """A 200 from `GET …/campaigns/{campaignId}/stats`."""

    data: CampaignStats = Field(description="The campaign's numbers.")
