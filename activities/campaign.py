"""The activities of the campaign workflow, as methods of one class holding their clients."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import egress, messages, templates
from activities.mailers import Mailer, NotSent, SmtpUtf8Unsupported, Superseded
from activities.messages import OutgoingMessage
from campaign_engine.addresses import InvalidAddress, parse_address, parse_mailbox
from campaign_engine.deliveries import Claim, DeliveryLedger
from campaign_engine.store import Store
from workflows.types import (
    DELIVER_MESSAGE_ACTIVITY,
    DRAFT_CONTENT_ACTIVITY,
    NOTIFY_PENDING_APPROVAL_ACTIVITY,
    ActivityErrorType,
    ApprovalEvent,
    DeliveryOutcome,
    DeliveryReceipt,
    DeliveryRequest,
    DraftedContent,
    DraftRequest,
    PendingApprovalNotice,
)

SIGNATURE_HEADER = "X-Campaign-Engine-Signature"
TIMESTAMP_HEADER = "X-Campaign-Engine-Timestamp"
EVENT_ID_HEADER = "X-Campaign-Engine-Event-Id"
HEARTBEAT_SECONDS = 2.0
"""How often the delivery activity heartbeats; also how soon a stop reaches it (the worker's
heartbeat throttle is set to this, see `worker.build_worker`)."""

T = TypeVar("T")


def message_id_for(workflow_id: str, step_id: str) -> str:
    """Deterministic per (instance, step): the key that makes delivery at most once.

    ':' is not allowed in a Message-ID's left part (RFC 5322 dot-atom), so the workflow id's
    separators become dots.
    """
    return f"<{workflow_id.replace(':', '.')}.{step_id}@campaign-engine>"


def event_id_for(workflow_id: str, notice: PendingApprovalNotice) -> str:
    """The webhook's `X-Campaign-Engine-Event-Id`: one per (instance, gate, event), the same on
    every retry. `{workflow id}:{gate id}:{event}` (a reminder adds its seconds before expiry);
    notices of gates recorded before gate ids keep the older `{workflow id}:{step id}`."""
    if notice.gate_id is None:
        return f"{workflow_id}:{notice.step_id}"
    event_id = f"{workflow_id}:{notice.gate_id}:{notice.event}"
    if notice.event == ApprovalEvent.REMINDER and notice.reminder_seconds is not None:
        event_id += f":{notice.reminder_seconds:g}"
    return event_id


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>`; the timestamp stops replays."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def _delivery_error(error: NotSent) -> ApplicationError:
    """The workflow's view of a send that certainly did not happen: retryable or not, typed."""
    if isinstance(error, SmtpUtf8Unsupported):
        error_type = ActivityErrorType.SMTPUTF8_UNSUPPORTED
    elif error.permanent:
        error_type = ActivityErrorType.PERMANENT_DELIVERY_ERROR
    else:
        error_type = ActivityErrorType.TRANSIENT_DELIVERY_ERROR
    return ApplicationError(
        str(error), activity.info().attempt, type=error_type.value, non_retryable=error.permanent
    )


async def _settled(task: asyncio.Future[Any]) -> None:
    """Waits until `task` is done, through any cancellation of the waiting task itself."""
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task})


async def _to_the_end(work: Awaitable[T]) -> T:
    """Runs `work` (a ledger write, a send past its hand-over) to its end even if the activity
    is cancelled meanwhile, and returns or raises what it did: a claim left behind would make the
    next attempt think the message may be out, and a message is never cancelled half-sent."""
    task = asyncio.ensure_future(work)
    await _settled(task)
    return task.result()


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeats while the body runs, so a worker that dies mid-send is noticed in seconds."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


