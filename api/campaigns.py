"""Campaigns between the store, the API's models and the workflow's snapshot, and their checks.

A campaign is checked once, at PUT: its webhook's destination (`check_webhook`, 400), a threaded
first step (`check_threads`, 400), its size against Temporal's payload limit
(`check_fits_temporal`, 413), then each template rendered for a lead with every field at its
longest (`check_templates_render`, 400 naming the field). The store keeps what was accepted;
reads and enrolments never render it again.
"""

from __future__ import annotations

from activities import egress, templates
from activities.messages import REPLY_PREFIX
from api.durations import STORED_CONTEXT
from api.error_handlers import validation_failed
from api.errors import CampaignTooLarge, RenderBudgetExceeded, RenderQueueFull, ValidationFailed
from api.payload_limits import PayloadBudgetExceeded, check_campaign_size
from api.schemas import (
    MAX_BODY_CHARS,
    MAX_STEPS,
    MAX_SUBJECT_CHARS,
    Campaign,
    CampaignBody,
)
from campaign_engine import send_windows
from campaign_engine.addresses import InvalidAddress
from campaign_engine.settings import Settings
from campaign_engine.store import CampaignRecord
from workflows.types import CampaignSnapshot, CampaignStep, SendWindow


def campaign_of(record: CampaignRecord) -> Campaign:
    """A stored campaign as the API returns it: the accepted definition, without the webhook's
    signing secret, with its ids and times."""
    webhook = record.definition.get("webhook")
    # Under `STORED_CONTEXT`: definitions stored before today's rules keep reading (a "P1Y"
    # pydantic wrote for 365 days, a zone stored as typed), shown in today's forms.
    return Campaign.model_validate(
        {
            **record.definition,
            # The signing secret stays in the store: never in a response.
            "webhook": {"url": webhook["url"]} if webhook else None,
            "accountGroupId": record.account_group_id,
            "campaignId": record.campaign_id,
            "createdAt": record.created_at,
            "updatedAt": record.updated_at,
            "paused": record.paused_at is not None,
            "pausedAt": record.paused_at,
            "pausedBy": record.paused_by,
        },
        context={STORED_CONTEXT: True},
    )


def thread_roots(campaign: CampaignBody) -> list[int | None]:
    """For each step, the index of the step whose thread it replies in: the latest earlier step
    that is not threaded; None for a step that is not threaded (it starts a thread), and for a
    threaded first step (which `check_threads` refuses)."""
    roots: list[int | None] = []
    root: int | None = None
    for index, step in enumerate(campaign.steps):
        if step.thread:
            roots.append(root)
        else:
            roots.append(None)
            root = index
    return roots


def snapshot_of(campaign: CampaignBody) -> CampaignSnapshot:
    """What an instance runs on: the campaign as the workflow's plain types (no secret).

    A threaded step gets its thread from here (`CampaignStep.thread_step_ids`: the steps from
    the thread's first to the one before it) and, as its `subject`, the subject template of the
    thread's first step, so the draft needs nothing but the step (no workflow change).
    """
    roots = thread_roots(campaign)
    steps: list[CampaignStep] = []
    for index, step in enumerate(campaign.steps):
        root = roots[index]
        subject = campaign.steps[root].subject if root is not None else step.subject
        steps.append(
            CampaignStep(
                id=step.id,
                subject=subject or "",
                body=step.body,
                requires_approval=step.requires_approval,
                delay_seconds=step.delay.total_seconds(),
                delay_business_days=step.business_days or 0,
                thread_step_ids=(
                    [earlier.id for earlier in campaign.steps[root:index]]
                    if root is not None
                    else []
                ),
            )
        )
    return CampaignSnapshot(
        name=campaign.name,
        steps=steps,
        approval_timeout_seconds=(
            campaign.approval_timeout.total_seconds() if campaign.approval_timeout else None
        ),
        webhook_url=str(campaign.webhook.url) if campaign.webhook else None,
        approval_reminder_seconds=[reminder.total_seconds() for reminder in campaign.reminders],
        send_window=(
            SendWindow(
                days=list(campaign.send_window.days),
                start=campaign.send_window.start,
                end=campaign.send_window.end,
                time_zone=campaign.send_window.time_zone,
                holidays=campaign.send_window.holidays,
            )
            if campaign.send_window
            else None
        ),
        mailbox=campaign.from_,
        out_of_office_hold_seconds=(
            campaign.out_of_office_hold.total_seconds() if campaign.out_of_office_hold else None
        ),
    )


def check_threads(campaign: CampaignBody) -> None:
    """Raises `ValidationFailed` (400, `steps.0.thread`) when the first step is threaded: there
    is no earlier message for it to reply to."""
    if campaign.steps[0].thread:
        raise ValidationFailed(
            "steps.0.thread: the first step cannot be threaded: there is no earlier message "
            "for it to reply to",
            details="steps.0.thread",
        )


