"""Inbound mail over HTTP: what SendGrid's Inbound Parse (raw mode), Mailgun's MIME routes and
similar hooks post, one raw RFC 5322 message per request, for one account group."""

from __future__ import annotations

from email.message import Message

from fastapi import APIRouter, Request, status

from api.deps import InboundPipelineDep, InboundWriter
from api.errors import (
    InboundMessageRefused,
    PayloadTooLarge,
    TemporalUnavailable,
    UnsupportedMediaType,
)
from api.instances import temporal_errors
from api.metrics import count_inbound
from api.openapi import AUTHENTICATED, Raises, error_responses
from api.schemas import (
    InboundEvidence,
    InboundMatch,
    InboundMessageOutcome,
    InboundMessageOutcomeSuccessResponse,
)
from inbound.matching import Scope
from inbound.parsing import MessageRefused, RefusalReason
from inbound.pipeline import Outcome, Source

router = APIRouter(prefix="/v1/accounts/{accountGroupId}/inbound-messages", tags=["inbound mail"])

MEDIA_TYPES = ("message/rfc822", "message/global")
"""What the body may be declared as: a message (RFC 2046 §5.2.1), or one with UTF-8 headers
(RFC 6532 §3.7)."""
PATH_PATTERN = r"^/v1/accounts/[^/]+/inbound-messages$"
"""The route's path, for the body limit (`api.bodylimit`): its own limit, the setting's."""

_REQUEST_BODY = {
    "required": True,
    "content": {
        "message/rfc822": {
            "schema": {"type": "string", "format": "binary"},
            "example": "From: Grace <grace@example.com>\r\nTo: sales@acme.example\r\n"
            "In-Reply-To: <campaign.…@campaign-engine>\r\nSubject: Re: Hello\r\n\r\n"
            "Thanks, not interested.\r\n",
        }
    },
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Hand over one inbound message",
    response_description="What the message is, what it matched and what was done.",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses=error_responses(
        *AUTHENTICATED,
        Raises(
            InboundMessageRefused,
            "The body is no message the pipeline reads; `details` says why: `empty`, "
            "`not_a_message`, `headers_too_large`, `header_too_long`, `too_many_parts`, "
            "`too_deep`, `unparsable`.",
        ),
        Raises(
            PayloadTooLarge,
            "The message is larger than `CAMPAIGN_ENGINE_INBOUND_MAX_MESSAGE_BYTES` (25 MB at "
            "most).",
        ),
        Raises(
            TemporalUnavailable,
            "Temporal did not answer: nothing was recorded as processed; hand the same message "
            "over again.",
        ),
        Raises(
            UnsupportedMediaType,
            "The body is not declared `message/rfc822` or `message/global` (`details`: "
            "`message/rfc822`).",
        ),
    ),
)
async def post_inbound_message(
    request: Request,
    scope: InboundWriter,
    pipeline: InboundPipelineDep,
) -> InboundMessageOutcomeSuccessResponse:
    """Classifies one raw message (`Content-Type: message/rfc822`) and applies it to the
    account group's instances: a reply stops the lead's running instances
    (`LEAD_REPLIED`), a hard bounce or complaint suppresses the address and stops them
    (`LEAD_BOUNCED`, `LEAD_COMPLAINED`), an unsubscribe does what the one-click link does, an
    automatic answer or a soft bounce is recorded. Only this account group's instances are
    matched. `202` with what was decided; the same message posted again answers the same and
    applies nothing twice. What SendGrid's Inbound Parse (raw mode), Mailgun's MIME routes and
    similar hooks post."""
    content_type = request.headers.get("content-type", "")
    parsed = Message()
    parsed["content-type"] = content_type
    if not content_type or parsed.get_content_type() not in MEDIA_TYPES:
        raise UnsupportedMediaType(
            "Send the raw message with `Content-Type: message/rfc822` "
            f"(got `{content_type[:100] or 'none'}`)",
            details="message/rfc822",
        )
    raw = await request.body()
    limit = request.app.state.settings.inbound_max_message_bytes
    if len(raw) > limit:
        raise PayloadTooLarge(
            f"Inbound messages are accepted up to {limit} bytes "
            "(the limit is the setting CAMPAIGN_ENGINE_INBOUND_MAX_MESSAGE_BYTES)"
        )
    try:
        # An outage is a 502 to retry: nothing was logged as processed, so the same message
        # handed over again completes what this request began (the signals are idempotent).
        async with temporal_errors(
            "Could not signal the lead's workflow instances; hand the message over again."
        ):
            outcome = await pipeline.process(
                raw, Scope(account_group_id=scope.account_group_id), source=Source.HTTP
            )
    except MessageRefused as error:
        if error.reason == RefusalReason.TOO_LARGE:
            raise PayloadTooLarge(
                f"Inbound messages are accepted up to {limit} bytes "
                "(the limit is the setting CAMPAIGN_ENGINE_INBOUND_MAX_MESSAGE_BYTES)"
            ) from error
        raise InboundMessageRefused(
            f"Not a message the inbound pipeline reads: {error.detail}", error.reason.value
        ) from error
    if not outcome.duplicate:
        count_inbound(Source.HTTP.value, outcome)
    return InboundMessageOutcomeSuccessResponse(data=outcome_body(outcome))


def outcome_body(outcome: Outcome) -> InboundMessageOutcome:
    """The API form of a pipeline `Outcome`."""
    match = outcome.matched
    evidence = outcome.evidence
    return InboundMessageOutcome(
        inbound_message_id=outcome.inbound_message_id,
        classification=outcome.classification.value,
        matched=None
        if match is None
        else InboundMatch(
            campaign_id=match.campaign_id,
            workflow_instance_id=match.workflow_instance_id,
            lead_id=match.lead_id,
            step_id=match.step_id,
            matched_by=match.matched_by.value,
        ),
        no_match=outcome.no_match.value if outcome.no_match is not None else None,
        instances_signalled=outcome.instances_signalled,
        action=outcome.action.value,
        evidence=InboundEvidence(
            rule=evidence.rule,
            source=evidence.source,
            header=evidence.header,
            action=evidence.action,
            status=evidence.status,
            diagnostic_code=evidence.diagnostic_code,
            feedback_type=evidence.feedback_type,
        ),
    )
