"""The activities of the campaign workflow, as methods of one class holding their clients."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import templates
from activities.outbox import FileOutbox
from workflows.types import (
    DELIVER_MESSAGE_ACTIVITY,
    DRAFT_CONTENT_ACTIVITY,
    ActivityErrorType,
    DeliveryReceipt,
    DeliveryRequest,
    DraftedContent,
    DraftRequest,
)


def message_id_for(workflow_id: str, step_id: str) -> str:
    """Deterministic per (instance, step): the key that makes delivery at most once.

    ':' is not allowed in a Message-ID's left part (RFC 5322 dot-atom), so the workflow id's
    separators become dots.
    """
    return f"<{workflow_id.replace(':', '.')}.{step_id}@campaign-engine>"


class CampaignActivities:
    def __init__(self, outbox: FileOutbox, sender: str) -> None:
        self._outbox = outbox
        self._sender = sender

    @activity.defn(name=DRAFT_CONTENT_ACTIVITY)
    async def draft_content(self, request: DraftRequest) -> DraftedContent:
        try:
            subject = templates.render(request.step.subject, request.lead)
            body = templates.render(request.step.body, request.lead)
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
        message_id = message_id_for(request.workflow_id, request.content.step_id)
        message = EmailMessage()
        message["Message-ID"] = message_id
        message["Date"] = formatdate(localtime=False)
        message["From"] = self._sender
        message["To"] = request.lead.email
        message["Subject"] = request.content.subject
        message.set_content(request.content.body)
        delivered = self._outbox.deliver(message_id, message)
        if not delivered:
            activity.logger.info("message %s already delivered; not sent again", message_id)
        return DeliveryReceipt(message_id=message_id, already_delivered=not delivered)