def check_send_window(campaign: CampaignBody) -> None:
    """Raises `ValidationFailed` (400) naming the field (`sendWindow.timeZone`, `.days`,
    `.start`, `.end`, `.holidays`) for a window `campaign_engine.send_windows` cannot use: an
    unknown zone or holiday calendar, a day or time of another shape, an `end` not after
    `start`, a window that never opens."""
    window = campaign.send_window
    if window is None:
        return
    try:
        send_windows.parse_window(
            time_zone=window.time_zone,
            days=window.days,
            start=window.start,
            end=window.end,
            holidays=window.holidays,
        )
    except send_windows.InvalidWindow as error:
        raise ValidationFailed(f"{error.field}: {error}", details=error.field) from error


def check_sender(campaign: CampaignBody, settings: Settings, account_group_id: str) -> None:
    """Raises `ValidationFailed` (400, `from`) unless the campaign's `from` is an address we can
    send as, is the deployment's sender or one of its configured mailboxes (a From address is
    the deployment's identity: SPF, DKIM, the SMTP account), and `account_group_id` may send
    from it (`MailboxLimits.account_groups`: a mailbox and its daily cap are one tenant's).
    A campaign without `from` sends as the shared sender: refused the same way when the sender
    is listed in `CAMPAIGN_ENGINE_MAILBOXES` for other groups only."""
    try:
        address = settings.sending_address(campaign.from_)
    except InvalidAddress as error:
        raise ValidationFailed(f"from: not an address: {error}", details="from") from error
    groups = settings.sending_groups()
    if address not in groups:
        allowed = False
    else:
        owners = groups[address]
        allowed = owners is None or account_group_id in owners
    if not allowed:
        # The same words whether the address is another group's mailbox or nobody's: a caller
        # learns nothing about which addresses other tenants send from.
        raise ValidationFailed(
            f"from: {address} is not a mailbox this account group may send from (the "
            "deployment's sender or a CAMPAIGN_ENGINE_MAILBOXES entry naming the group)",
            details="from",
        )


def check_webhook(campaign: CampaignBody, settings: Settings) -> None:
    """Raises `ValidationFailed` (400, `webhook.url`) for a webhook URL that is, by its literal,
    a destination webhooks may not reach (`activities.egress`)."""
    if campaign.webhook is None:
        return
    try:
        egress.check_url(
            str(campaign.webhook.url), allow_private=settings.webhook_allow_private_addresses
        )
    except egress.DestinationRefused as error:
        raise ValidationFailed(
            f"webhook.url: not a destination webhooks may reach: {error}",
            details="webhook.url",
        ) from error


def check_fits_temporal(snapshot: CampaignSnapshot, settings: Settings) -> None:
    """Raises `CampaignTooLarge` (413) unless every instance of the campaign fits under
    Temporal's payload size limit (`api.payload_limits`)."""
    try:
        check_campaign_size(
            snapshot,
            limit_bytes=settings.temporal_blob_size_limit_bytes,
            max_steps=MAX_STEPS,
            max_subject_chars=MAX_SUBJECT_CHARS,
            max_body_chars=MAX_BODY_CHARS,
        )
    except PayloadBudgetExceeded as error:
        raise CampaignTooLarge(
            f"The campaign is too large: {error}. Shorten or remove steps.", details="steps"
        ) from error


async def check_templates_render(
    campaign: CampaignBody, account_group_id: str, settings: Settings
) -> None:
    """Renders every template once, for the worst-case lead, in the render pool, as renders of
    `account_group_id` (its fair share of the pool); raises the 400 that names each template
    that does not render within its budget, `RenderBudgetExceeded` (400) when they take more
    than `render_budget_seconds` together, `RenderQueueFull` (503, `Retry-After`) when the
    group's share of the render queue, or the process's, cannot take them now.

    A subject that a threaded step replies to must leave room for `Re: ` (at most
    `MAX_SUBJECT_CHARS` - 4 characters), so the reply's subject fits too; a threaded step has
    no subject of its own to check."""
    replied_to = {root for root in thread_roots(campaign) if root is not None}
    checks: list[templates.TemplateCheck] = []
    for index, step in enumerate(campaign.steps):
        if step.subject is not None:
            limit = MAX_SUBJECT_CHARS - (len(REPLY_PREFIX) if index in replied_to else 0)
            checks.append(templates.TemplateCheck(f"steps.{index}.subject", step.subject, limit))
        checks.append(templates.TemplateCheck(f"steps.{index}.body", step.body, MAX_BODY_CHARS))
    try:
        failures = await templates.check_templates(
            checks,
            budget_seconds=settings.render_budget_seconds,
            account_group=account_group_id,
            limits=templates.RenderQueueLimits(
                max_waiting=settings.render_queue_limit,
                max_waiting_per_group=settings.render_queue_limit_per_group,
            ),
        )
    except templates.RenderBudgetExceeded as error:
        raise RenderBudgetExceeded(error.spent_seconds, error.budget_seconds) from error
    except templates.RenderQueueFull as error:
        raise RenderQueueFull(
            str(error), scope=error.scope, retry_after_seconds=error.retry_after_seconds
        ) from error
    if failures:
        raise validation_failed(
            [
                {"loc": ("body", *field.split(".")), "msg": f"template does not render: {why}"}
                for field, why in failures.items()
            ]
        )
