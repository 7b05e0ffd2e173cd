"""The activities of the campaign workflow, as methods of one class holding their clients."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import formatdate

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import templates
from activities.mailers import Mailer, NotSent, Superseded
from campaign_engine.deliveries import Claim, DeliveryLedger
from campaign_engine.store import Store
from workflows.types import (
    DELIVER_MESSAGE_ACTIVITY,
    DRAFT_CONTENT_ACTIVITY,
    NOTIFY_PENDING_APPROVAL_ACTIVITY,
    ActivityErrorType,
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


def message_id_for(workflow_id: str, step_id: str) -> str:
    """Deterministic per (instance, step): the key that makes delivery at most once.

    ':' is not allowed in a Message-ID's left part (RFC 5322 dot-atom), so the workflow id's
    separators become dots.
    """
    return f"<{workflow_id.replace(':', '.')}.{step_id}@campaign-engine>"


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>`; the timestamp stops replays."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


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
    def __init__(
        self,
        *,
        store: Store,
        mailer: Mailer,
        sender: str,
        webhook_timeout_seconds: float = 10.0,
    ) -> None:
        self._store = store
        self._ledger = DeliveryLedger(store)
        self._mailer = mailer
        self._sender = sender
        self._webhook_timeout = webhook_timeout_seconds

    @activity.defn(name=DRAFT_CONTENT_ACTIVITY)
    async def draft_content(self, request: DraftRequest) -> DraftedContent:
        """Renders the step's subject and body for the lead, in the render pool (never on the
        worker's event loop), each within its budget and output limit.

        A template that does not render, or exceeds its budget for this lead (the PUT checked
        it for a lead at every field's longest, not for every content), raises a non-retryable
        `TemplateRenderError`: the instance fails with `DRAFT_FAILED` at once.
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
        # A line break in a header would let a lead's data inject headers.
        subject = " ".join(subject.split())
        return DraftedContent(step_id=request.step.id, subject=subject, body=body)

    @activity.defn(name=DELIVER_MESSAGE_ACTIVITY)
    async def deliver_message(self, request: DeliveryRequest) -> DeliveryReceipt:
        step_id = request.content.step_id
        message_id = message_id_for(request.workflow_id, step_id)
        claim = await self._ledger.claim(message_id, request.workflow_id, step_id)
        if claim == Claim.ALREADY_SENT:
            activity.logger.info("message %s already delivered; not sent again", message_id)
            return DeliveryReceipt(message_id=message_id, already_delivered=True)
        if claim == Claim.IN_DOUBT:
            activity.logger.warning(
                "an earlier attempt died while sending %s; not sending again (at most once)",
                message_id,
            )
            return DeliveryReceipt(message_id=message_id, already_delivered=True)
        try:
            async with _heartbeating():
                await self._mailer.send(
                    message_id,
                    self._compose(message_id, request),
                    lambda: self._ledger.hand_over(message_id),
                )
        except Superseded:
            activity.logger.warning(
                "another attempt is sending %s; this one stands down", message_id
            )
            return DeliveryReceipt(message_id=message_id, already_delivered=True)
        except NotSent as error:
            await self._ledger.release(message_id)
            if error.permanent:
                raise ApplicationError(
                    f"{request.lead.email}: {error}",
                    type=ActivityErrorType.PERMANENT_DELIVERY_ERROR.value,
                    non_retryable=True,
                ) from error
            raise
        await self._ledger.mark_sent(message_id)
        return DeliveryReceipt(message_id=message_id)

    def _compose(self, message_id: str, request: DeliveryRequest) -> EmailMessage:
        message = EmailMessage()
        message["Message-ID"] = message_id
        message["Date"] = formatdate(localtime=False)
        message["From"] = self._sender
        message["To"] = request.lead.email
        message["Subject"] = request.content.subject
        message.set_content(request.content.body)
        return message

    @activity.defn(name=NOTIFY_PENDING_APPROVAL_ACTIVITY)
    async def notify_pending_approval(self, notice: PendingApprovalNotice) -> None:
        record = await self._store.get_campaign(notice.account_group_id, notice.campaign_id)
        webhook = (record.definition.get("webhook") or {}) if record else {}
        secret = webhook.get("secret")
        if not secret:
            raise ApplicationError(
                "the campaign has no webhook secret any more",
                type=ActivityErrorType.PERMANENT_NOTIFICATION_ERROR.value,
                non_retryable=True,
            )
        body = json.dumps(
            {
                "event": "approval.pending",
                "accountGroupId": notice.account_group_id,
                "campaignId": notice.campaign_id,
                "workflowInstanceId": notice.workflow_instance_id,
                "leadId": notice.lead_id,
                "stepId": notice.step_id,
                "expiresAt": notice.expires_at.isoformat() if notice.expires_at else None,
            },
            separators=(",", ":"),
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: webhook_signature(secret, timestamp, body),
            # Stable across retries, so a receiver can drop duplicates.
            EVENT_ID_HEADER: f"{activity.info().workflow_id}:{notice.step_id}",
        }
        async with httpx.AsyncClient(timeout=self._webhook_timeout) as http:
            response = await http.post(notice.webhook_url, content=body, headers=headers)
        if response.is_success:
            return
        retryable = response.status_code >= 500 or response.status_code in (408, 429)
        raise ApplicationError(
            f"webhook answered {response.status_code}",
            type=None if retryable else ActivityErrorType.PERMANENT_NOTIFICATION_ERROR.value,
            non_retryable=not retryable,
        )