class CampaignActivities:
    """The activities, sharing the store, the delivery ledger and the mailer.

    `sender` is the `From:` address (`Name <local@domain>` or a bare address); it is parsed here
    and raises `InvalidAddress` when it is not one (the settings refuse it earlier).
    """

    def __init__(
        self,
        *,
        store: Store,
        mailer: Mailer,
        sender: str,
        webhook_timeout_seconds: float = 10.0,
        webhook_allow_private_addresses: bool = False,
    ) -> None:
        self._store = store
        self._ledger = DeliveryLedger(store)
        self._mailer = mailer
        self._sender = parse_mailbox(sender)
        self._webhook_timeout = webhook_timeout_seconds
        self._webhook_allow_private = webhook_allow_private_addresses

    @activity.defn(name=DRAFT_CONTENT_ACTIVITY)
    async def draft_content(self, request: DraftRequest) -> DraftedContent:
        """Renders the step's subject and body for the lead, in the render pool (never on the
        worker's event loop), each within its budget and output limit.

        A template that does not render, or exceeds its budget for this lead (the PUT checked
        it for a lead at every field's longest, not for every content), raises a non-retryable
        `TemplateRenderError`: the instance fails with `DRAFT_FAILED` at once. The subject is
        made one line (`messages.single_line`) here, so the reviewer sees exactly the subject
        that will be sent.
        """
        try:
            # Side by side: even two renders killed at their hard timeout end well inside the
            # activity's 10 s, so the failure is the template's, not a timeout that is retried.
            subject, body = await asyncio.gather(
                templates.render_async(
                    request.step.subject, request.lead, limit=templates.MAX_SUBJECT_CHARS
                ),
                templates.render_async(
                    request.step.body, request.lead, limit=templates.MAX_BODY_CHARS
                ),
            )
        except templates.TemplateRenderError as error:
            raise ApplicationError(
                f"step {request.step.id}: {error}",
                type=ActivityErrorType.TEMPLATE_RENDER_ERROR.value,
                non_retryable=True,
            ) from error
        return DraftedContent(
            step_id=request.step.id,
            subject=messages.single_line(subject),
            body=messages.body_text(body),
        )

    @activity.defn(name=DELIVER_MESSAGE_ACTIVITY)
    async def deliver_message(self, request: DeliveryRequest) -> DeliveryReceipt:
        """Sends the drafted content to the lead, at most once per (instance, step).

        Failures are classified for the workflow's retry policy: `ApplicationError`s of the
        non-retryable `ActivityErrorType`s (invalid address, composition, SMTPUTF8 missing, SMTP
        5xx) end the instance at once; `TRANSIENT_DELIVERY_ERROR` (SMTP 4xx, unreachable) is
        retried. Each carries the attempt number as its only detail. Cancelled (a stop) before
        the hand-over, it sends nothing, releases its claim and ends cancelled; after it, it
        finishes the send first.
        """
        step_id = request.content.step_id
        message_id = message_id_for(request.workflow_id, step_id)
        # Composed before the claim: a message that cannot be built leaves no ledger row behind.
        outgoing = self._compose(message_id, request)
        # To its end even when cancelled meanwhile: a claim committed but unknown to this
        # attempt would stay `claimed` forever; `hand_over` refuses after a cancellation.
        claim = await _to_the_end(self._ledger.claim(message_id, request.workflow_id, step_id))
        if claim == Claim.ALREADY_SENT:
            activity.logger.info("message %s already delivered; not sent again", message_id)
            return DeliveryReceipt(message_id, DeliveryOutcome.ALREADY_SENT)
        if claim == Claim.IN_DOUBT:
            activity.logger.warning(
                "an earlier attempt died while sending %s; not sending again (at most once)",
                message_id,
            )
            return DeliveryReceipt(message_id, DeliveryOutcome.IN_DOUBT)
        try:
            async with _heartbeating():
                await self._send_unless_stopped(message_id, outgoing)
        except Superseded:
            activity.logger.warning(
                "another attempt is sending %s; this one stands down", message_id
            )
            return DeliveryReceipt(message_id, DeliveryOutcome.SUPERSEDED)
        except NotSent as error:
            await _to_the_end(self._ledger.release(message_id))
            raise _delivery_error(error) from error
        await _to_the_end(self._ledger.mark_sent(message_id))
        return DeliveryReceipt(message_id, DeliveryOutcome.SENT)

    async def _send_unless_stopped(self, message_id: str, outgoing: OutgoingMessage) -> None:
        """Sends in a task of its own, so that a cancellation (the workflow's stop, reaching
        this activity by heartbeat) can be told apart by where the send is: before the
        hand-over the send is abandoned and the claim released; after it, it runs to its end."""
        handing_over = False

        async def hand_over() -> bool:
            nonlocal handing_over
            if activity.is_cancelled():
                # The stop reached this attempt first: nothing has left, nothing will.
                raise asyncio.CancelledError
            # From here on the ledger may say `sending`: the send is no longer abandoned.
            handing_over = True
            return await self._ledger.hand_over(message_id)

        sending = asyncio.create_task(self._mailer.send(message_id, outgoing, hand_over))
        try:
            await asyncio.shield(sending)
        except asyncio.CancelledError:
            if handing_over:
                activity.logger.info("%s is being handed over: finishing it first", message_id)
                await _to_the_end(sending)
                return
            sending.cancel()
            await _settled(sending)
            await _to_the_end(self._ledger.release(message_id))
            activity.logger.info("stopped before %s was handed over; not sent", message_id)
            raise

    def _compose(self, message_id: str, request: DeliveryRequest) -> OutgoingMessage:
        attempt = activity.info().attempt
        try:
            recipient = parse_address(request.lead.email)
        except InvalidAddress as error:
            raise ApplicationError(
                f"the lead's address cannot be sent to: {error}",
                attempt,
                type=ActivityErrorType.INVALID_ADDRESS.value,
                non_retryable=True,
            ) from error
        try:
            return messages.compose(
                message_id=message_id,
                sender=self._sender,
                recipient=recipient,
                subject=request.content.subject,
                body=request.content.body,
            )
        except messages.CompositionError as error:
            raise ApplicationError(
                str(error),
                attempt,
                type=ActivityErrorType.COMPOSITION_ERROR.value,
                non_retryable=True,
            ) from error

    @activity.defn(name=NOTIFY_PENDING_APPROVAL_ACTIVITY)
    async def notify_pending_approval(self, notice: PendingApprovalNotice) -> None:
        """POSTs the campaign's webhook that a gate opened: ids only (`approval.pending`, no lead
        data), signed with the secret from the store (`webhook_signature`).

        Sends `X-Campaign-Engine-Timestamp` (Unix seconds), `X-Campaign-Engine-Signature` and an
        `X-Campaign-Engine-Event-Id` stable across retries, through `egress` (no private addresses
        unless allowed). A 2xx is done; 5xx, 408, 429 and network failures are retried; no secret
        any more, a refused destination or any other status raise a non-retryable
        `PermanentNotificationError`.
        """
        record = await self._store.get_campaign(notice.account_group_id, notice.campaign_id)
        webhook = (record.definition.get("webhook") or {}) if record else {}
        secret = webhook.get("secret")
        if not secret:
            raise ApplicationError(
                "the campaign has no webhook secret any more",
                type=ActivityErrorType.PERMANENT_NOTIFICATION_ERROR.value,
                non_retryable=True,
            )
        payload: dict[str, Any] = {
            "event": notice.event,
            "accountGroupId": notice.account_group_id,
            "campaignId": notice.campaign_id,
            "workflowInstanceId": notice.workflow_instance_id,
            "leadId": notice.lead_id,
            "stepId": notice.step_id,
            "expiresAt": notice.expires_at.isoformat() if notice.expires_at else None,
        }
        if notice.gate_id is not None:
            payload["gateId"] = notice.gate_id
        if notice.event == ApprovalEvent.REMINDER:
            payload["reminderSecondsBeforeExpiry"] = notice.reminder_seconds
        if notice.event == ApprovalEvent.RESOLVED:
            payload["resolution"] = notice.resolution
            payload["decidedBy"] = notice.decided_by
            payload["decidedAt"] = notice.decided_at.isoformat() if notice.decided_at else None
        body = json.dumps(payload, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: webhook_signature(secret, timestamp, body),
            # Stable across retries, so a receiver can drop duplicates.
            EVENT_ID_HEADER: event_id_for(activity.info().workflow_id or "", notice),
        }
        try:
            response = await egress.post(
                notice.webhook_url,
                content=body,
                headers=headers,
                timeout_seconds=self._webhook_timeout,
                allow_private=self._webhook_allow_private,
            )
        except egress.DestinationRefused as error:
            raise ApplicationError(
                f"webhook destination refused: {error}",
                type=ActivityErrorType.PERMANENT_NOTIFICATION_ERROR.value,
                non_retryable=True,
            ) from error
        if response.is_success:
            return
        retryable = response.status_code >= 500 or response.status_code in (408, 429)
        raise ApplicationError(
            f"webhook answered {response.status_code}",
            type=None if retryable else ActivityErrorType.PERMANENT_NOTIFICATION_ERROR.value,
            non_retryable=not retryable,
        )
